/**
 * PEM (RFC 7468) encoding and strict decoding.
 * @module
 */

import { fromBase64, toBase64 } from "./encoding.ts";
import { MalformedInput } from "./errors.ts";

/** One PEM block: its label (`CERTIFICATE`, `PRIVATE KEY`, ...) and DER bytes. */
export interface PemBlock {
  label: string;
  der: Uint8Array;
}

const BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END ([A-Z0-9 ]+)-----/g;

/**
 * Decodes every PEM block in `text`. Text between blocks is ignored (as OpenSSL does, so
 * `openssl x509 -text` output works); a block whose body is not base64 is an error.
 */
export function decodePem(text: string, what = "PEM"): PemBlock[] {
  const blocks: PemBlock[] = [];
  for (const m of text.matchAll(BLOCK)) {
    if (m[1] !== m[3]) {
      throw new MalformedInput(what, `BEGIN ${m[1]} closed by END ${m[3]}`);
    }
    const body = m[2].replace(/[ \t\r\n]/g, "");
    blocks.push({ label: m[1], der: fromBase64(body, `${what} (${m[1]})`) });
  }
  return blocks;
}

/** Encodes DER as PEM with 64-character lines. */
export function encodePem(label: string, der: Uint8Array): string {
  const b64 = toBase64(der);
  const lines: string[] = [];
  for (let i = 0; i < b64.length; i += 64) lines.push(b64.slice(i, i + 64));
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}

/**
 * Normalises the forms users have (PEM text with one or more blocks, or DER bytes) to DER
 * blocks with the wanted labels.
 */
export function derBlocks(input: string | Uint8Array, labels: readonly string[], what: string): Uint8Array[] {
  if (input instanceof Uint8Array) return [input];
  if (typeof input !== "string") throw new MalformedInput(what, "expected PEM text or DER bytes");
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
