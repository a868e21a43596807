// The CA server's parts on their own: configuration, key files, the file store's crash
// safety, join tokens, the rate limiter and problem bodies.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { appendFile, chmod, mkdir, readFile, stat, utimes, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import {
  CertificateAuthority,
  createCsr,
  generateKeyPair,
  type KeyAlgorithm,
  verifySvid,
} from "../../mod.ts";
import {
  Authorities,
  ConfigError,
  createJoinToken,
  FileKeyManager,
  FileStore,
  JoinTokenAuthenticator,
  KeyFileError,
  loadConfig,
  Problem,
  RateLimiter,
  staticNodeWorkloads,
} from "../../ca-server/mod.ts";
import { constantTimeEqual } from "../../ca-server/auth/join-token.ts";
import { tempDir } from "./helpers.ts";

describe("loadConfig", () => {
  it("gives development defaults with no file", async () => {
    const config = await loadConfig({ env: {}, cwd: "/srv" });
    assert.equal(config.listen.host, "127.0.0.1");
    assert.equal(config.listen.port, 8443);
    assert.equal(config.listen.plainHttp, false);
    assert.equal(config.dataDir, "/srv/.meshauth");
    assert.deepEqual(config.store, {
      kind: "file",
      fsync: true,
      segmentBytes: 64 * 1024 * 1024,
      keepSegments: 32,
      retainExpiredSeconds: 86400,
    });
  });

  it("reads YAML and lets the environment override it", async () => {
    const dir = await tempDir();
    try {
      const path = join(dir.path, "ca.yaml");
      await writeFile(path, "trustDomain: prod.example\nlisten:\n  port: 9443\n");
      const config = await loadConfig({
        path,
        env: { MESHAUTH_LISTEN_PORT: "9555", MESHAUTH_STORE_URL: "postgres://db/meshauth" },
      });
      assert.equal(config.trustDomain, "prod.example");
      assert.equal(config.listen.port, 9555);
      assert.deepEqual(config.store, { kind: "postgres", url: "postgres://db/meshauth", maxConnections: 10 });
    } finally {
      await dir.remove();
    }
  });

  it("resolves relative paths in a file against the file's directory, from the environment against the shell's", async () => {
    const dir = await tempDir();
    try {
      const path = join(dir.path, "etc", "ca.yaml");
      await mkdir(join(dir.path, "etc"));
      await writeFile(path, "dataDir: state\nkeys:\n  dir: ../keys\n");
      const fromFile = await loadConfig({ path, env: {}, cwd: "/somewhere/else" });
      assert.equal(fromFile.dataDir, join(dir.path, "etc", "state"));
      assert.equal(fromFile.keys.dir, join(dir.path, "keys"));
      const fromEnv = await loadConfig({ path, env: { MESHAUTH_DATA_DIR: "here" }, cwd: "/somewhere/else" });
      assert.equal(fromEnv.dataDir, "/somewhere/else/here");
    } finally {
      await dir.remove();
    }
  });

  it("reports every bad field with its path", async () => {
    const dir = await tempDir();
    try {
      const path = join(dir.path, "ca.json");
      await writeFile(
        path,
        JSON.stringify({
          trustDomain: "Bad Domain",
          listen: { port: "http" },
          store: { kind: "mysql" },
          colour: 1,
        }),
      );
      const err = await loadConfig({ path, env: {} }).catch((e) => e);
      assert.ok(err instanceof ConfigError);
      assert.equal(err.problems.length, 4, err.message);
      assert.match(err.message, /trustDomain: invalid trust domain/);
      assert.match(err.message, /listen\.port: expected a whole number/);
      assert.match(err.message, /store\.kind: expected "file" or "postgres"/);
      assert.match(err.message, /colour: unknown field/);
    } finally {
      await dir.remove();
    }
  });

  it("refuses misspelt keys at every depth, and names the variable of a bad environment value", async () => {
    const dir = await tempDir();
    try {
      const path = join(dir.path, "ca.yaml");
      await writeFile(
        path,
        [
          "listen: { port: 0, prot: 1 }",
          "issuance: { defaultTTL: 60 }",
          "store: { urll: x }",
          "nodes: { node-a: { workload: [] } }",
          "kubernetes: { audiences: [a], jwksUrl: https://k, issuer: https://k, tokenreview: {} }",
          "log: { format: json }",
          "rateLimit: yes",
          "",
        ].join("\n"),
      );
      const err = await loadConfig({ path, env: { MESHAUTH_WORKERS: "many" } }).catch((e) => e);
      assert.ok(err instanceof ConfigError);
      for (
        const expected of [
          /listen\.prot: unknown field/,
          /issuance\.defaultTTL: unknown field \(known: defaultTtlSeconds, maxTtlSeconds\)/,
          /store\.urll: unknown field/,
          /nodes\.node-a\.workload: unknown field/,
          /kubernetes\.tokenreview: unknown field/,
          /log\.format: unknown field/,
          /rateLimit: expected a mapping or false/,
          /workers \(from MESHAUTH_WORKERS\): expected a whole number/,
        ]
      ) assert.match(err.message, expected);
      assert.equal(err.problems.length, 8, err.message);
    } finally {
      await dir.remove();
    }
  });

  it("refuses plain HTTP on a non-loopback address", async () => {
    const err = await loadConfig({
      env: {},
      overrides: { "listen.plainHttp": true, "listen.host": "0.0.0.0" },
    })
      .catch((e) => e);
    assert.ok(err instanceof ConfigError);
    assert.match(err.message, /plain HTTP is allowed only on a loopback address/);
  });

  it("says what is wrong with a file that is not YAML", async () => {
    const dir = await tempDir();
    try {
      const path = join(dir.path, "ca.yaml");
      await writeFile(path, "listen:\n- port: 1\n host: a\n");
      await assert.rejects(loadConfig({ path, env: {} }), (err: Error) => {
        // One complete line: the yaml library's code frame and the colon before it are dropped.
        assert.equal(
          err.message.split("\n").at(-1),
          "  - not valid YAML: Sequence item without - indicator at line 3, column 1",
        );
        return true;
      });
    } finally {
      await dir.remove();
    }
  });
});

