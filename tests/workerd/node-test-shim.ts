/**
 * The part of `node:test` the project's tests use, for runtimes that have no `node:test`
 * (workerd with Node compatibility off). `scripts/test-workerd.mjs` aliases `node:test` to
 * this file. Registration only records tests; {@link runFile} runs them, so nothing random
 * or timed happens at module top level (workerd forbids that).
 *
 * Supported: `test`/`it` (with `.skip`, `.todo`, `.only`, options `{ skip, todo, timeout }`,
 * subtests through `t.test`, done-callback style), `describe`/`suite` (nested, with `.skip`),
 * `before`/`after`/`beforeEach`/`afterEach` at file or suite level.
 * @module
 */

/** What a test function may receive as its first argument. */
export interface TestContext {
  readonly name: string;
  readonly fullName: string;
  readonly signal: AbortSignal;
  skip(message?: string): void;
  todo(message?: string): void;
  diagnostic(message: string): void;
  test(name: string, optionsOrFn?: TestOptions | TestFn, fn?: TestFn): Promise<void>;
}

/** Options `test()` accepts. */
export interface TestOptions {
  skip?: boolean | string;
  todo?: boolean | string;
  only?: boolean;
  timeout?: number;
  concurrency?: number | boolean;
}

type TestFn = (t: TestContext, done?: (err?: unknown) => void) => unknown;
type HookFn = (t?: unknown) => unknown;

interface TestNode {
  kind: "test";
  name: string;
  options: TestOptions;
  fn?: TestFn;
}

interface SuiteNode {
  kind: "suite";
  name: string;
  options: TestOptions;
  children: (TestNode | SuiteNode)[];
  before: HookFn[];
  after: HookFn[];
  beforeEach: HookFn[];
  afterEach: HookFn[];
}

/** One test's outcome as the worker reports it. */
export interface TestResult {
  file: string;
  name: string;
  status: "passed" | "failed" | "skipped" | "todo";
  durationMs: number;
  message?: string;
  error?: { name: string; message: string; code?: string; stack?: string };
  diagnostics?: string[];
}

const DEFAULT_TIMEOUT_MS = 120_000;

function newSuite(name: string, options: TestOptions = {}): SuiteNode {
  return { kind: "suite", name, options, children: [], before: [], after: [], beforeEach: [], afterEach: [] };
}

let current: SuiteNode = newSuite("");
let pendingRegistrations: Promise<unknown>[] = [];

function parseArgs<F>(
  nameOrOptions: unknown,
  optionsOrFn?: unknown,
  maybeFn?: unknown,
): { name: string; options: TestOptions; fn?: F } {
  let name = "<anonymous>";
  let options: TestOptions = {};
  let fn: F | undefined;
  for (const arg of [nameOrOptions, optionsOrFn, maybeFn]) {
    if (typeof arg === "string") name = arg;
    else if (typeof arg === "function") {
      fn = arg as F;
      if (name === "<anonymous>" && arg.name) name = arg.name;
    } else if (arg && typeof arg === "object") options = arg as TestOptions;
  }
  return { name, options, fn };
}

/** `test`/`it` and their `.skip`, `.todo`, `.only`. */
export interface TestRegistrarFn {
  (name: string, fn?: TestFn): Promise<void>;
  (name: string, options: TestOptions, fn?: TestFn): Promise<void>;
  (fn: TestFn): Promise<void>;
}
/** `test`/`it` with their variants. */
export type TestRegistrar = TestRegistrarFn & {
  skip: TestRegistrarFn;
  todo: TestRegistrarFn;
  only: TestRegistrarFn;
};

type SuiteFn = () => unknown;
/** `describe`/`suite` and their `.skip`, `.todo`, `.only`. */
export interface SuiteRegistrarFn {
  (name: string, fn?: SuiteFn): Promise<void>;
  (name: string, options: TestOptions, fn?: SuiteFn): Promise<void>;
  (fn: SuiteFn): Promise<void>;
}
/** `describe`/`suite` with their variants. */
export type SuiteRegistrar = SuiteRegistrarFn & {
  skip: SuiteRegistrarFn;
  todo: SuiteRegistrarFn;
  only: SuiteRegistrarFn;
};

