// The agent's SVID rotation against a real CA server on 127.0.0.1 over TLS: bootstrap with a
// single-use join token, renew over mutual TLS with the SVID it holds, deliver files atomically.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { setTimeout as sleep } from "node:timers/promises";
import { mkdir, mkdtemp, readdir, readFile, readlink, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  CertificateAuthority,
  importPrivateKeyPem,
  parseCertificates,
  SpiffeId,
  TrustBundle,
  verifySvid,
} from "../../mod.ts";
import {
  createJoinToken,
  initRoot,
  loadConfig,
  openKeyManager,
  type RunningCaServer,
  silentLogger,
  startCaServer,
} from "../../ca-server/mod.ts";
import { CaClient, CaRequestFailed, CaUnavailable, SvidRotator } from "../../agent/mod.ts";

const TRUST_DOMAIN = "agent.test";
const id = SpiffeId.fromServiceAccount(TRUST_DOMAIN, "default", "photos");
let dir: string;
let server: RunningCaServer;
let bundlePem: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "meshauth-agent-"));
  const config = await loadConfig({
    overrides: {
      trustDomain: TRUST_DOMAIN,
      dataDir: join(dir, "ca"),
      "listen.host": "127.0.0.1",
      "listen.port": 0,
    },
  });
  await initRoot(config, openKeyManager(config));
  server = await startCaServer(config, { logger: silentLogger });
  bundlePem = server.authorities.bundle().toPem();
});

after(async () => {
  await server?.close();
  await rm(dir, { recursive: true, force: true });
});

async function joinToken(isSingleUse = true): Promise<string> {
  return (await createJoinToken(server.store, {
    role: "workload",
    spiffeId: id.toString(),
    ttlSeconds: 600,
    isSingleUse,
  }))
    .token;
}

test("the rotator bootstraps with a join token and delivers a verifiable SVID through ..data, key 0600", async () => {
  const out = join(dir, "photos");
  const rotator = new SvidRotator({
    id,
    client: new CaClient({ url: server.url, caCertificatesPem: bundlePem }),
    credential: { kind: "token", token: await joinToken() },
    directory: out,
    keepAlive: false,
  });
  try {
    const held = await rotator.start();
    assert.equal(await readlink(join(out, "svid.pem")), "..data/svid.pem");
    const chain = await readFile(join(out, "svid.pem"), "utf8");
    const verified = await verifySvid(
      chain,
      TrustBundle.fromPem(TRUST_DOMAIN, await readFile(join(out, "svid_bundle.pem"), "utf8")),
    );
    assert.equal(verified.id.toString(), id.toString());
    assert.equal((await stat(join(out, "svid_key.pem"))).mode & 0o777, 0o600);
    const key = await importPrivateKeyPem(await readFile(join(out, "svid_key.pem"), "utf8"));
    const spki = new Uint8Array(await crypto.subtle.exportKey("spki", key.publicKey));
    assert.deepEqual(spki, parseCertificates(chain)[0].spki);
    assert.ok(held.expiresAt > held.notBefore);
  } finally {
    rotator.stop();
  }
});

test("a directory of the plain files an earlier rotator wrote: links replace them and the stale bundle.pem goes", async () => {
  const out = join(dir, "upgraded");
  await mkdir(out, { mode: 0o755 });
  for (const name of ["svid.pem", "svid_key.pem", "bundle.pem"]) {
    await writeFile(join(out, name), "from before");
  }
  const rotator = new SvidRotator({
    id,
    client: new CaClient({ url: server.url, caCertificatesPem: bundlePem }),
    credential: { kind: "token", token: await joinToken() },
    directory: out,
    keepAlive: false,
  });
  try {
    await rotator.start();
    assert.deepEqual((await readdir(out)).filter((n) => !n.startsWith("..")).sort(), [
      "svid.pem",
      "svid_bundle.pem",
      "svid_key.pem",
    ]);
    assert.equal(await readlink(join(out, "svid_key.pem")), "..data/svid_key.pem");
    assert.equal(await readFile(join(out, "svid_bundle.pem"), "utf8"), bundlePem);
  } finally {
    rotator.stop();
  }
});

