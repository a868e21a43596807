/**
 * `node:assert/strict` for runtimes without it (workerd with Node compatibility off).
 * `scripts/test-workerd.mjs` aliases `node:assert/strict` and `node:assert` to this file.
 * Semantics follow Node's strict mode: `equal` is `Object.is`-strict, `deepEqual` is
 * `deepStrictEqual` (prototypes, own enumerable keys, Map, Set, typed arrays, Date, RegExp,
 * Error name and message).
 * @module
 */

/** Thrown when an assertion fails, like Node's `assert.AssertionError`. */
export class AssertionError extends Error {
  code = "ERR_ASSERTION";
  actual: unknown;
  expected: unknown;
  operator: string;
  generatedMessage: boolean;
  constructor(
    options: { message?: string | Error; actual?: unknown; expected?: unknown; operator?: string },
  ) {
    const generated = options.message === undefined;
    super(
      generated
        ? `${options.operator ?? "assertion"} failed: actual ${show(options.actual)}, expected ${
          show(options.expected)
        }`
        : String(options.message),
    );
    this.name = "AssertionError";
    this.actual = options.actual;
    this.expected = options.expected;
    this.operator = options.operator ?? "fail";
    this.generatedMessage = generated;
  }
}

function show(value: unknown): string {
  try {
    if (typeof value === "string") {
      return JSON.stringify(value.length > 200 ? `${value.slice(0, 197)}...` : value);
    }
    if (typeof value === "bigint") return `${value}n`;
    if (typeof value === "function") return `[Function ${value.name || "anonymous"}]`;
    if (value instanceof Error) return `${value.name}: ${value.message}`;
    if (value instanceof Uint8Array) return `Uint8Array(${value.length})`;
    if (value instanceof Map) return `Map(${value.size})`;
    if (value instanceof Set) return `Set(${value.size})`;
    const text = JSON.stringify(value, (_k, v) => (typeof v === "bigint" ? `${v}n` : v));
    if (text === undefined) return String(value);
    return text.length > 200 ? `${text.slice(0, 197)}...` : text;
  } catch {
    return String(value);
  }
}

function fail(
  message: string | Error | undefined,
  actual: unknown,
  expected: unknown,
  operator: string,
): never {
  if (message instanceof Error) throw message;
  throw new AssertionError({ message, actual, expected, operator });
}

function isDeepStrictEqual(a: unknown, b: unknown, seen = new Map<object, object>()): boolean {
  if (Object.is(a, b)) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (Object.getPrototypeOf(a) !== Object.getPrototypeOf(b)) return false;
  if (seen.get(a) === b) return true;
  seen.set(a, b);
  const tag = Object.prototype.toString.call(a);
  if (tag !== Object.prototype.toString.call(b)) return false;
  if (a instanceof Date) return Object.is(a.getTime(), (b as Date).getTime());
  if (a instanceof RegExp) return String(a) === String(b) && a.lastIndex === (b as RegExp).lastIndex;
  if (a instanceof Error) {
    const e = b as Error;
    if (a.name !== e.name || a.message !== e.message) return false;
  }
  if (a instanceof Number || a instanceof String || a instanceof Boolean || a instanceof BigInt) {
    if (!Object.is(a.valueOf(), (b as typeof a).valueOf())) return false;
  }
  if (a instanceof ArrayBuffer) return bytesEqual(new Uint8Array(a), new Uint8Array(b as ArrayBuffer));
  if (ArrayBuffer.isView(a)) {
    const x = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
    const y = new Uint8Array(
      (b as ArrayBufferView).buffer,
      (b as ArrayBufferView).byteOffset,
      (b as ArrayBufferView).byteLength,
    );
    if (!bytesEqual(x, y)) return false;
  } else if (Array.isArray(a)) {
    const other = b as unknown[];
    if (a.length !== other.length) return false;
    for (let i = 0; i < a.length; i++) if (!isDeepStrictEqual(a[i], other[i], seen)) return false;
  }
  if (a instanceof Map) {
    const other = b as Map<unknown, unknown>;
    if (a.size !== other.size) return false;
    for (const [key, value] of a) {
      if (!other.has(key) || !isDeepStrictEqual(value, other.get(key), seen)) return false;
    }
  }
  if (a instanceof Set) {
    const other = b as Set<unknown>;
    if (a.size !== other.size) return false;
    outer: for (const value of a) {
      if (other.has(value)) continue;
      if (typeof value === "object" && value !== null) {
        for (const candidate of other) if (isDeepStrictEqual(value, candidate, seen)) continue outer;
      }
      return false;
    }
  }
  const keysA = ownKeys(a);
  const keysB = ownKeys(b);
  if (keysA.length !== keysB.length) return false;
  for (const key of keysA) {
    if (!Object.prototype.propertyIsEnumerable.call(b, key)) return false;
    if (
      !isDeepStrictEqual(
        (a as Record<PropertyKey, unknown>)[key],
        (b as Record<PropertyKey, unknown>)[key],
        seen,
      )
    ) {
      return false;
    }
  }
  return true;
}