type Register = (a?: unknown, b?: unknown, c?: unknown) => Promise<void>;

function makeTest(): TestRegistrar {
  const register = (extra: TestOptions): Register => (a, b, c) => {
    const { name, options, fn } = parseArgs<TestFn>(a, b, c);
    current.children.push({ kind: "test", name, options: { ...options, ...extra }, fn });
    return Promise.resolve();
  };
  return Object.assign(register({}), {
    skip: register({ skip: true }),
    todo: register({ todo: true }),
    only: register({ only: true }),
  }) as TestRegistrar;
}

function makeDescribe(): SuiteRegistrar {
  const register = (extra: TestOptions): Register => (a, b, c) => {
    const { name, options, fn } = parseArgs<SuiteFn>(a, b, c);
    const suite = newSuite(name, { ...options, ...extra });
    current.children.push(suite);
    const parent = current;
    current = suite;
    try {
      const result = fn?.();
      if (result instanceof Promise) pendingRegistrations.push(result);
    } finally {
      current = parent;
    }
    return Promise.resolve();
  };
  return Object.assign(register({}), {
    skip: register({ skip: true }),
    todo: register({ todo: true }),
    only: register({ only: true }),
  }) as SuiteRegistrar;
}

/** `node:test`'s `test`. */
export const test: TestRegistrar = makeTest();
/** `node:test`'s `it`. */
export const it: TestRegistrar = test;
/** `node:test`'s `describe`. */
export const describe: SuiteRegistrar = makeDescribe();
/** `node:test`'s `suite`. */
export const suite: SuiteRegistrar = describe;
/** Runs once before the tests of the enclosing suite (or file). */
export function before(fn: HookFn): void {
  current.before.push(fn);
}
/** Runs once after the tests of the enclosing suite (or file). */
export function after(fn: HookFn): void {
  current.after.push(fn);
}
/** Runs before each test of the enclosing suite (or file). */
export function beforeEach(fn: HookFn): void {
  current.beforeEach.push(fn);
}
/** Runs after each test of the enclosing suite (or file). */
export function afterEach(fn: HookFn): void {
  current.afterEach.push(fn);
}
export default test;

/** The `mock` helper of `node:test` is not available here; using it fails the test that does. */
export const mock = new Proxy({}, {
  get(_target, property) {
    throw new Error(`node:test mock.${String(property)} is not available in the workerd test shim`);
  },
});

function describeError(err: unknown): TestResult["error"] {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return {
      name: err.name,
      message: err.message,
      code: typeof code === "string" ? code : undefined,
      stack: err.stack,
    };
  }
  return { name: "NonError", message: String(err) };
}

class SkipSignal {
  constructor(readonly status: "skipped" | "todo", readonly message?: string) {}
}