test("after the single-use token is spent, the rotator renews over mTLS with its current SVID", async () => {
  const rotator = new SvidRotator({
    id,
    client: new CaClient({ url: server.url, caCertificatesPem: bundlePem }),
    credential: { kind: "token", token: await joinToken(true) },
  });
  try {
    const first = await rotator.start();
    const second = await rotator.rotate();
    assert.notEqual(second.serialNumber, first.serialNumber);
    assert.notEqual(second.privateKeyPem, first.privateKeyPem);
  } finally {
    rotator.stop();
  }
});

test("a spent single-use token is refused with the CA's problem code", async () => {
  const token = await joinToken(true);
  const client = new CaClient({ url: server.url, caCertificatesPem: bundlePem });
  const first = new SvidRotator({ id, client, credential: { kind: "token", token }, renewWithSvid: false });
  await first.start();
  first.stop();
  await assert.rejects(
    first.rotate(),
    (err: unknown) => err instanceof CaRequestFailed && err.status === 401,
  );
});

test("a rotator asking for an identity its token is not bound to is refused", async () => {
  const other = SpiffeId.fromServiceAccount(TRUST_DOMAIN, "default", "other");
  const rotator = new SvidRotator({
    id: other,
    client: new CaClient({ url: server.url, caCertificatesPem: bundlePem }),
    credential: { kind: "token", token: await joinToken() },
  });
  await assert.rejects(
    rotator.start(),
    (err: unknown) => err instanceof CaRequestFailed && err.status === 403,
  );
});

test("a CA that does not answer is reported as unavailable, not as a crash", async () => {
  const client = new CaClient({ url: "https://127.0.0.1:1", caCertificatesPem: bundlePem, timeoutMs: 2000 });
  await assert.rejects(client.trustBundlePem(), (err: unknown) => err instanceof CaUnavailable);
});

test("the client refuses a CA whose serving certificate its bundle does not verify", async () => {
  const otherRoot = await CertificateAuthority.createRoot({ trustDomain: "elsewhere.test" });
  const client = new CaClient({
    url: server.url,
    caCertificatesPem: otherRoot.bundle().toPem(),
    timeoutMs: 5000,
  });
  await assert.rejects(client.trustBundlePem(), (err: unknown) => err instanceof CaUnavailable);
});

test("the client refuses plain HTTP to a CA that is not on loopback, and https without the CA's bundle", () => {
  const code = (fn: () => unknown) => {
    try {
      fn();
    } catch (err) {
      return (err as { code?: string }).code;
    }
    return "no error";
  };
  assert.equal(code(() => new CaClient({ url: "http://ca.example:8080" })), "ERR_INVALID_ARGUMENT");
  assert.equal(code(() => new CaClient({ url: "https://ca.example:8443" })), "ERR_INVALID_ARGUMENT");
  assert.equal(code(() => new CaClient({ url: "not a url" })), "ERR_INVALID_ARGUMENT");
  assert.equal(code(() => new CaClient({ url: "ftp://127.0.0.1" })), "ERR_INVALID_ARGUMENT");
  assert.equal(code(() => new CaClient({ url: "http://127.0.0.1:8080" })), "no error");
});

test("a token with a line break is refused before anything is sent", async () => {
  const client = new CaClient({ url: server.url, caCertificatesPem: bundlePem });
  await assert.rejects(
    client.requestCertificate("csr", { kind: "token", token: "abc\r\nX-Injected: 1" }),
    { code: "ERR_INVALID_ARGUMENT" },
  );
});

