// Several processes on one data directory, killed with SIGKILL at random points, some while
// they hold the store's lock: at most one process ever holds it (fixtures/lock-holder.ts
// checks from inside), and two CA servers on one data directory never repeat a CRL number,
// never accept a single-use token twice and never lose an issued certificate. Processes that
// share a host name but not a pid namespace (containers of one pod) never take each other's
// lock for dead.
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { parseCrl } from "../../mod.ts";
import { toHex } from "../../internal/mod.ts";
import { FileLock } from "../../ca-server/store/file-lock.ts";
import { isCi } from "../runtimes/runtimes.mjs";
import {
  type CaProcess,
  cli,
  csrFor,
  openTestStore,
  ROOT,
  run,
  SERVER_COMMAND,
  startCa,
  tempDir,
  token,
  TRUST_DOMAIN,
  writeConfig,
} from "./helpers.ts";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface Holder {
  child: ChildProcess;
  exited: Promise<void>;
}

function startHolder(dir: string, witness: string, owner: string): Promise<Holder> {
  const child = spawn(
    SERVER_COMMAND[0],
    [...SERVER_COMMAND.slice(1), "tests/ca-server/fixtures/lock-holder.ts", dir, witness, owner],
    { cwd: ROOT, stdio: ["ignore", "pipe", "inherit"] },
  );
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("a lock holder did not start within 30 s")), 30_000);
    child.stdout!.once("data", () => {
      clearTimeout(timer);
      resolve({ child, exited });
    });
    child.once("exit", (code) => reject(new Error(`a lock holder exited with ${code} before starting`)));
  });
}

describe("the file store's lock, with holders killed at random points", () => {
  it("is never held by two live processes at once", async (t) => {
    const dir = await tempDir();
    try {
      const witness = join(dir.path, "witness");
      const owner = join(dir.path, "owner");
      writeFileSync(witness, "");
      writeFileSync(owner, "");
      const lockDir = join(dir.path, "lock");
      const holders = await Promise.all(
        Array.from({ length: 4 }, () => startHolder(lockDir, witness, owner)),
      );
      let kills = 0;
      let killsWhileHolding = 0;
      const starting: Promise<void>[] = [];
      // A killed holder is replaced in the background (a start takes most of a second), so the
      // others keep contending meanwhile.
      const replace = () => {
        const started = startHolder(lockDir, witness, owner).then((h) => void holders.push(h));
        starting.push(started);
      };
      try {
        const deadline = Date.now() + 8000;
        while (Date.now() < deadline) {
          await sleep(80 + Math.random() * 200);
          if (holders.length < 2) continue;
          // Mostly the one that holds the lock now (the owner file names it), sometimes any.
          const holding = Number(readFileSync(owner, "utf8") || 0);
          const victim = holders.find((h) => h.child.pid === holding && Math.random() < 0.75) ??
            holders[Math.floor(Math.random() * holders.length)];
          if (victim.child.pid === holding) killsWhileHolding++;
          holders.splice(holders.indexOf(victim), 1);
          victim.child.kill("SIGKILL");
          await victim.exited;
          kills++;
          replace();
        }
      } finally {
        await Promise.allSettled(starting);
        for (const h of holders) h.child.kill("SIGKILL");
        await Promise.all(holders.map((h) => h.exited));
      }
      const lines = readFileSync(witness, "utf8").split("\n").filter(Boolean);
      const violations = lines.filter((l) => l.startsWith("VIOLATION"));
      const entries = lines.filter((l) => l.startsWith("enter")).length;
      t.diagnostic(`${entries} entries, ${kills} kills, ${killsWhileHolding} of them while holding`);
      assert.deepEqual(
        violations,
        [],
        `${violations.length} violations in ${entries} entries, ${kills} kills`,
      );
      assert.ok(entries > 200, `only ${entries} entries`);
      assert.ok(killsWhileHolding >= 5, `only ${killsWhileHolding} of ${kills} kills hit a holder`);
    } finally {
      await dir.remove();
    }
  });
});

/** A new pid namespace (with its own /proc) for the command; its processes die with `unshare`. */
const UNSHARE = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"];

/** Runs fixtures/lock-once.ts (in a pid namespace of its own with `isolated`): its first line. */
function lockOnce(
  dir: string,
  mode: "hold" | "try",
  isolated: boolean,
): { child: ChildProcess; line: Promise<string>; exited: Promise<void> } {
  const command = [...(isolated ? UNSHARE : []), ...SERVER_COMMAND, "tests/ca-server/fixtures/lock-once.ts"];
  const child = spawn(command[0], [...command.slice(1), dir, mode], {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  let stderr = "";
  child.stderr!.on("data", (d) => stderr += d);
  const line = new Promise<string>((resolve, reject) => {
    let out = "";
    const timer = setTimeout(
      () => reject(new Error(`lock-once ${mode} printed nothing in 30 s: ${stderr}`)),
      30_000,
    );
    child.stdout!.on("data", (d) => {
      out += d;
      if (!out.includes("\n")) return;
      clearTimeout(timer);
      resolve(out.slice(0, out.indexOf("\n")));
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`lock-once ${mode} exited with ${code} before a line: ${stderr}`));
    });
  });
  return { child, line, exited };
}