function withTimeout<T>(work: () => Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${timeoutMs} ms`)), timeoutMs);
  });
  return Promise.race([work(), timeout]).finally(() => clearTimeout(timer));
}

async function callTestFn(fn: TestFn, context: TestContext): Promise<void> {
  if (fn.length >= 2) {
    await new Promise<void>((resolve, reject) => {
      const maybe = fn(context, (err?: unknown) => (err ? reject(err) : resolve()));
      if (maybe instanceof Promise) maybe.catch(reject);
    });
  } else {
    await fn(context);
  }
}

interface RunState {
  file: string;
  results: TestResult[];
  onlyMode: boolean;
}

async function runTest(
  state: RunState,
  node: TestNode,
  path: string[],
  eachHooks: { before: HookFn[]; after: HookFn[] },
  inheritedSkip: boolean,
): Promise<void> {
  const fullName = [...path, node.name].filter(Boolean).join(" > ");
  const started = Date.now();
  const result: TestResult = { file: state.file, name: fullName, status: "passed", durationMs: 0 };
  const skipReason = node.options.skip ??
    (state.onlyMode && !node.options.only ? "not marked only" : undefined);
  if (inheritedSkip || skipReason || !node.fn) {
    result.status = node.options.todo || !node.fn ? "todo" : "skipped";
    if (typeof skipReason === "string") result.message = skipReason;
    state.results.push(result);
    return;
  }
  const diagnostics: string[] = [];
  const controller = new AbortController();
  const subtests: SuiteNode = newSuite(node.name);
  const context: TestContext = {
    name: node.name,
    fullName,
    signal: controller.signal,
    skip(message?: string) {
      throw new SkipSignal("skipped", message);
    },
    todo(message?: string) {
      throw new SkipSignal("todo", message);
    },
    diagnostic(message: string) {
      diagnostics.push(message);
    },
    async test(a?: unknown, b?: unknown, c?: unknown) {
      const sub = parseArgs<TestFn>(a, b, c);
      const child: TestNode = { kind: "test", name: sub.name, options: sub.options, fn: sub.fn };
      subtests.children.push(child);
      await runTest(state, child, [...path, node.name], { before: [], after: [] }, false);
    },
  };
  try {
    const timeoutMs = node.options.timeout ?? DEFAULT_TIMEOUT_MS;
    await withTimeout(
      async () => {
        for (const hook of eachHooks.before) await hook(context);
        try {
          await callTestFn(node.fn!, context);
        } finally {
          for (const hook of eachHooks.after) await hook(context);
        }
      },
      timeoutMs,
      `test "${fullName}"`,
    );
    if (node.options.todo) result.status = "todo";
  } catch (err) {
    if (err instanceof SkipSignal) {
      result.status = err.status;
      result.message = err.message;
    } else if (node.options.todo) {
      result.status = "todo";
      result.error = describeError(err);
    } else {
      result.status = "failed";
      result.error = describeError(err);
    }
  } finally {
    controller.abort();
  }
  result.durationMs = Date.now() - started;
  if (diagnostics.length) result.diagnostics = diagnostics;
  state.results.push(result);
}

async function runSuite(
  state: RunState,
  suiteNode: SuiteNode,
  path: string[],
  inherited: { before: HookFn[]; after: HookFn[] },
  inheritedSkip: boolean,
): Promise<void> {
  const skip = inheritedSkip || Boolean(suiteNode.options.skip) ||
    (state.onlyMode && !suiteNode.options.only && !containsOnly(suiteNode));
  const childPath = suiteNode.name ? [...path, suiteNode.name] : path;
  const eachHooks = {
    before: [...inherited.before, ...suiteNode.beforeEach],
    after: [...suiteNode.afterEach, ...inherited.after],
  };
  if (!skip) {
    try {
      for (const hook of suiteNode.before) await hook();
    } catch (err) {
      state.results.push({
        file: state.file,
        name: [...childPath, "before hook"].join(" > "),
        status: "failed",
        durationMs: 0,
        error: describeError(err),
      });
      return;
    }
  }
  const onlyHere = state.onlyMode && suiteNode.options.only;
  for (const child of suiteNode.children) {
    if (child.kind === "suite") await runSuite(state, child, childPath, eachHooks, skip);
    else {
      const node = onlyHere ? { ...child, options: { ...child.options, only: true } } : child;
      await runTest(state, node, childPath, eachHooks, skip);
    }
  }
  if (!skip) {
    try {
      for (const hook of suiteNode.after) await hook();
    } catch (err) {
      state.results.push({
        file: state.file,
        name: [...childPath, "after hook"].join(" > "),
        status: "failed",
        durationMs: 0,
        error: describeError(err),
      });
    }
  }
}

function containsOnly(node: SuiteNode | TestNode): boolean {
  if (node.options.only) return true;
  return node.kind === "suite" && node.children.some(containsOnly);
}

/**
 * Evaluates one test file (through `load`, a dynamic import) and runs the tests it
 * registered, in order. A file that throws while loading gives one failed result.
 */
export async function runFile(file: string, load: () => Promise<unknown>): Promise<TestResult[]> {
  const root = newSuite("");
  current = root;
  pendingRegistrations = [];
  const state: RunState = { file, results: [], onlyMode: false };
  try {
    await load();
    await Promise.all(pendingRegistrations);
  } catch (err) {
    current = newSuite("");
    return [{ file, name: "(loading the file)", status: "failed", durationMs: 0, error: describeError(err) }];
  }
  current = newSuite("");
  state.onlyMode = containsOnly(root);
  await runSuite(state, root, [], { before: [], after: [] }, false);
  return state.results;
}
