/**
 * Bun entry of the edge example: `bun examples/edge/bun.ts` (settings in config.ts; `PORT`,
 * default 8787). Bun serves a module's default export that has `fetch`. It listens on
 * 127.0.0.1: the TLS-terminating proxy in front of it is the only client.
 * @module
 */

import { createEdgeApp } from "./app.ts";
import { type EdgeEnvironment, edgeOptionsFromEnv } from "./config.ts";

// Bun.env, read through globalThis so this file also type-checks without Bun's types.
const env: EdgeEnvironment = (globalThis as unknown as { Bun: { env: EdgeEnvironment } }).Bun.env;
const app = createEdgeApp(edgeOptionsFromEnv(env));

export default {
  hostname: "127.0.0.1",
  port: Number(env.PORT ?? 8787),
  fetch: app.fetch,
};
