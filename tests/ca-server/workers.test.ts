// Two worker processes (node:cluster) serving one port on one embedded file store: what one
// worker issues the other lists, and a revocation through either reaches every worker's CRL.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { CaStore } from "../../ca-server/mod.ts";
import {
  type CaProcess,
  cli,
  csrFor,
  openTestStore,
  postJson,
  run,
  startCa,
  tempDir,
  token,
  TRUST_DOMAIN,
  writeConfig,
} from "./helpers.ts";

/** Both workers announce themselves; waits (at most 5 s) for the second. */
async function bothListening(ca: CaProcess): Promise<void> {
  for (let i = 0; i < 100 && ca.logs.filter((l) => l.includes('"msg":"listening"')).length < 2; i++) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe("CA with two worker processes on one file store", () => {
  let dir: { path: string; remove(): Promise<void> };
  let ca: CaProcess;
  let store: CaStore;

  before(async () => {
    dir = await tempDir();
    const config = await writeConfig(dir.path, {
      listen: { host: "127.0.0.1", port: 0, plainHttp: true },
      workers: 2,
      rateLimit: false,
      log: { level: "info" },
    });
    const init = await cli(["ca", "init", "--config", config]);
    assert.equal(init.code, 0, init.stderr);
    ca = await startCa(config);
    await bothListening(ca);
    store = await openTestStore(dir.path);
  });

  after(async () => {
    await ca?.stop();
    await store?.close();
    await dir?.remove();
  });

  it("listens with both workers on one port, though the config asked for any (port 0)", () => {
    const ports = ca.logs.filter((l) => l.includes('"msg":"listening"')).map((l) => JSON.parse(l).port);
    assert.equal(ports.length, 2);
    assert.equal(ports[0], ports[1]);
    assert.equal(ports[0], ca.port);
  });

  it("lists, revokes and publishes in the CRL across workers", async () => {
    const id = `spiffe://${TRUST_DOMAIN}/ns/cluster/sa/app`;
    const t = await token(store, { role: "workload", spiffeId: id, isSingleUse: false });
    const serials = await Promise.all(Array.from({ length: 12 }, async () => {
      const reply = await postJson(`${ca.url}/v1/certificates`, { csr: (await csrFor(id)).csr }, {
        authorization: `Bearer ${t}`,
        connection: "close",
      });
      assert.equal(reply.status, 201, JSON.stringify(reply.json));
      return reply.json.serialNumber as string;
    }));
    const admin = await token(store, { role: "admin" });
    const listed = await fetch(`${ca.url}/v1/certificates?spiffeId=${encodeURIComponent(id)}&limit=100`, {
      headers: { authorization: `Bearer ${admin}`, connection: "close" },
    }).then((r) => r.json());
    assert.deepEqual(
      listed.certificates.map((c: { serialNumber: string }) => c.serialNumber).sort(),
      [...serials].sort(),
    );

    const revoked = await postJson(`${ca.url}/v1/revocations`, {
      serialNumber: serials[0],
      reason: "keyCompromise",
    }, {
      authorization: `Bearer ${admin}`,
    });
    assert.equal(revoked.status, 200);
    // Fresh connections land on either worker; each must list the serial (within its 100 ms recheck).
    for (let i = 0; i < 6; i++) {
      let text = "";
      for (let attempt = 0; attempt < 10 && !text.includes(serials[0].toUpperCase()); attempt++) {
        if (attempt) await new Promise((resolve) => setTimeout(resolve, 60));
        const crlPath = `${dir.path}/crl-${i}.der`;
        await run("curl", ["-sS", "-H", "Connection: close", "-o", crlPath, `${ca.url}/v1/crl`]);
        text = (await run("openssl", ["crl", "-inform", "DER", "-in", crlPath, "-noout", "-text"])).stdout
          .toUpperCase();
      }
      assert.ok(
        text.includes(`SERIAL NUMBER: ${serials[0].toUpperCase()}`),
        `CRL ${i} lacks the revoked serial`,
      );
    }
    assert.ok(ca.logs.filter((l) => l.includes('"msg":"listening"')).length >= 2, "two workers listened");
  });
});

describe("CA with two worker processes over TLS", () => {
  let dir: { path: string; remove(): Promise<void> };
  let ca: CaProcess;

  before(async () => {
    dir = await tempDir();
    const config = await writeConfig(dir.path, {
      listen: { host: "127.0.0.1", port: 0 },
      workers: 2,
      log: { level: "info" },
    });
    const init = await cli(["ca", "init", "--config", config]);
    assert.equal(init.code, 0, init.stderr);
    ca = await startCa(config);
    await bothListening(ca);
  });

  after(async () => {
    await ca?.stop();
    await dir?.remove();
  });

  it("listens with both workers on one port, and answers over TLS", async () => {
    const ports = ca.logs.filter((l) => l.includes('"msg":"listening"')).map((l) => JSON.parse(l).port);
    assert.equal(ports.length, 2, ca.logs.join("\n"));
    assert.equal(ports[0], ports[1]);
    for (let i = 0; i < 4; i++) {
      const health = await run("curl", [
        "-sk",
        "--max-time",
        "10",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        `${ca.url}/healthz`,
      ]);
      assert.equal(health.code, 0, health.stderr);
      assert.equal(health.stdout, "200");
    }
  });
});