describe("FileKeyManager", () => {
  it("writes the key with mode 0600 and signs with it", async () => {
    const dir = await tempDir();
    try {
      const keys = new FileKeyManager(join(dir.path, "keys"));
      const root = await CertificateAuthority.createRoot({ trustDomain: "keys.example" });
      const record = await keys.add({ ...(await root.exportPem()), activeFrom: new Date() });
      assert.equal((await stat(join(dir.path, "keys", `${record.id}.key.pem`))).mode & 0o777, 0o600);
      const signer = await keys.signer(record.id);
      assert.ok((await signer.sign(new Uint8Array([1, 2, 3]))).length > 0);
      assert.equal((await keys.list())[0].id, record.id);
    } finally {
      await dir.remove();
    }
  });

  for (const algorithm of ["ECDSA-P256", "ECDSA-P384", "Ed25519", "RSA-2048"] as KeyAlgorithm[]) {
    it(`signs certificates that verify with an ${algorithm} CA key (node:crypto signer)`, async () => {
      const dir = await tempDir();
      try {
        const keys = new FileKeyManager(join(dir.path, "keys"));
        const root = await CertificateAuthority.createRoot({
          trustDomain: "keys.example",
          keyAlgorithm: algorithm,
        });
        await keys.add({ ...(await root.exportPem()), activeFrom: new Date(Date.now() - 1000) });
        const authorities = await Authorities.load(keys, { trustDomain: "keys.example" });
        const id = "spiffe://keys.example/w";
        const svid = await authorities.active().ca.issue(
          await createCsr({ keys: await generateKeyPair(), id }),
          { id },
        );
        assert.equal((await verifySvid(svid.chainPem, authorities.bundle())).id.toString(), id);
        const crl = await authorities.active().ca.createCrl({ revoked: [], nextUpdateSeconds: 60 });
        assert.match(crl, /BEGIN X509 CRL/);
      } finally {
        await dir.remove();
      }
    });
  }

  it("refuses a key file that group or others can read", async () => {
    const dir = await tempDir();
    try {
      const keys = new FileKeyManager(join(dir.path, "keys"));
      const root = await CertificateAuthority.createRoot({ trustDomain: "keys.example" });
      const record = await keys.add({ ...(await root.exportPem()), activeFrom: new Date() });
      await chmod(join(dir.path, "keys", `${record.id}.key.pem`), 0o644);
      const fresh = new FileKeyManager(join(dir.path, "keys"));
      await assert.rejects(
        fresh.signer(record.id),
        (err) => err instanceof KeyFileError && /mode 644/.test(err.message),
      );
    } finally {
      await dir.remove();
    }
  });
});