test("concurrent rotations are serialized: the files on disk always hold a matching key and certificate", async () => {
  const out = join(dir, "race");
  const rotator = new SvidRotator({
    id,
    client: new CaClient({ url: server.url, caCertificatesPem: bundlePem }),
    credential: { kind: "token", token: await joinToken(false) },
    renewWithSvid: false,
    directory: out,
  });
  try {
    const results = await Promise.all([
      rotator.rotate(),
      rotator.rotate(),
      rotator.rotate(),
      rotator.rotate(),
    ]);
    assert.equal(new Set(results.map((r) => r.serialNumber)).size, 4);
    const key = await importPrivateKeyPem(await readFile(join(out, "svid_key.pem"), "utf8"));
    const spki = new Uint8Array(await crypto.subtle.exportKey("spki", key.publicKey));
    assert.deepEqual(spki, parseCertificates(await readFile(join(out, "svid.pem"), "utf8"))[0].spki);
    assert.equal(rotator.current?.serialNumber, results[3].serialNumber);
  } finally {
    rotator.stop();
  }
});

/** Runs a script that only starts a rotator; answers its output lines and whether it exited. */
async function onlyStart(
  keepAlive: boolean,
  watchMs: number,
  enoughRotations = Infinity,
): Promise<{ lines: string[]; exitedAfterMs?: number }> {
  const script = join(dir, `only-start-${keepAlive}.mts`);
  const agentModule = new URL("../../agent/mod.ts", import.meta.url).pathname;
  await writeFile(
    script,
    `import { CaClient, SvidRotator } from ${JSON.stringify(agentModule)};
const rotator = new SvidRotator({
  id: process.env.TEST_ID!,
  client: new CaClient({ url: process.env.TEST_URL!, caCertificatesPem: process.env.TEST_BUNDLE }),
  credential: { kind: "token", token: process.env.TEST_TOKEN },
  ttlSeconds: 8,
  ${keepAlive ? "" : "keepAlive: false,"}
  onRotate: (svid) => console.log("rotated", svid.serialNumber),
});
await rotator.start();
`,
  );
  const node = typeof (globalThis as { Deno?: unknown }).Deno === "undefined" ? process.execPath : "node";
  const started = Date.now();
  const child = spawn(node, ["--import", "tsx", script], {
    cwd: new URL("../..", import.meta.url).pathname,
    env: {
      ...process.env,
      TEST_ID: id.toString(),
      TEST_URL: server.url,
      TEST_BUNDLE: bundlePem,
      TEST_TOKEN: await joinToken(),
    },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const lines: string[] = [];
  let enough: () => void = () => {};
  const seenEnough = new Promise<undefined>((resolve) => enough = () => resolve(undefined));
  child.stdout.on("data", (d) => {
    lines.push(...String(d).trim().split("\n"));
    if (lines.filter((l) => l.startsWith("rotated")).length >= enoughRotations) enough();
  });
  const exited = new Promise<number>((resolve) => child.once("exit", () => resolve(Date.now() - started)));
  const watching = new AbortController();
  const exitedAfterMs = await Promise.race([
    exited,
    seenEnough,
    sleep(watchMs, undefined, { signal: watching.signal }),
  ]);
  watching.abort();
  if (exitedAfterMs === undefined) {
    child.kill("SIGTERM");
    await exited;
  }
  return { lines, exitedAfterMs };
}

test("a script that only starts the rotator stays alive and renews", async () => {
  // 8 s certificates: renewed 3.2 to 4 s after issuance (the old code's unref'd timer let such
  // a script exit after about a second, before any renewal).
  const { lines, exitedAfterMs } = await onlyStart(true, 9000, 2);
  assert.equal(exitedAfterMs, undefined, `the script exited after ${exitedAfterMs} ms: ${lines.join("; ")}`);
  assert.ok(lines.filter((l) => l.startsWith("rotated")).length >= 2, lines.join("; "));
});

test("with keepAlive false the rotator does not hold the process open", async () => {
  const { lines, exitedAfterMs } = await onlyStart(false, 15_000);
  assert.notEqual(exitedAfterMs, undefined, "the script exited by itself");
  assert.equal(lines.filter((l) => l.startsWith("rotated")).length, 1);
});
