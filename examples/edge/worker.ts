/**
 * Cloudflare Workers (and workerd) entry of the edge example. Settings come from the
 * Worker's `env` (see config.ts); a service binding named `CA` reaches the CA without the
 * public internet. Workers forbid I/O and random values at start-up, so the app is made on
 * the first request and kept for the isolate's life (its bundle cache with it).
 * @module
 */

import type { Hono } from "hono";
import type { EdgeEnv } from "./app.ts";
import { createEdgeApp } from "./app.ts";
import type { FetchLike } from "./bundle-cache.ts";
import { edgeOptionsFromEnv } from "./config.ts";

interface WorkerEnv {
  [name: string]: unknown;
  CA?: { fetch: FetchLike };
}

let app: Hono<EdgeEnv> | undefined;

export default {
  fetch(request: Request, env: WorkerEnv, ctx?: unknown): Response | Promise<Response> {
    if (!app) {
      const vars = Object.fromEntries(
        Object.entries(env).filter((entry): entry is [string, string] => typeof entry[1] === "string"),
      );
      const ca = env.CA;
      app = createEdgeApp(edgeOptionsFromEnv(vars, ca ? (input, init) => ca.fetch(input, init) : undefined));
    }
    return app.fetch(request, env, ctx as never);
  },
};
