/**
 * Where the x509-limbo development cases are read from: `../shared/conformance/x509-limbo/
 * limbo-dev.json`, beside the checkout, not in the repository. A checkout without them gets
 * one line that says where they go and how to get them, not a stack trace.
 */
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

/** The suite's path: `../shared/conformance/x509-limbo/limbo-dev.json` from the checkout. */
export const LIMBO_SUITE_PATH = fileURLToPath(
  new URL("../../shared/conformance/x509-limbo/limbo-dev.json", import.meta.url),
);

/** The cases are not where they are read from. */
export class LimboSuiteMissing extends Error {
  constructor(reason: string) {
    super(
      `the x509-limbo conformance cases are not in this repository: they are read from ` +
        `../shared/conformance/x509-limbo/limbo-dev.json beside the checkout (${LIMBO_SUITE_PATH}), which ${reason}; ` +
        `x509-limbo's own limbo.json (https://github.com/C2SP/x509-limbo) has the same format, saved there under that name`,
    );
  }
}

/** The parsed suite; throws {@link LimboSuiteMissing} when the file is absent or unreadable. */
export function readLimboSuite<T>(): T {
  let text: string;
  try {
    text = readFileSync(LIMBO_SUITE_PATH, "utf8");
  } catch (err) {
    const code = (err as { code?: string }).code;
    throw new LimboSuiteMissing(code === "ENOENT" ? "does not exist" : `cannot be read (${code})`);
  }
  return JSON.parse(text) as T;
}

/** {@link readLimboSuite} for a script: a missing suite is one line on stderr and exit code 1. */
export function readLimboSuiteOrExit<T>(): T {
  try {
    return readLimboSuite<T>();
  } catch (err) {
    if (!(err instanceof LimboSuiteMissing)) throw err;
    console.error(`meshauth: ${err.message}`);
    process.exit(1);
  }
}
