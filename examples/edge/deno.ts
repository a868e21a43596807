/**
 * Deno entry of the edge example:
 * `deno run --allow-net --allow-env examples/edge/deno.ts` (settings in config.ts; `PORT`, default 8787).
 * It listens on 127.0.0.1: the TLS-terminating proxy in front of it is the only client.
 * @module
 */

import { createEdgeApp } from "./app.ts";
import { edgeOptionsFromEnv } from "./config.ts";

const app = createEdgeApp(edgeOptionsFromEnv(Deno.env.toObject()));
Deno.serve({ hostname: "127.0.0.1", port: Number(Deno.env.get("PORT") ?? 8787) }, app.fetch);