function ownKeys(value: object): PropertyKey[] {
  const keys: PropertyKey[] = Object.keys(value);
  if (ArrayBuffer.isView(value)) return [];
  if (Array.isArray(value)) return keys.filter((k) => !/^(0|[1-9]\d*)$/.test(String(k)));
  for (const symbol of Object.getOwnPropertySymbols(value)) {
    if (Object.prototype.propertyIsEnumerable.call(value, symbol)) keys.push(symbol);
  }
  return keys;
}

function bytesEqual(x: Uint8Array, y: Uint8Array): boolean {
  if (x.length !== y.length) return false;
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}

type Expected = RegExp | (new (...args: any[]) => unknown) | ((err: unknown) => boolean) | object | Error;

function checkError(
  actual: unknown,
  expected: Expected | string | undefined,
  operator: string,
  message?: string,
) {
  if (expected === undefined || typeof expected === "string") return;
  if (expected instanceof RegExp) {
    if (!expected.test(String(actual))) {
      fail(message, actual, expected, operator);
    }
    return;
  }
  if (typeof expected === "function") {
    const ctor = expected as { prototype?: unknown };
    if (ctor.prototype !== undefined && actual instanceof (expected as new () => unknown)) return;
    if (Object.prototype.isPrototypeOf.call(Error, expected) || expected === Error) {
      fail(
        message ?? `expected an instance of ${expected.name}, got ${show(actual)}`,
        actual,
        expected,
        operator,
      );
    }
    const ok = (expected as (err: unknown) => unknown).call({}, actual);
    if (ok !== true) {
      fail(
        message ?? `the validation function returned ${show(ok)} for ${show(actual)}`,
        actual,
        expected,
        operator,
      );
    }
    return;
  }
  if (typeof expected === "object" && expected !== null) {
    const keys = expected instanceof Error
      ? ["name", "message", ...Object.keys(expected)]
      : Object.keys(expected);
    for (const key of keys) {
      const want = (expected as Record<string, unknown>)[key];
      const got = (actual as Record<string, unknown> | null)?.[key];
      if (want instanceof RegExp && typeof got === "string") {
        if (!want.test(got)) {
          fail(message ?? `property ${key}: ${show(got)} does not match ${want}`, actual, expected, operator);
        }
      } else if (!isDeepStrictEqual(got, want)) {
        fail(
          message ?? `property ${key}: actual ${show(got)}, expected ${show(want)}`,
          actual,
          expected,
          operator,
        );
      }
    }
  }
}

const NOTHING = Symbol("nothing thrown");

/** Asserts that `value` is truthy. */
export function ok(value: unknown, message?: string | Error): asserts value {
  if (!value) fail(message ?? `expected a truthy value, got ${show(value)}`, value, true, "==");
}

/** Asserts `Object.is(actual, expected)`. */
export function strictEqual<T>(actual: unknown, expected: T, message?: string | Error): asserts actual is T {
  if (!Object.is(actual, expected)) fail(message, actual, expected, "strictEqual");
}

/** Asserts `!Object.is(actual, expected)`. */
export function notStrictEqual(actual: unknown, expected: unknown, message?: string | Error): void {
  if (Object.is(actual, expected)) fail(message, actual, expected, "notStrictEqual");
}

/** Asserts deep strict equality. */
export function deepStrictEqual<T>(
  actual: unknown,
  expected: T,
  message?: string | Error,
): asserts actual is T {
  if (!isDeepStrictEqual(actual, expected)) fail(message, actual, expected, "deepStrictEqual");
}

/** Asserts deep strict inequality. */
export function notDeepStrictEqual(actual: unknown, expected: unknown, message?: string | Error): void {
  if (isDeepStrictEqual(actual, expected)) fail(message, actual, expected, "notDeepStrictEqual");
}

/** Asserts that `fn` throws, and that the error matches `expected` when given. */
export function throws(fn: () => unknown, expected?: Expected | string, message?: string): void {
  if (typeof expected === "string") [message, expected] = [expected, undefined];
  let thrown: unknown = NOTHING;
  try {
    fn();
  } catch (err) {
    thrown = err;
  }
  if (thrown === NOTHING) fail(message ?? "Missing expected exception.", undefined, expected, "throws");
  checkError(thrown, expected, "throws", message);
}

