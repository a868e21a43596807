/**
 * PEM (RFC 7468) encoding and strict decoding.
 * @module
 */

import { fromBase64, isBase64Native, toBase64 } from "./encoding.ts";
import { describeValue, InvalidArgument, MalformedInput } from "./errors.ts";

/** One PEM block: its label (`CERTIFICATE`, `PRIVATE KEY`, ...) and DER bytes. */
export interface PemBlock {
  /** The label between `BEGIN` and `END` (`CERTIFICATE`, `PRIVATE KEY`). */
  label: string;
  /** The decoded DER bytes. */
  der: Uint8Array;
}

/** One PEM block as found in text, before its body is decoded. */
export interface PemSpan {
  /** The BEGIN line's label. */
  label: string;
  /** The END line's label; a well-formed block has the same as `label`. */
  endLabel: string;
  /** The text between the BEGIN and END lines. */
  body: string;
  /** The whole block, BEGIN line to END line. */
  text: string;
}

const BEGIN = "-----BEGIN ";
const END = "-----END ";
const DASHES = "-----";

/**
 * Finds the PEM blocks in `text`: each BEGIN line is paired with the first END line after it.
 * A linear scan, not a regular expression: a lazy match from every BEGIN line that has no END
 * rescans the rest of the input, which makes a peer's chain of BEGIN lines cost quadratic time.
 */
export function scanPem(text: string): PemSpan[] {
  const spans: PemSpan[] = [];
  let from = 0;
  while (true) {
    const begin = text.indexOf(BEGIN, from);
    if (begin === -1) break;
    const label = labelAt(text, begin + BEGIN.length);
    if (label === undefined) {
      from = begin + 1;
      continue;
    }
    const bodyStart = begin + BEGIN.length + label.length + DASHES.length;
    let end = text.indexOf(END, bodyStart);
    let endLabel: string | undefined;
    while (end !== -1 && (endLabel = labelAt(text, end + END.length)) === undefined) {
      end = text.indexOf(END, end + 1);
    }
    // No END after this BEGIN means none after any later BEGIN either.
    if (end === -1 || endLabel === undefined) break;
    const blockEnd = end + END.length + endLabel.length + DASHES.length;
    spans.push({ label, endLabel, body: text.slice(bodyStart, end), text: text.slice(begin, blockEnd) });
    from = blockEnd;
  }
  return spans;
}

/** The label (`[A-Z0-9 ]+`) starting at `at` when `-----` follows it, else undefined. */
function labelAt(text: string, at: number): string | undefined {
  let i = at;
  while (i < text.length && isLabelChar(text.charCodeAt(i))) i++;
  if (i === at || !text.startsWith(DASHES, i)) return undefined;
  return text.slice(at, i);
}

function isLabelChar(c: number): boolean {
  return (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39) || c === 0x20;
}

/**
 * Decodes every PEM block in `text`. Text between blocks is ignored (as OpenSSL does, so
 * `openssl x509 -text` output works); a block whose body is not base64 is an error.
 */
export function decodePem(text: string, what = "PEM"): PemBlock[] {
  if (typeof text !== "string") {
    throw new InvalidArgument(what, `expected PEM text, got ${describeValue(text)}`);
  }
  return scanPem(text).map(({ label, endLabel, body }) => {
    if (label !== endLabel) {
      throw new MalformedInput(what, `BEGIN ${label} closed by END ${endLabel}`);
    }
    return { label, der: fromBase64(body.replace(/[ \t\r\n]/g, ""), `${what} (${label})`) };
  });
}

/** Encodes DER as PEM with 64-character lines. */
export function encodePem(label: string, der: Uint8Array): string {
  if (!(der instanceof Uint8Array)) throw new InvalidArgument("der", "expected DER bytes (a Uint8Array)");
  // RFC 7468 3: printable characters but "-", words separated by single spaces.
  if (typeof label !== "string" || !/^[!-,.-~]+( [!-,.-~]+)*$/.test(label)) {
    throw new InvalidArgument(
      "label",
      `expected a PEM label such as CERTIFICATE, got ${JSON.stringify(label)}`,
    );
  }
  let body = "";
  if (isBase64Native) {
    // One native call, then 64-character lines: a call per line cost more than the slices.
    const text = toBase64(der);
    for (let i = 0; i < text.length; i += 64) body += `${text.slice(i, i + 64)}\n`;
  } else {
    // 48 bytes make one 64-character line: encoding line by line spares slicing one long string.
    for (let i = 0; i < der.length; i += 48) body += `${toBase64(der.subarray(i, i + 48))}\n`;
  }
  return `-----BEGIN ${label}-----\n${body}-----END ${label}-----\n`;
}

/**
 * Normalises the forms users have (PEM text with one or more blocks, or DER bytes in a
 * Uint8Array, a Node Buffer included) to DER blocks with the wanted labels. Anything else is
 * the caller's mistake: {@link InvalidArgument}.
 */
export function derBlocks(input: string | Uint8Array, labels: readonly string[], what: string): Uint8Array[] {
  if (input instanceof Uint8Array) return [input];
  if (typeof input !== "string") {
    throw new InvalidArgument(
      what,
      `expected PEM text or DER bytes (a Uint8Array), got ${describeValue(input)}`,
    );
  }
  const blocks = decodePem(input, what);
  if (blocks.length === 0) throw new MalformedInput(what, "no PEM block found");
  const wrong = blocks.find((b) => !labels.includes(b.label));
  if (wrong) {
    throw new MalformedInput(what, `unexpected PEM block ${wrong.label} (wanted ${labels.join(" or ")})`);
  }
  return blocks.map((b) => b.der);
}

/** Exactly one DER block with a wanted label. */
export function derBlock(input: string | Uint8Array, labels: readonly string[], what: string): Uint8Array {
  const blocks = derBlocks(input, labels, what);
  if (blocks.length !== 1) throw new MalformedInput(what, `expected one PEM block, found ${blocks.length}`);
  return blocks[0];
}
