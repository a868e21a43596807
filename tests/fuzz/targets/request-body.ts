import { Problem } from "../../../ca-server/problems.ts";
import {
  optionalPositiveInteger,
  optionalString,
  readJsonObject,
  requireString,
} from "../../../ca-server/request-body.ts";
import { type FuzzTarget, refusalOnly } from "../harness.ts";

const CONTENT_TYPES = [
  "application/json",
  "application/json; charset=utf-8",
  "application/merge-patch+json",
  "text/plain",
  "",
];
const isProblem = (err: unknown) => err instanceof Problem;

/**
 * The CA server's request-body reader: the first byte picks the Content-Type and whether the
 * body is sent with a length or chunked; the rest is the body. A refusal is a Problem.
 */
export const requestBody: FuzzTarget = {
  description: "ca-server readJsonObject and the field readers on arbitrary bodies",
  sync: false,
  maxLength: 80 * 1024,
  async check(data) {
    const mode = data[0] ?? 0;
    const body = data.subarray(1);
    const headers: Record<string, string> = { "content-type": CONTENT_TYPES[mode % CONTENT_TYPES.length] };
    const chunked = (mode & 0x80) !== 0;
    if (!chunked) headers["content-length"] = String(body.length);
    const request = new Request("http://127.0.0.1/v1/svids", {
      method: "POST",
      headers,
      body: chunked
        ? new ReadableStream({
          start(controller) {
            for (let i = 0; i < body.length; i += 4096) controller.enqueue(body.slice(i, i + 4096));
            controller.close();
          },
        })
        : body.slice(),
      ...(chunked ? { duplex: "half" } : {}),
    } as RequestInit);
    try {
      const object = await readJsonObject(request, 64 * 1024);
      for (const field of ["csr", "spiffeId", "token"]) {
        try {
          requireString(object, field);
        } catch (err) {
          refusalOnly(err, isProblem);
        }
      }
      optionalString(object, "reason");
      optionalPositiveInteger(object, "ttlSeconds");
    } catch (err) {
      refusalOnly(err, isProblem);
    }
  },
};
