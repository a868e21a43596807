// Key exchange: the hybrid post-quantum group X25519MLKEM768 is offered first and negotiated
// wherever the runtime's TLS library has it (Node 24, OpenSSL 3.5), classical groups are the
// fallback for a peer without it, and the negotiated group is counted; where the runtime lacks
// it (Node 20, OpenSSL 3.0), the proxy says so and uses X25519, and probing for it leaves no
// OpenSSL error behind for the next key import.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createPrivateKey, generateKeyPairSync } from "node:crypto";
import type { MeshProxy } from "../../agent/mod.ts";
import { ConfigError } from "../../internal/mod.ts";
import { echoServer, exchange, IDS, startProxy, tempDir, TestCa, TestSource } from "./proxy-support.ts";
import { POST_QUANTUM_GROUP, supportsGroup } from "../../agent/proxy/tls-settings.ts";

let dir: { path: string; remove: () => Promise<void> };
let sources: Record<string, TestSource>;
let echo: Awaited<ReturnType<typeof echoServer>>;
const closers: (() => Promise<void>)[] = [];

before(async () => {
  dir = await tempDir();
  const ca = await TestCa.create();
  echo = await echoServer();
  sources = {
    client: new TestSource(await ca.issue(IDS.frontend), ca.bundle()),
    server: new TestSource(await ca.issue(IDS.backend), ca.bundle()),
  };
});

after(async () => {
  for (const close of closers.reverse()) await close();
  await echo?.close();
  await dir?.remove();
});

async function pair(name: string, serverGroups?: string[]): Promise<{ client: MeshProxy; port: number }> {
  const servers = await startProxy(
    {
      ...(serverGroups ? { tls: { groups: serverGroups } } : {}),
      inbound: [{
        name: `${name}-in`,
        workload: "server",
        listen: "127.0.0.1:0",
        forward: `127.0.0.1:${echo.port}`,
        defaultAction: "ALLOW",
      }],
    },
    dir.path,
    sources,
  );
  closers.push(() => servers.proxy.stop());
  const clients = await startProxy(
    {
      outbound: [{
        name: `${name}-out`,
        workload: "client",
        listen: 0,
        upstream: `127.0.0.1:${servers.port(`${name}-in`)}`,
        allowedIds: [IDS.backend],
      }],
    },
    dir.path,
    sources,
  );
  closers.push(() => clients.proxy.stop());
  return { client: clients.proxy, port: clients.port(`${name}-out`) };
}

const hasHybrid = supportsGroup(POST_QUANTUM_GROUP);
// Deno's node:tls accepts any ecdhCurve (it checks nothing and negotiates on its own) and has
// no getEphemeralKeyInfo(), so groups can be neither chosen nor seen there.
const groups = "Deno" in globalThis && supportsGroup("NoSuchGroup")
  ? "Deno's node:tls ignores ecdhCurve and cannot report the negotiated group"
  : false;

test(`two proxies negotiate ${hasHybrid ? POST_QUANTUM_GROUP : "X25519"} on this runtime, and count it`, {
  timeout: 30_000,
  skip: groups,
}, async () => {
  const { client, port } = await pair("default-groups");
  assert.equal((await exchange({ port }, "hello")).reply, "hello");
  const expected = hasHybrid ? POST_QUANTUM_GROUP : "X25519";
  assert.equal(client.metrics.tlsGroups.value({ group: expected }), 1, client.metrics.render());
  assert.equal(client.groups[0], expected);
  assert.match(
    client.metrics.render(),
    new RegExp(`meshauth_proxy_post_quantum_offered ${hasHybrid ? 1 : 0}`),
  );
});

test("a peer without the hybrid group gets a classical one", { timeout: 30_000, skip: groups }, async () => {
  const { client, port } = await pair("classical-peer", ["X25519"]);
  assert.equal((await exchange({ port }, "hello")).reply, "hello");
  assert.equal(client.metrics.tlsGroups.value({ group: "X25519" }), 1, client.metrics.render());
});

test(
  "a configured group the runtime does not have is refused with the groups it has",
  { skip: groups },
  async () => {
    await assert.rejects(
      startProxy({ tls: { groups: ["X25519", "NoSuchGroup"] } }, dir.path, {}),
      (err: Error) => {
        assert.ok(err instanceof ConfigError, `${err.name}: ${err.message}`);
        assert.equal(err.code, "ERR_CONFIG");
        assert.match(
          err.problems[0],
          /proxy\.tls\.groups: this runtime's TLS library does not offer NoSuchGroup \(it has .*X25519/,
        );
        return true;
      },
    );
  },
);

test("probing a group the runtime refuses leaves no error behind: a key imports right after it", () => {
  // Node 20 (OpenSSL 3.0) left the refusal on the thread's OpenSSL error queue, where the next
  // createPrivateKey found it and failed with ERR_SSL_PASSED_INVALID_ARGUMENT.
  const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const pem = privateKey.export({ type: "pkcs8", format: "pem" }) as string;
  supportsGroup("NoSuchGroup");
  assert.equal(createPrivateKey(pem).asymmetricKeyType, "ec");
});
