// The CA's own TLS serving certificate names every address it listens on, and is renewed at
// half its life, well before it expires, even with the shortest lifetime the configuration
// allows (60 s, plus the 30 s backdating).
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { join } from "node:path";
import { connect } from "node:tls";
import { after, before, describe, it } from "node:test";
import { loadConfig, silentLogger, startCaServer } from "../../ca-server/mod.ts";
import { servingRetryDelayMs } from "../../ca-server/server.ts";
import { type CaProcess, cli, startCa, tempDir, writeConfig } from "./helpers.ts";

const run = promisify(execFile);

/** The notAfter of the certificate the CA serves now. */
function servedNotAfter(port: number): Promise<Date> {
  return new Promise((resolve, reject) => {
    const socket = connect(
      { host: "127.0.0.1", port, servername: "localhost", rejectUnauthorized: false },
      () => {
        const validTo = socket.getPeerCertificate().valid_to;
        socket.destroy();
        resolve(new Date(validTo));
      },
    );
    socket.once("error", reject);
    socket.setTimeout(5000, () => socket.destroy(new Error("TLS handshake timed out")));
  });
}

describe("the serving certificate", () => {
  let dir: { path: string; remove(): Promise<void> };
  let ca: CaProcess;

  before(async () => {
    dir = await tempDir();
    const config = await writeConfig(dir.path, {
      listen: { host: "127.0.0.1", port: 0 },
      issuance: { defaultTtlSeconds: 60, maxTtlSeconds: 60 },
      log: { level: "info" },
    });
    assert.equal((await cli(["ca", "init", "--config", config])).code, 0);
    ca = await startCa(config);
  });

  after(async () => {
    await ca?.stop();
    await dir?.remove();
  });

  it("verifies as https://127.0.0.1 and https://localhost with the trust bundle (curl, host name checked)", async () => {
    const bundle = join(dir.path, "fetched-bundle.pem");
    await run("curl", ["-sSk", "-o", bundle, `https://127.0.0.1:${ca.port}/v1/bundle.pem`]);
    for (const host of ["127.0.0.1", "localhost"]) {
      const { stdout } = await run("curl", [
        "-sS",
        "--cacert",
        bundle,
        "--resolve",
        `localhost:${ca.port}:127.0.0.1`,
        `https://${host}:${ca.port}/v1/bundle.pem`,
      ]);
      assert.match(stdout, /BEGIN CERTIFICATE/, host);
    }
    // A name the certificate does not carry is refused, so the check above is a real one.
    await assert.rejects(
      run("curl", [
        "-sS",
        "--cacert",
        bundle,
        "--resolve",
        `ca.other:${ca.port}:127.0.0.1`,
        `https://ca.other:${ca.port}/v1/bundle.pem`,
      ]),
      /SSL|certificate|subject/i,
    );
  });

  it("is renewed before it expires, and the new one is served", async () => {
    const first = await servedNotAfter(ca.port);
    assert.ok(
      first.getTime() - Date.now() <= 61_000,
      `a 60 s serving certificate, got ${first.toISOString()}`,
    );
    let renewed: { time: string; notAfter: string } | undefined;
    while (!renewed && Date.now() < first.getTime() + 5000) {
      await new Promise((resolve) => setTimeout(resolve, 200));
      renewed = ca.logs.map((line) => {
        try {
          return JSON.parse(line);
        } catch {
          return undefined;
        }
      }).find((entry) => entry?.msg === "serving certificate renewed");
    }
    assert.ok(renewed, `no renewal by ${first.toISOString()}:\n${ca.logs.join("\n")}`);
    // Half-life with up to 10% jitter: at 40-50% of 90 s from the backdated notBefore, so at
    // least half a minute before the old certificate expires.
    assert.ok(new Date(renewed.time).getTime() < first.getTime() - 30_000, JSON.stringify(renewed));
    assert.ok(new Date(renewed.notAfter) > first);
    assert.ok((await servedNotAfter(ca.port)) > first);
  });

  it("shorter than 20 s (a lifetime set in code, or the CA's own expiry near), is renewed before it expires", async () => {
    const shortDir = await tempDir();
    try {
      const configPath = await writeConfig(shortDir.path, { listen: { host: "127.0.0.1", port: 0 } });
      assert.equal((await cli(["ca", "init", "--config", configPath])).code, 0);
      const config = await loadConfig({ path: configPath });
      // Below what a configuration file may say (60 s at least), as the fault tests scale it.
      config.issuance = { defaultTtlSeconds: 4, maxTtlSeconds: 4 };
      const server = await startCaServer(config, { logger: silentLogger });
      try {
        const first = await servedNotAfter(server.port);
        assert.ok(
          first.getTime() - Date.now() <= 4000,
          `a 4 s serving certificate, got ${first.toISOString()}`,
        );
        await new Promise((resolve) => setTimeout(resolve, Math.max(0, first.getTime() - Date.now() - 300)));
        assert.ok(
          (await servedNotAfter(server.port)) > first,
          "a new certificate served before the first expired",
        );
      } finally {
        await server.close();
      }
    } finally {
      await shortDir.remove();
    }
  });

  it("a failed renewal is tried again within a tenth of what the served certificate has left", () => {
    const now = Date.parse("2026-12-06T00:00:00Z");
    const at = (ms: number) => new Date(now + ms);
    // A day left: a minute on, not a tenth of a day.
    assert.equal(servingRetryDelayMs(at(86_400_000), now), 60_000);
    // 50 s left: 5 s on, so it is tried about ten times before it expires (a fixed minute
    // would have let it expire).
    assert.equal(servingRetryDelayMs(at(50_000), now), 5000);
    // Close to or past expiry: every second, never at once in a loop.
    assert.equal(servingRetryDelayMs(at(4000), now), 1000);
    assert.equal(servingRetryDelayMs(at(-1000), now), 1000);
  });
});
