/**
 * Reading a configuration the way every meshauth process does: a YAML or JSON file, then
 * `MESHAUTH_*` environment overrides, then command-line overrides, validated field by field
 * so that every problem is reported at once with its path (`listen.port: expected ...`), a
 * misspelt key is refused by path instead of silently falling back to a default, a bad value
 * from the environment is named by its variable, and relative paths in a file resolve
 * against the file's own directory.
 *
 * @module
 */

import { readFile } from "node:fs/promises";
import { dirname, isAbsolute, resolve } from "node:path";
import { parse as parseYaml } from "yaml";
import { MeshAuthError, SpiffeId } from "../mod.ts";

/** A configuration that cannot be used; `problems` lists each field and what was wrong. */
export class ConfigError extends MeshAuthError {
  /** Stable code of this class: `ERR_CONFIG`. */
  static override code: string = "ERR_CONFIG";
  /** `source` names the file or the environment; `problems` lists each invalid setting on its own line. */
  constructor(readonly source: string, readonly problems: string[]) {
    super(`invalid configuration (${source}):\n${problems.map((p) => `  - ${p}`).join("\n")}`);
    this.name = "ConfigError";
  }
}

/**
 * Parses `text` as JSON (a `.json` path) or else YAML. A syntax error throws an `Error` whose
 * message is one line that says where: `not valid YAML: <what> at line 3, column 1`.
 */
export function parseDocument(path: string, text: string): unknown {
  const format = path.endsWith(".json") ? "JSON" : "YAML";
  try {
    return format === "JSON" ? JSON.parse(text) : parseYaml(text);
  } catch (err) {
    // The yaml library's message goes on with a code frame after "line L, column C:".
    const what = String((err as Error)?.message ?? err).split("\n")[0].replace(/:\s*$/, "");
    throw new Error(`not valid ${format}: ${what}`, { cause: err });
  }
}

/** A parsed but not yet validated configuration mapping. */
export type RawConfig = Record<string, unknown>;

/** Where a configuration comes from. */
export interface ConfigSources {
  /** The file (YAML, or JSON by its `.json` name); defaults plus environment without it. */
  path?: string;
  /** The file's content, already read (the file is then only named by `path`). */
  text?: string;
  /** The environment variables to read `MESHAUTH_*` overrides from. */
  env?: Record<string, string | undefined>;
  /** Values from the command line, by field path (`trustDomain`, `listen.port`). */
  overrides?: RawConfig;
  /** What relative paths resolve against without a file; the process's directory by default. */
  cwd?: string;
}

function setPath(target: RawConfig, path: string, value: unknown): void {
  const parts = path.split(".");
  let node = target;
  for (const p of parts.slice(0, -1)) {
    if (typeof node[p] !== "object" || node[p] === null) node[p] = {};
    node = node[p] as RawConfig;
  }
  node[parts.at(-1)!] = value;
}

/**
 * Reads `sources`, applies `envOverrides` (variable name to field path) and the command-line
 * overrides, and hands the mapping to `validate` with a {@link FieldReader} whose relative
 * paths resolve against the file's directory. `beforeOverride` may adjust the raw mapping
 * for a variable (a store URL implies the store's kind, say).
 */
export async function loadConfigFile<T>(
  sources: ConfigSources,
  envOverrides: Readonly<Record<string, string>>,
  validate: (raw: RawConfig, fields: FieldReader) => T,
  beforeOverride?: (raw: RawConfig, variable: string) => void,
): Promise<T> {
  let raw: RawConfig = {};
  const source = sources.path ?? "defaults";
  if (sources.path) {
    let text: string;
    try {
      text = sources.text ?? await readFile(sources.path, "utf8");
    } catch (err) {
      throw new ConfigError(source, [`cannot read the file: ${(err as Error).message}`]);
    }
    try {
      raw = (parseDocument(sources.path, text) ?? {}) as RawConfig;
    } catch (err) {
      throw new ConfigError(source, [(err as Error).message]);
    }
    if (typeof raw !== "object" || Array.isArray(raw)) {
      throw new ConfigError(source, ["the top level must be a mapping"]);
    }
  }
  const fromEnv = new Map<string, string>();
  for (const [name, path] of Object.entries(envOverrides)) {
    const value = sources.env?.[name];
    if (value === undefined || value === "") continue;
    beforeOverride?.(raw, name);
    setPath(raw, path, value);
    fromEnv.set(path, name);
  }
  for (const [path, value] of Object.entries(sources.overrides ?? {})) {
    if (value !== undefined) setPath(raw, path, value);
  }
  // A path written in a file means the same wherever the command runs from.
  // Paths from the environment or the command line mean what they mean in the shell.
  const cwd = sources.cwd ?? process.cwd();
  const fileDir = sources.path ? dirname(resolve(cwd, sources.path)) : cwd;
  const fields = new FieldReader(
    fileDir,
    cwd,
    new Set([...fromEnv.keys(), ...Object.keys(sources.overrides ?? {})]),
  );
  let config: T;
  try {
    config = validate(raw, fields);
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError(source, [(err as Error).message]);
  }
  if (fields.problems.length === 0) return config;
  // A bad value that came from the environment is reported under its variable's name.
  throw new ConfigError(
    source,
    fields.problems.map((problem) => {
      const path = problem.slice(0, problem.indexOf(":"));
      const name = fromEnv.get(path);
      return name ? `${path} (from ${name})${problem.slice(path.length)}` : problem;
    }),
  );
}

/**
 * Reads typed fields out of a raw mapping, collecting a problem (`path: what was wrong`) for
 * each bad one and answering the fallback, so that validation goes on and reports them all.
 */