describe("the file store's lock across pid namespaces on one host", () => {
  for (const holderIsolated of [false, true]) {
    const [holderWhere, contenderWhere] = holderIsolated
      ? ["a pid namespace of its own", "the host's"]
      : ["the host's pid namespace", "a pid namespace of its own"];
    it(`is not taken from a holder in ${holderWhere} by a process in ${contenderWhere}`, async (t) => {
      // Root and util-linux make one here; a CI runner without them must say so, not pass.
      const probe = await run("unshare", [...UNSHARE.slice(1), "true"]);
      if (probe.code !== 0) {
        const reason = `unshare cannot make a pid namespace here: ${probe.stderr.trim()}`;
        if (isCi) assert.fail(reason);
        t.skip(reason);
        return;
      }
      const dir = await tempDir();
      const holder = lockOnce(join(dir.path, "lock"), "hold", holderIsolated);
      try {
        assert.equal(await holder.line, "held");
        const contender = lockOnce(join(dir.path, "lock"), "try", !holderIsolated);
        const outcome = await contender.line;
        await contender.exited;
        assert.match(outcome, /^busy: .*held by pid \d+ in pid namespace \d+/);
        assert.equal(readdirSync(join(dir.path, "lock")).length, 1, "the holder's file is still there");
      } finally {
        holder.child.kill("SIGKILL");
        await holder.exited;
        await dir.remove();
      }
    });
  }

  it("takes a foreign holder's file for dead only once it has gone untouched for staleMs", async () => {
    const dir = await tempDir();
    try {
      const lockDir = join(dir.path, "lock");
      mkdirSync(lockDir);
      // A holder on this host in another pid namespace, with a pid that is free here.
      const foreign = join(
        lockDir,
        `${encodeURIComponent(hostname())}~0123456789ab~4026599999~999999~1~00.lock`,
      );
      writeFileSync(foreign, "");
      const lock = new FileLock(lockDir, { staleMs: 2000 });
      assert.equal(lock.tryAcquire(), undefined, "a fresh foreign file counts as held");
      const old = new Date(Date.now() - 3000);
      utimesSync(foreign, old, old);
      const held = lock.tryAcquire();
      assert.ok(held, "a foreign file untouched for longer than staleMs is broken");
      assert.deepEqual(readdirSync(lockDir).filter((n) => n.includes("4026599999")), []);
      held.release();
    } finally {
      await dir.remove();
    }
  });

  it("keeps its own file fresh while it holds the lock", async () => {
    const dir = await tempDir();
    try {
      const lockDir = join(dir.path, "lock");
      const held = await new FileLock(lockDir, { staleMs: 600 }).acquire();
      const [name] = readdirSync(lockDir);
      const old = new Date(Date.now() - 10_000);
      utimesSync(join(lockDir, name), old, old);
      await sleep(300);
      assert.ok(Date.now() - statSync(join(lockDir, name)).mtimeMs < 600, "touched within staleMs");
      held.release();
    } finally {
      await dir.remove();
    }
  });
});

/** A request that gives up after 5 s, and answers status 0 when the server is gone. */
async function send(
  url: string,
  init: { method?: string; token?: string; body?: unknown } = {},
): Promise<{ status: number; json?: any; bytes?: Uint8Array }> {
  try {
    const response = await fetch(url, {
      method: init.method ?? "GET",
      headers: {
        ...(init.token ? { authorization: `Bearer ${init.token}` } : {}),
        ...(init.body ? { "content-type": "application/json" } : {}),
      },
      body: init.body ? JSON.stringify(init.body) : undefined,
      signal: AbortSignal.timeout(5000),
    });
    const bytes = new Uint8Array(await response.arrayBuffer());
    const isJson = /json/.test(response.headers.get("content-type") ?? "");
    return {
      status: response.status,
      json: isJson ? JSON.parse(new TextDecoder().decode(bytes)) : undefined,
      bytes,
    };
  } catch {
    return { status: 0 };
  }
}

