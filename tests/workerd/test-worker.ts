/**
 * The worker that runs test files inside workerd. `scripts/test-workerd.mjs` generates an
 * entry that calls {@link createTestWorker} with one dynamic import per test file; esbuild
 * turns those into lazy initialisers, so each file is evaluated inside a request (workerd
 * forbids random values and timers at module top level) and a file that fails to load fails
 * alone.
 *
 * Routes: `GET /files` lists the files, `GET /run?file=F` runs one, `GET /` runs all; each
 * answers JSON.
 * @module
 */

import { runFile, type TestResult } from "./node-test-shim.ts";

/** A worker module's default export, as workerd calls it. */
export interface TestWorker {
  fetch(request: Request): Promise<Response>;
}

/** Builds the worker from a map of test file name to a function that imports it. */
export function createTestWorker(files: Record<string, () => Promise<unknown>>): TestWorker {
  return {
    async fetch(request: Request): Promise<Response> {
      const url = new URL(request.url);
      if (url.pathname === "/files") return Response.json({ files: Object.keys(files) });
      let selected = Object.keys(files);
      if (url.pathname === "/run") {
        const file = url.searchParams.get("file") ?? "";
        if (!(file in files)) return Response.json({ error: `no test file ${file}` }, { status: 404 });
        selected = [file];
      } else if (url.pathname !== "/") {
        return Response.json({ error: "not found" }, { status: 404 });
      }
      const results: TestResult[] = [];
      for (const file of selected) results.push(...(await runFile(file, files[file])));
      return Response.json({ runtime: runtimeName(), results });
    },
  };
}

function runtimeName(): string {
  return typeof navigator === "object" ? navigator.userAgent ?? "unknown" : "unknown";
}