describe("FileStore", () => {
  const cert = (serialNumber: string, spiffeId = "spiffe://s.example/a") => ({
    serialNumber,
    spiffeId,
    notBefore: new Date(),
    notAfter: new Date(Date.now() + 3600_000),
    issuedAt: new Date(),
    requester: spiffeId,
    method: "join-token",
    authorityId: "a1",
  });

  it("keeps what was committed when a crash tore the journal's last line", async () => {
    const dir = await tempDir();
    try {
      const store = new FileStore(dir.path);
      await store.open();
      await store.recordIssuance(cert("01"));
      await store.close();
      // A crash in the middle of an append leaves half a line.
      await appendFile(join(dir.path, "journal.jsonl"), '{"kind":"certificate","serialNumber":"02","spi');
      const reopened = new FileStore(dir.path);
      await reopened.open();
      await reopened.recordIssuance(cert("03"));
      const serials = (await reopened.listCertificates({})).map((c) => c.serialNumber).sort();
      assert.deepEqual(serials, ["01", "03"]);
      await reopened.close();
    } finally {
      await dir.remove();
    }
  });

  it("keeps the previous state when a write was interrupted before its rename", async () => {
    const dir = await tempDir();
    try {
      const store = new FileStore(dir.path);
      await store.open();
      await store.recordIssuance(cert("0a"));
      await store.revoke({ serialNumber: "0a", reason: "superseded" }, new Date());
      await store.close();
      // The temporary file of an interrupted write is ignored; state.json is whole.
      const torn = join(dir.path, "state.json.0b9e2a4c-8f0e-4c8e-9d6a-2f4b7c1e5a3d.tmp");
      await writeFile(torn, '{"version":1,"revis');
      const longAgo = new Date(Date.now() - 3600_000);
      await utimes(torn, longAgo, longAgo);
      const reopened = new FileStore(dir.path);
      await reopened.open();
      assert.equal(await reopened.isRevoked("0a"), true);
      assert.equal(await reopened.revocationRevision(), 1);
      // ... and removed, as old as it is.
      assert.equal(existsSync(torn), false);
      await reopened.close();
    } finally {
      await dir.remove();
    }
  });

  it("gives unique increasing CRL numbers to two stores on one directory", async () => {
    const dir = await tempDir();
    try {
      const a = new FileStore(dir.path);
      const b = new FileStore(dir.path);
      await a.open();
      await b.open();
      const numbers = await Promise.all(
        Array.from({ length: 20 }, async (_, i) => (await (i % 2 ? a : b).nextCrl(new Date())).crlNumber),
      );
      assert.equal(new Set(numbers).size, 20);
      assert.equal(numbers.reduce((m, n) => (n > m ? n : m), 0n), 20n);
      await a.close();
      await b.close();
    } finally {
      await dir.remove();
    }
  });

  it("spends a single-use token once across two stores on one directory", async () => {
    const dir = await tempDir();
    try {
      const a = new FileStore(dir.path);
      const b = new FileStore(dir.path);
      await a.open();
      await b.open();
      const { record } = await createJoinToken(a, {
        role: "workload",
        spiffeId: "spiffe://s.example/x",
        ttlSeconds: 60,
      });
      const results = await Promise.all([
        a.markJoinTokenUsed(record.id, new Date()),
        b.markJoinTokenUsed(record.id, new Date()),
      ]);
      assert.deepEqual(results.sort(), [false, true]);
      await a.close();
      await b.close();
    } finally {
      await dir.remove();
    }
  });

  it("stores join tokens only as a hash of their secret", async () => {
    const dir = await tempDir();
    try {
      const store = new FileStore(dir.path);
      await store.open();
      const { token } = await createJoinToken(store, { role: "admin", ttlSeconds: 60 });
      await store.close();
      const state = await readFile(join(dir.path, "state.json"), "utf8");
      assert.ok(!state.includes(token.split(".")[1]));
    } finally {
      await dir.remove();
    }
  });
});

