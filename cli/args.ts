/**
 * What every `meshauth` command shares: flag parsing that names the nearest known flag for a
 * misspelt one, usage errors (exit 2) apart from failures (exit 1), and the package version.
 *
 * @module
 */

import { readFileSync } from "node:fs";
import { parseArgs, type ParseArgsConfig } from "node:util";
import { errorLine } from "../internal/mod.ts";

/** A command line that does not make sense: printed with exit code 2. */
export class UsageError extends Error {}

/** True for the words that ask for help. */
export function isHelp(word?: string): boolean {
  return word === "--help" || word === "-h" || word === "help";
}

/** Levenshtein distance, for suggestions. */
function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diagonal = row[0];
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const above = row[j];
      row[j] = Math.min(row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] === b[j - 1] ? 0 : 1));
      diagonal = above;
    }
  }
  return row[b.length];
}

/** `; did you mean "x"?` when one of `known` is close to `word`, else "". */
export function didYouMean(word: string, known: readonly string[]): string {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of known) {
    const d = distance(word, candidate);
    if (d < bestDistance) [best, bestDistance] = [candidate, d];
  }
  return best !== undefined && bestDistance <= Math.max(2, Math.floor(word.length / 3))
    ? `; did you mean "${best}"?`
    : "";
}

/** `parseArgs`, strict, where an unknown flag is a {@link UsageError} naming the nearest known one. */
export function parseFlags<O extends NonNullable<ParseArgsConfig["options"]>>(
  args: string[],
  options: O,
): ReturnType<typeof parseArgs<{ args: string[]; options: O; strict: true; allowPositionals: false }>> {
  try {
    return parseArgs({ args, options, strict: true, allowPositionals: false });
  } catch (err) {
    const code = (err as { code?: string }).code;
    const unknown = /Unknown option '(-{1,2}[^']+)'/.exec((err as Error).message)?.[1];
    if (code === "ERR_PARSE_ARGS_UNKNOWN_OPTION" && unknown) {
      const flags = Object.keys(options).map((name) => `--${name}`);
      throw new UsageError(`unknown option ${unknown}${didYouMean(unknown, flags)}`);
    }
    if (code?.startsWith("ERR_PARSE_ARGS")) throw new UsageError((err as Error).message.split("\n")[0]);
    throw err;
  }
}

/**
 * The flags of a command that runs from a configuration file (`meshauth agent`, `meshauth proxy`):
 * `--config <file>`, `--check` and `--help`. Prints the help and answers undefined when asked for it.
 */
export function parseConfigCommand(
  args: string[],
  help: string,
): { config?: string; check: boolean } | undefined {
  if (isHelp(args[0])) {
    console.log(help);
    return undefined;
  }
  const { values } = parseFlags(args, {
    config: { type: "string" },
    check: { type: "boolean" },
    help: { type: "boolean" },
  });
  if (values.help) {
    console.log(help);
    return undefined;
  }
  return { config: values.config, check: values.check === true };
}

/**
 * Prints a command's failure and answers its exit code: `meshauth: ERR_PROXY_POLICY: <message>`,
 * the code first when the error has one, so that docs/errors.md can be searched for it.
 */
export function reportCliError(err: unknown): number {
  console.error(`meshauth: ${errorLine(err)}`);
  return err instanceof UsageError ? 2 : 1;
}

/** The package's version, from the package.json one level up (from cli/ and from dist/ alike). */
export function packageVersion(): string {
  try {
    return JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")).version;
  } catch {
    return "(unknown version)";
  }
}
