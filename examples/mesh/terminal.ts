/**
 * How `npm start` talks to its reader: plain words, one outcome a line, marked ✔ or ✘, with
 * colour on a terminal that has it and none where it does not (a pipe, a file, `TERM=dumb`)
 * or where the reader asked for none (`NO_COLOR`, https://no-color.org).
 *
 * @module
 */

/** True when stdout is a terminal that should get colour. */
export function wantsColor(
  stream: { isTTY?: boolean } = process.stdout,
  env: Record<string, string | undefined> = process.env,
): boolean {
  if (env.NO_COLOR) return false;
  if (env.FORCE_COLOR && env.FORCE_COLOR !== "0") return true;
  return !!stream.isTTY && env.TERM !== "dumb";
}

const CODES = {
  bold: [1, 22],
  dim: [2, 22],
  red: [31, 39],
  green: [32, 39],
  yellow: [33, 39],
  cyan: [36, 39],
};
type Style = keyof typeof CODES;

/** The printer of one run. */
export class Terminal {
  readonly #isColor: boolean;
  readonly #write: (text: string) => void;
  #failures = 0;
  #outcomes = 0;

  constructor(options: { isColor?: boolean; write?: (text: string) => void } = {}) {
    this.#isColor = options.isColor ?? wantsColor();
    this.#write = options.write ?? ((text) => process.stdout.write(text));
  }

  /** `text` in `style`, or as it is without colour. */
  paint(style: Style, text: string): string {
    if (!this.#isColor) return text;
    const [on, off] = CODES[style];
    return `\u001b[${on}m${text}\u001b[${off}m`;
  }

  line(text = ""): void {
    this.#write(`${text}\n`);
  }

  /** A step's title: `n. what`. */
  step(n: number, title: string): void {
    this.line();
    this.line(this.paint("bold", `${n}. ${title}`));
  }

  /** An outcome as expected. */
  ok(text: string): void {
    this.#outcomes++;
    this.line(`   ${this.paint("green", "✔")} ${text}`);
  }

  /** An outcome not as expected: the reason, said plainly. */
  fail(text: string): void {
    this.#outcomes++;
    this.#failures++;
    this.line(`   ${this.paint("red", "✘")} ${this.paint("red", text)}`);
  }

  /** A detail under an outcome. */
  detail(text: string): void {
    this.line(`     ${this.paint("dim", text)}`);
  }

  get outcomes(): number {
    return this.#outcomes;
  }

  get failures(): number {
    return this.#failures;
  }
}

/** Seconds with two decimals, or milliseconds under one second: `0.84 s`, `12 ms`. */
export function seconds(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

/** The first 16 hex digits of a serial number, for lines that must stay readable. */
export function shortSerial(serialNumber: string): string {
  return serialNumber.length > 16 ? `${serialNumber.slice(0, 16)}…` : serialNumber;
}
