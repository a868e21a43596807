/**
 * Reading a JSON request body at the boundary: the media type, a size limit enforced while
 * the bytes arrive (not after buffering them all), JSON syntax, and field types. Every
 * failure is a {@link Problem} with its own code.
 *
 * @module
 */

import { Problem } from "./problems.ts";

/** The default and documented body limit: 64 KiB. */
export const MAX_BODY_BYTES = 64 * 1024;

/** Reads `request`'s body as a JSON object of at most `maxBytes`. */
export async function readJsonObject(
  request: Request,
  maxBytes = MAX_BODY_BYTES,
): Promise<Record<string, unknown>> {
  const type = request.headers.get("content-type") ?? "";
  if (!/^application\/([a-z0-9.+-]+\+)?json\s*(;|$)/i.test(type)) {
    await request.body?.cancel().catch(() => {});
    throw new Problem(
      "ERR_UNSUPPORTED_MEDIA_TYPE",
      `expected Content-Type application/json, got ${JSON.stringify(type.slice(0, 100))}${
        type.length > 100 ? ` (${type.length} characters)` : ""
      }`,
    );
  }
  const lengthHeader = request.headers.get("content-length") ?? "";
  const declared = /^\d+$/.test(lengthHeader) ? Number(lengthHeader) : undefined;
  if (declared !== undefined && declared > maxBytes) {
    await request.body?.cancel().catch(() => {});
    throw new Problem("ERR_BODY_TOO_LARGE", `the body is ${declared} bytes; the limit is ${maxBytes}`, {
      limitBytes: maxBytes,
    });
  }
  // With a declared length, HTTP framing bounds the body (and it is within the limit, checked
  // above), so it is read in one piece: on Node this skips building a Web stream. Without
  // one (chunked), the limit is enforced while the bytes arrive.
  let bytes: Uint8Array;
  try {
    bytes = declared !== undefined
      ? new Uint8Array(await request.arrayBuffer())
      : await readLimited(request, maxBytes);
  } catch (err) {
    // The client went away mid-body: its doing, not the server's. Anything else is a bug.
    if (err instanceof Problem || !(request.signal.aborted || isHangUp(err))) throw err;
    throw new Problem("ERR_BODY_INCOMPLETE", "the connection closed before the whole request body arrived");
  }
  if (bytes.byteLength > maxBytes) {
    throw new Problem("ERR_BODY_TOO_LARGE", `the body is over the limit of ${maxBytes} bytes`, {
      limitBytes: maxBytes,
    });
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new Problem("ERR_MALFORMED_JSON", "the body is not UTF-8");
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new Problem("ERR_MALFORMED_JSON", `the body is not valid JSON: ${(err as Error).message}`);
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new Problem("ERR_MALFORMED_JSON", "the body must be a JSON object");
  }
  return value as Record<string, unknown>;
}

/** How a body read fails when the client hangs up: Node's `aborted`, Bun's AbortError. */
function isHangUp(err: unknown): boolean {
  const { code, name } = (err ?? {}) as { code?: unknown; name?: unknown };
  return code === "ECONNRESET" || name === "AbortError";
}

async function readLimited(request: Request, maxBytes: number): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  if (request.body) {
    const reader = request.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      if (size > maxBytes) {
        await reader.cancel().catch(() => {});
        throw new Problem("ERR_BODY_TOO_LARGE", `the body is over the limit of ${maxBytes} bytes`, {
          limitBytes: maxBytes,
        });
      }
      chunks.push(value);
    }
  }
  const bytes = new Uint8Array(size);
  let offset = 0;
  for (const c of chunks) {
    bytes.set(c, offset);
    offset += c.byteLength;
  }
  return bytes;
}

/** A required string field. */
export function requireString(body: Record<string, unknown>, field: string, maxLength = 16 * 1024): string {
  const value = body[field];
  if (value === undefined || value === null) {
    throw new Problem("ERR_MISSING_FIELD", `the request body has no ${JSON.stringify(field)} field`, {
      field,
    });
  }
  if (typeof value !== "string") {
    throw new Problem("ERR_INVALID_FIELD", `${JSON.stringify(field)} must be a string`, { field });
  }
  if (value.length > maxLength) {
    throw new Problem(
      "ERR_INVALID_FIELD",
      `${JSON.stringify(field)} is longer than ${maxLength} characters`,
      { field },
    );
  }
  return value;
}

/** An optional string field. */
export function optionalString(body: Record<string, unknown>, field: string): string | undefined {
  return body[field] === undefined ? undefined : requireString(body, field);
}

/** An optional positive whole number. */
export function optionalPositiveInteger(body: Record<string, unknown>, field: string): number | undefined {
  const value = body[field];
  if (value === undefined) return undefined;
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value <= 0) {
    throw new Problem("ERR_INVALID_FIELD", `${JSON.stringify(field)} must be a positive whole number`, {
      field,
    });
  }
  return value;
}