describe("JoinTokenAuthenticator", () => {
  it("maps a node token to the node's identity and its workloads", async () => {
    const dir = await tempDir();
    try {
      const store = new FileStore(dir.path);
      await store.open();
      const { token } = await createJoinToken(store, { role: "node", node: "n1", ttlSeconds: 60 });
      const auth = new JoinTokenAuthenticator({
        store,
        trustDomain: "n.example",
        nodeWorkloads: staticNodeWorkloads({ n1: ["spiffe://n.example/w1"] }),
      });
      const principal = await auth.authenticate({ bearerToken: token });
      assert.deepEqual(principal?.allowedIds, ["spiffe://n.example/node/n1", "spiffe://n.example/w1"]);
      assert.equal(await auth.authenticate({ bearerToken: "eyJ.a.b" }), undefined);
      await store.close();
    } finally {
      await mkdir(dir.path, { recursive: true });
      await dir.remove();
    }
  });

  it("compares digests without regard to where they differ", () => {
    assert.equal(constantTimeEqual(new Uint8Array([1, 2, 3]), new Uint8Array([1, 2, 3])), true);
    assert.equal(constantTimeEqual(new Uint8Array([1, 2, 3]), new Uint8Array([1, 2, 4])), false);
    assert.equal(constantTimeEqual(new Uint8Array([1, 2]), new Uint8Array([1, 2, 0])), false);
  });
});

describe("RateLimiter", () => {
  it("allows a burst, then refuses until tokens refill", () => {
    let now = 0;
    const limiter = new RateLimiter({ requestsPerSecond: 2, burst: 3, now: () => now });
    const take = (key: string) => limiter.take([{ key }]);
    assert.deepEqual([1, 2, 3, 4].map(() => take("a").allowed), [true, true, true, false]);
    assert.equal(take("b").allowed, true, "keys are independent");
    now = 500;
    assert.equal(take("a").allowed, true);
  });
});

describe("createCaApp", () => {
  it("imports no node: module, directly or through ca-server files", async () => {
    const root = new URL("../../ca-server/", import.meta.url);
    const seen = new Set<string>();
    const nodeImports: string[] = [];
    const visit = async (url: URL) => {
      if (seen.has(url.href) || !url.href.startsWith(root.href)) return;
      seen.add(url.href);
      const text = await readFile(url, "utf8");
      for (const m of text.matchAll(/^(?:import|export)[^"']*?from\s+["']([^"']+)["']/gm)) {
        if (m[1].startsWith("node:")) nodeImports.push(`${url.pathname}: ${m[1]}`);
        else if (m[1].startsWith(".")) await visit(new URL(m[1], url));
      }
    };
    await visit(new URL("app.ts", root));
    assert.ok(seen.size > 5, `walked ${seen.size} files`);
    assert.deepEqual(nodeImports, []);
  });
});

describe("Problem", () => {
  it("renders an RFC 9457 body with a stable code", async () => {
    const response = new Problem("ERR_MISSING_FIELD", "no csr", { field: "csr" }).toResponse();
    assert.equal(response.status, 400);
    assert.equal(response.headers.get("content-type"), "application/problem+json");
    const body = await response.json();
    assert.deepEqual(body, {
      type: "urn:meshauth:problem:missing-field",
      title: "A required field is missing",
      status: 400,
      detail: "no csr",
      code: "ERR_MISSING_FIELD",
      field: "csr",
    });
  });
});