export class FieldReader {
  /** Every problem found so far, one line each, as `path: what was wrong`. */
  readonly problems: string[] = [];
  /**
   * Relative paths written in the file resolve against `fileDir`; defaults and the fields in
   * `fromShell` (set from the environment or the command line) resolve against `cwd`.
   */
  constructor(
    readonly fileDir: string,
    readonly cwd: string = fileDir,
    readonly fromShell: ReadonlySet<string> = new Set(),
  ) {}

  /** Records a problem found by a check of the caller's own. */
  problem(message: string): void {
    this.problems.push(message);
  }

  /** A non-empty string; `fallback` undefined makes it required. */
  str(path: string, value: unknown, fallback?: string): string {
    if (value === undefined) {
      if (fallback === undefined) this.problems.push(`${path}: required`);
      return fallback ?? "";
    }
    if (typeof value !== "string" || value === "") {
      this.problems.push(`${path}: expected a non-empty string, got ${JSON.stringify(value)}`);
      return fallback ?? "";
    }
    return value;
  }

  /** An optional non-empty string. */
  optionalStr(path: string, value: unknown): string | undefined {
    return value === undefined ? undefined : this.str(path, value);
  }

  /** One of `choices`. */
  oneOf<C extends string>(path: string, value: unknown, choices: readonly C[], fallback: C): C {
    const text = this.str(path, value, fallback);
    if ((choices as readonly string[]).includes(text)) return text as C;
    this.problems.push(`${path}: expected one of ${choices.join(", ")}, got ${JSON.stringify(value)}`);
    return fallback;
  }

  /** A whole number from `min` to `max` (digits in a string count, as the environment gives them). */
  int(path: string, value: unknown, fallback: number, min: number, max: number): number {
    if (value === undefined) return fallback;
    const n = typeof value === "string" && /^\d+$/.test(value) ? Number(value) : value;
    if (typeof n !== "number" || !Number.isSafeInteger(n) || n < min || n > max) {
      this.problems.push(
        `${path}: expected a whole number from ${min} to ${max}, got ${JSON.stringify(value)}`,
      );
      return fallback;
    }
    return n;
  }

  /** A number from `min` to `max`, fractions allowed (decimal digits in a string count). */
  num(path: string, value: unknown, fallback: number, min: number, max: number): number {
    if (value === undefined) return fallback;
    const n = typeof value === "string" && /^\d+(\.\d+)?$/.test(value) ? Number(value) : value;
    if (typeof n !== "number" || !Number.isFinite(n) || n < min || n > max) {
      this.problems.push(`${path}: expected a number from ${min} to ${max}, got ${JSON.stringify(value)}`);
      return fallback;
    }
    return n;
  }

  /** true or false (also "true"/"false"/"1"/"0" from the environment). */
  bool(path: string, value: unknown, fallback: boolean): boolean {
    if (value === undefined) return fallback;
    if (value === true || value === "true" || value === "1") return true;
    if (value === false || value === "false" || value === "0") return false;
    this.problems.push(`${path}: expected true or false, got ${JSON.stringify(value)}`);
    return fallback;
  }

  /** A mapping whose keys must all be in `fields`: a misspelt key is an error, not a default. */
  obj(path: string, value: unknown, fields?: readonly string[], alternative = ""): RawConfig {
    if (value === undefined) return {};
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      this.problems.push(`${path}: expected a mapping${alternative}`);
      return {};
    }
    for (const key of Object.keys(value)) {
      if (fields && !fields.includes(key)) {
        this.problems.push(`${path}.${key}: unknown field (known: ${fields.join(", ")})`);
      }
    }
    return value as RawConfig;
  }

  /** Refuses top-level keys outside `fields`. */
  knownKeys(raw: RawConfig, fields: readonly string[]): void {
    for (const key of Object.keys(raw)) {
      if (!fields.includes(key)) this.problems.push(`${key}: unknown field (known: ${fields.join(", ")})`);
    }
  }

  /** A list of strings. */
  strings(path: string, value: unknown): string[] {
    if (value === undefined) return [];
    if (!Array.isArray(value) || value.some((v) => typeof v !== "string")) {
      this.problems.push(`${path}: expected a list of strings`);
      return [];
    }
    return value as string[];
  }

  /** A list of SPIFFE IDs, each checked by the one parser. */
  spiffeIds(path: string, value: unknown): string[] {
    if (value === undefined) return [];
    if (!Array.isArray(value)) {
      this.problems.push(`${path}: expected a list of SPIFFE IDs`);
      return [];
    }
    return value.flatMap((v, i) => {
      const id = this.spiffeId(`${path}[${i}]`, v);
      return id === undefined ? [] : [id];
    });
  }

  /** One SPIFFE ID, in its normal form. */
  spiffeId(path: string, value: unknown): string | undefined {
    if (typeof value !== "string") {
      this.problems.push(`${path}: expected a SPIFFE ID, got ${JSON.stringify(value)}`);
      return undefined;
    }
    try {
      return SpiffeId.parse(value).toString();
    } catch (err) {
      this.problems.push(`${path}: ${(err as Error).message}`);
      return undefined;
    }
  }

  /** A file system path, absolute, relative ones taken from the configuration's directory. */
  path(path: string, value: unknown, fallback?: string): string {
    const p = this.str(path, value, fallback);
    // Only what the file itself says is relative to the file; defaults are relative to the shell.
    const inFile = value !== undefined && !this.fromShell.has(path);
    return isAbsolute(p) ? p : resolve(inFile ? this.fileDir : this.cwd, p);
  }
}