describe("two CA processes on one data directory, killed with SIGKILL at random points", () => {
  it("never repeat a CRL number, accept a single-use token twice, or lose a certificate", async (t) => {
    const dir = await tempDir();
    try {
      // A small segment, so compactions happen (and get killed) too.
      const config = await writeConfig(dir.path, {
        listen: { host: "127.0.0.1", port: 0, plainHttp: true },
        store: { kind: "file", segmentBytes: 8192 },
        rateLimit: false,
        log: { level: "info" },
      });
      assert.equal((await cli(["ca", "init", "--config", config])).code, 0);
      const store = await openTestStore(dir.path);
      const servers: (CaProcess | undefined)[] = await Promise.all([startCa(config), startCa(config)]);
      const admin = await token(store, { role: "admin" });
      const live = () => servers.filter((s): s is CaProcess => s !== undefined);
      const tokenUses: number[] = [];
      const issued: { serial: string; spiffeId: string }[] = [];
      const revocations: { serial: string; doneAt: number }[] = [];
      const crls: { number: bigint; der: string; serials: Set<string>; startedAt: number }[] = [];
      let kills = 0;
      const deadline = Date.now() + 12_000;

      const spendTokens = async () => {
        for (let i = 0; Date.now() < deadline; i++) {
          const spiffeId = `spiffe://${TRUST_DOMAIN}/kill/w${i}`;
          const once = await token(store, { role: "workload", spiffeId });
          const { csr } = await csrFor(spiffeId);
          // The same single-use token to both servers at once.
          const replies = await Promise.all(
            live().map((s) =>
              send(`${s.url}/v1/certificates`, { method: "POST", token: once, body: { csr } })
            ),
          );
          const accepted = replies.filter((r) => r.status === 201);
          tokenUses.push(accepted.length);
          for (const r of accepted) issued.push({ serial: r.json.serialNumber, spiffeId });
        }
      };
      const revokeAndFetch = async () => {
        while (Date.now() < deadline) {
          const candidates = issued.filter((c) => !revocations.some((r) => r.serial === c.serial));
          const target = candidates[Math.floor(Math.random() * candidates.length)];
          const [a] = live().sort(() => Math.random() - 0.5);
          if (target && a) {
            const r = await send(`${a.url}/v1/revocations`, {
              method: "POST",
              token: admin,
              body: { serialNumber: target.serial, reason: "superseded" },
            });
            if (r.status === 200) revocations.push({ serial: target.serial, doneAt: Date.now() });
          }
          for (const s of live()) {
            const startedAt = Date.now();
            const r = await send(`${s.url}/v1/crl`);
            if (r.status !== 200) continue;
            const crl = parseCrl(r.bytes!);
            crls.push({
              number: crl.crlNumber!,
              der: toHex(crl.der),
              serials: new Set(crl.revoked.map((e) => e.serialNumber)),
              startedAt,
            });
          }
          await sleep(20);
        }
      };
      const killer = async () => {
        while (Date.now() < deadline - 1500) {
          await sleep(700 + Math.random() * 900);
          const i = Math.floor(Math.random() * 2);
          const victim = servers[i];
          if (!victim) continue;
          servers[i] = undefined;
          await victim.kill("SIGKILL");
          kills++;
          servers[i] = await startCa(config);
        }
      };
      try {
        await Promise.all([spendTokens(), revokeAndFetch(), killer()]);
        // Every certificate a client got is known to a server started after all the kills.
        const fresh = await startCa(config);
        try {
          for (const { serial, spiffeId } of issued) {
            const listed = await send(
              `${fresh.url}/v1/certificates?spiffeId=${encodeURIComponent(spiffeId)}`,
              {
                token: admin,
              },
            );
            assert.ok(
              listed.json.certificates.some((c: { serialNumber: string }) => c.serialNumber === serial),
              `${serial} of ${spiffeId} is lost`,
            );
          }
        } finally {
          await fresh.stop();
        }
      } finally {
        await Promise.all(live().map((s) => s.stop()));
        await store.close();
      }
      t.diagnostic(
        `${kills} kills; ${tokenUses.length} tokens, ${issued.length} certificates, ${revocations.length} revocations, ${crls.length} CRLs`,
      );
      assert.ok(kills >= 4, `only ${kills} kills`);
      const archived = readdirSync(join(dir.path, "data", "store", "archive"));
      assert.ok(archived.length > 0, "no compaction happened");
      assert.ok(tokenUses.length >= 20 && crls.length >= 20, "too little happened to tell");
      assert.deepEqual(tokenUses.filter((n) => n > 1), [], "a single-use token was accepted twice");
      const byNumber = new Map<bigint, string>();
      for (const crl of crls) {
        assert.equal(
          byNumber.get(crl.number) ?? crl.der,
          crl.der,
          `two different CRLs numbered ${crl.number}`,
        );
        byNumber.set(crl.number, crl.der);
      }
      for (const { serial, doneAt } of revocations) {
        for (const crl of crls.filter((c) => c.startedAt > doneAt)) {
          assert.ok(
            crl.serials.has(serial),
            `CRL ${crl.number}, fetched after ${serial} was revoked, lacks it`,
          );
        }
      }
    } finally {
      await dir.remove();
    }
  });
});
