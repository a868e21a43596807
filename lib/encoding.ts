/**
 * Byte encodings the core needs (base64, base64url, hex) on web standards alone.
 * @module
 */

import { MalformedInput } from "./errors.ts";

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
// Every 12-bit value as its two base64 characters: three bytes become two lookups. About six
// times faster than btoa over a binary string on every runtime here, and a CA encodes a
// certificate per issuance.
const PAIRS: string[] = Array.from({ length: 4096 }, (_, v) => ALPHABET[v >> 6] + ALPHABET[v & 63]);

// ES2026's native codecs (Bun, Deno, and Node from 25): several times faster than the code
// below where a runtime has them. Inputs are validated before they reach them.
interface NativeCodecs {
  toBase64?: (this: Uint8Array) => string;
  toHex?: (this: Uint8Array) => string;
}
interface NativeDecoders {
  fromBase64?: (text: string) => Uint8Array;
  fromHex?: (text: string) => Uint8Array;
}
const native = Uint8Array.prototype as NativeCodecs;
const nativeDecode = Uint8Array as NativeDecoders;

/** True where {@link toBase64} is the runtime's own (a call costs little, whatever its length). */
export const isBase64Native: boolean = typeof native.toBase64 === "function";

/** Standard base64 of bytes. */
export function toBase64(bytes: Uint8Array): string {
  if (native.toBase64) return native.toBase64.call(bytes);
  let out = "";
  const whole = bytes.length - (bytes.length % 3);
  let i = 0;
  for (; i < whole; i += 3) {
    const v = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
    out += PAIRS[v >> 12] + PAIRS[v & 4095];
  }
  if (bytes.length - whole === 1) out += PAIRS[bytes[i] << 4] + "==";
  else if (bytes.length - whole === 2) {
    const v = (bytes[i] << 16) | (bytes[i + 1] << 8);
    out += PAIRS[v >> 12] + ALPHABET[(v >> 6) & 63] + "=";
  }
  return out;
}

/** Decodes standard base64, refusing any character outside the alphabet. */
export function fromBase64(text: string, what = "base64"): Uint8Array {
  if (!BASE64.test(text) || text.length % 4 === 1) {
    throw new MalformedInput(what, "not valid base64");
  }
  if (nativeDecode.fromBase64) {
    try {
      return nativeDecode.fromBase64(text);
    } catch (cause) {
      throw new MalformedInput(what, "not valid base64", { cause });
    }
  }
  let binary: string;
  try {
    binary = atob(text);
  } catch (cause) {
    throw new MalformedInput(what, "not valid base64", { cause });
  }
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

/** base64url without padding (RFC 7515). */
export function toBase64Url(bytes: Uint8Array): string {
  return toBase64(bytes).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** Decodes base64url with or without padding. */
export function fromBase64Url(text: string, what = "base64url"): Uint8Array {
  if (!/^[A-Za-z0-9_-]*={0,2}$/.test(text)) throw new MalformedInput(what, "not valid base64url");
  const b64 = text.replace(/=+$/, "").replace(/-/g, "+").replace(/_/g, "/");
  return fromBase64(b64 + "===".slice((b64.length + 3) % 4), what);
}

/** Lowercase hex of bytes. */
export function toHex(bytes: Uint8Array): string {
  if (native.toHex) return native.toHex.call(bytes);
  let s = "";
  for (const b of bytes) s += b.toString(16).padStart(2, "0");
  return s;
}

/** Bytes from hex (even length, case-insensitive). */
export function fromHex(hex: string, what = "hex"): Uint8Array {
  if (typeof hex !== "string" || hex.length % 2 || !/^[0-9a-fA-F]*$/.test(hex)) {
    throw new MalformedInput(what, "not valid hex");
  }
  if (nativeDecode.fromHex) return nativeDecode.fromHex(hex);
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  return out;
}

/** Byte-wise equality. */
export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Copies a view into its own ArrayBuffer, the form WebCrypto's types ask for. A new plain
 * Uint8Array, not `slice()`: a subclass's slice may answer a view of a shared pool (Node's
 * Buffer does), whose `.buffer` holds other bytes around these.
 */
export function toArrayBuffer(bytes: Uint8Array): ArrayBuffer {
  return new Uint8Array(bytes).buffer as ArrayBuffer;
}