/** Asserts that `fn` does not throw. */
export function doesNotThrow(fn: () => unknown, message?: string | Expected): void {
  try {
    fn();
  } catch (err) {
    fail(
      typeof message === "string" ? message : `Got unwanted exception: ${show(err)}`,
      err,
      undefined,
      "doesNotThrow",
    );
  }
}

/** Asserts that the promise (or the promise `fn` returns) rejects, matching `expected` when given. */
export async function rejects(
  promiseOrFn: Promise<unknown> | (() => Promise<unknown>),
  expected?: Expected | string,
  message?: string,
): Promise<void> {
  if (typeof expected === "string") [message, expected] = [expected, undefined];
  let thrown: unknown = NOTHING;
  try {
    await (typeof promiseOrFn === "function" ? promiseOrFn() : promiseOrFn);
  } catch (err) {
    thrown = err;
  }
  if (thrown === NOTHING) fail(message ?? "Missing expected rejection.", undefined, expected, "rejects");
  checkError(thrown, expected, "rejects", message);
}

/** Asserts that the promise (or the promise `fn` returns) resolves. */
export async function doesNotReject(
  promiseOrFn: Promise<unknown> | (() => Promise<unknown>),
  message?: string | Expected,
): Promise<void> {
  try {
    await (typeof promiseOrFn === "function" ? promiseOrFn() : promiseOrFn);
  } catch (err) {
    fail(
      typeof message === "string" ? message : `Got unwanted rejection: ${show(err)}`,
      err,
      undefined,
      "doesNotReject",
    );
  }
}

/** Asserts that `text` matches `pattern`. */
export function match(text: string, pattern: RegExp, message?: string | Error): void {
  if (typeof text !== "string" || !pattern.test(text)) {
    fail(message ?? `${show(text)} does not match ${pattern}`, text, pattern, "match");
  }
}

/** Asserts that `text` does not match `pattern`. */
export function doesNotMatch(text: string, pattern: RegExp, message?: string | Error): void {
  if (typeof text !== "string" || pattern.test(text)) {
    fail(message ?? `${show(text)} matches ${pattern}`, text, pattern, "doesNotMatch");
  }
}

/** Throws `value` when it is neither `null` nor `undefined`. */
export function ifError(value: unknown): void {
  if (value !== null && value !== undefined) {
    if (value instanceof Error) throw value;
    fail(`ifError got unwanted exception: ${show(value)}`, value, null, "ifError");
  }
}

/** Fails unconditionally. */
function failAlways(message: string | Error = "Failed"): never {
  if (message instanceof Error) throw message;
  throw new AssertionError({ message, operator: "fail" });
}

export {
  deepStrictEqual as deepEqual,
  failAlways as fail,
  notDeepStrictEqual as notDeepEqual,
  notStrictEqual as notEqual,
  strictEqual as equal,
};

/** The default export: `assert(value)` plus every method, as `node:assert/strict` gives. */
const assert: typeof ok & {
  ok: typeof ok;
  equal: typeof strictEqual;
  strictEqual: typeof strictEqual;
  notEqual: typeof notStrictEqual;
  notStrictEqual: typeof notStrictEqual;
  deepEqual: typeof deepStrictEqual;
  deepStrictEqual: typeof deepStrictEqual;
  notDeepEqual: typeof notDeepStrictEqual;
  notDeepStrictEqual: typeof notDeepStrictEqual;
  throws: typeof throws;
  doesNotThrow: typeof doesNotThrow;
  rejects: typeof rejects;
  doesNotReject: typeof doesNotReject;
  match: typeof match;
  doesNotMatch: typeof doesNotMatch;
  ifError: typeof ifError;
  fail: typeof failAlways;
  AssertionError: typeof AssertionError;
  strict: unknown;
} = Object.assign((value: unknown, message?: string | Error) => ok(value, message), {
  ok,
  equal: strictEqual,
  strictEqual,
  notEqual: notStrictEqual,
  notStrictEqual,
  deepEqual: deepStrictEqual,
  deepStrictEqual,
  notDeepEqual: notDeepStrictEqual,
  notDeepStrictEqual,
  throws,
  doesNotThrow,
  rejects,
  doesNotReject,
  match,
  doesNotMatch,
  ifError,
  fail: failAlways,
  AssertionError,
  strict: undefined as unknown,
}) as never;
assert.strict = assert;

export { assert as strict };
export default assert;
