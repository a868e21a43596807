// `npm start` end to end, as a reader runs it: npm itself as a child process (free ports, its
// state in a temporary directory, output to a pipe: no colour), every outcome of the story it
// prints, the commands it prints run as printed (curl through the proxies, openssl s_client
// against an inbound port with a workload's files), its status page in a real headless
// Chromium (Debian's, driven by playwright-core: nothing is downloaded), and Ctrl-C as a
// terminal sends it (SIGINT to the process group, twice), after which nothing of it is left.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { copyFile, mkdtemp, rm } from "node:fs/promises";
import { type AddressInfo, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Terminal, wantsColor } from "../../examples/mesh/terminal.ts";

const ROOT = new URL("../..", import.meta.url).pathname;
const CHROMIUM = "/usr/bin/chromium";
const SCREENSHOT = join(ROOT, "docs", "status-page.png");

/** Every process whose parent chain leads to `pid` (Linux /proc), `pid` excluded. */
function descendants(pid: number): number[] {
  const parents = new Map<number, number>();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      // pid (comm) state ppid ...: comm may hold spaces and parentheses, so read after the last ")".
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      parents.set(Number(name), ppid);
    } catch {
      // gone meanwhile
    }
  }
  const out: number[] = [];
  const walk = (parent: number) => {
    for (const [child, ppid] of parents) {
      if (ppid === parent && !out.includes(child)) {
        out.push(child);
        walk(child);
      }
    }
  };
  walk(pid);
  return out;
}

/** True while `pid` runs (a zombie waiting for its parent to reap it counts as gone). */
function isRunning(pid: number): boolean {
  try {
    return !/^\S+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
}

/** Runs a printed command as a reader would; `output` is what it printed on stdout. */
function sh(script: string): Promise<{ code: number; output: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile("sh", ["-c", script], { cwd: ROOT, timeout: 20_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, output: stdout, stderr });
    });
  });
}

describe("npm start", { timeout: 180_000 }, () => {
  let npm: ChildProcess;
  let output = "";
  let state: string;
  let exited: Promise<number | null>;

  before(async () => {
    state = await mkdtemp(join(tmpdir(), "meshauth-npm-start-"));
    // Under a umask of 002 (a user's own group, as Debian sets up), where made directories are
    // group-writable unless their mode says otherwise, which the agent refuses in its delivery roots.
    npm = spawn("sh", ["-c", "umask 002 && exec npm start"], {
      cwd: ROOT,
      // TMPDIR of its own: the services' sockets directory must be gone after Ctrl-C.
      env: { ...process.env, MESHAUTH_MESH_DIR: join(state, "mesh"), MESHAUTH_MESH_PORT: "0", TMPDIR: state },
      stdio: ["ignore", "pipe", "pipe"],
      // Its own process group: whatever it might leave behind can be found, and killed after.
      detached: true,
    });
    npm.stdout!.on("data", (d) => (output += d));
    npm.stderr!.on("data", (d) => (output += d));
    exited = new Promise((resolve) => npm.once("exit", (code) => resolve(code)));
    const deadline = Date.now() + 120_000;
    while (!output.includes("Stop with Ctrl-C.")) {
      if (npm.exitCode !== null) throw new Error(`npm start exited with ${npm.exitCode}:\n${output}`);
      if (Date.now() > deadline) throw new Error(`npm start did not finish its story in 120 s:\n${output}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  });

  after(async () => {
    try {
      if (npm?.pid) process.kill(-npm.pid, "SIGKILL");
    } catch {
      // the group is gone, as it should be
    }
    await rm(state, { recursive: true, force: true });
  });

  test("prints every outcome of the seed's story, each as expected, in plain text", () => {
    const lines = [
      /^1\. Identities issued and files written$/m,
      /✔ node-1 joined with its one-time join token and holds spiffe:\/\/cluster\.local\/node\/node-1$/m,
      /✔ photo-frontend: spiffe:\/\/cluster\.local\/ns\/photo-ns\/sa\/photo-frontend, serial [0-9a-f]+…?, valid (4m \d\d|5m 00)s$/m,
      /✔ photo-backend: spiffe:\/\/cluster\.local\/ns\/photo-ns\/sa\/photo-backend, serial /m,
      /✔ datastore: spiffe:\/\/cluster\.local\/ns\/datastore-ns\/sa\/datastore, serial /m,
      /workloads\/datastore\/: cert-chain\.pem, key\.pem \(0600, made on this node\), root-cert\.pem$/m,
      /^2\. photo-frontend -> photo-backend: allowed$/m,
      /✔ GET \/photos from photo-frontend's port 127\.0\.0\.1:\d+: 200, allowed at photo-backend's proxy by policy frontend-reads-photos; photo-backend saw the caller spiffe:\/\/cluster\.local\/ns\/photo-ns\/sa\/photo-frontend$/m,
      /^3\. photo-backend -> datastore: allowed$/m,
      /✔ GET \/objects\/photos from photo-backend's port 127\.0\.0\.1:\d+: 200, allowed at the datastore's proxy by policy backend-uses-datastore; the datastore saw the caller spiffe:\/\/cluster\.local\/ns\/photo-ns\/sa\/photo-backend$/m,
      /^4\. photo-frontend -> datastore: denied by policy$/m,
      /✔ GET \/objects\/photos from photo-frontend's port 127\.0\.0\.1:\d+: 403, denied at the datastore's proxy by policy never-the-frontend \(DENY\); the datastore never saw the request$/m,
      /^5\. An impostor refused by secure naming$/m,
      /✔ photo-frontend's route to photo-backend \(127\.0\.0\.1:\d+\) led to an impostor presenting the datastore's valid SVID: refused by secure naming, spiffe:\/\/cluster\.local\/ns\/datastore-ns\/sa\/datastore may not serve photo-backend$/m,
      /✔ not one byte of the request left photo-frontend's proxy: the impostor received 0 bytes$/m,
      /^6\. A certificate revoked, and refused on its open connection$/m,
      /✔ revoked photo-frontend's certificate [0-9a-f]+…? at the CA \(keyCompromise\) while it had a connection open to photo-backend$/m,
      /✔ photo-backend's proxy closed that open connection (\d+ ms|\d+\.\d\d s) after the revocation \(revoked-while-open\): the agent held the new CRL (\d+ ms|\d+\.\d\d s) after it \(its CRL poll\), the proxy closed the connection (\d+ ms|\d+\.\d\d s) after that$/m,
      /✔ the agent gave photo-frontend a new certificate at once \(serial [0-9a-f]+…?\); its next request: 200$/m,
      /^7\. A rotation with no failed request$/m,
      /✔ photo-frontend, photo-backend and datastore rotated \(new keys, new certificates\) while 4 clients sent [1-9]\d* requests through the proxies, frontend -> backend -> datastore: 0 failed$/m,
      /✔ the next connections presented the new certificates: photo-backend's proxy saw photo-frontend's serial [0-9a-f]+…?, the datastore's saw photo-backend's [0-9a-f]+…?$/m,
      /^8\. A root rotation reaching every workload with no restart$/m,
      /✔ added a new root \(what meshauth ca rotate --overlap-seconds 3 does\) and told the CA with SIGHUP/m,
      /✔ (\d+ ms|\d+\.\d\d s) later every workload's root-cert\.pem held both roots, and every proxy trusted both: no restart$/m,
      /✔ once it signed, the three workloads renewed onto the new root, and frontend -> backend -> datastore answered 200/m,
      /^17 of 17 outcomes as expected\.$/m,
    ];
    for (const line of lines) assert.match(output, line);
    assert.doesNotMatch(output, /✘/);
    assert.ok(!output.includes("\u001b["), "no colour on a pipe");
    // The close it reports came of the revocation: the proxy's revoked-while-open record, of the
    // revoked serial, written after the CA logged the revocation (one machine, one clock).
    const revokedSerial = /revoked photo-frontend's certificate ([0-9a-f]+)…? at the CA/.exec(output)![1];
    const revocations = readFileSync(join(state, "mesh", "ca", "ca.log"), "utf8").split("\n").filter(Boolean)
      .map((line) => JSON.parse(line)).filter((entry) => entry.msg === "revoked");
    assert.equal(revocations.length, 1);
    const closes = readFileSync(join(state, "mesh", "node-1", "proxy-audit.jsonl"), "utf8").split("\n")
      .filter(Boolean).map((line) => JSON.parse(line)).filter((r) => r.reason === "revoked-while-open");
    assert.equal(closes.length, 1, JSON.stringify(closes));
    assert.equal(closes[0].listener, "photo-backend");
    assert.ok(closes[0].peerSerial.startsWith(revokedSerial), `${closes[0].peerSerial} is ${revokedSerial}`);
    assert.ok(
      Date.parse(closes[0].time) >= Date.parse(revocations[0].time),
      `closed at ${closes[0].time}, revoked at ${revocations[0].time}`,
    );
  });

  test("a second npm start on its state directory is refused before it touches anything", async () => {
    const keyPath = join(state, "mesh", "workloads", "photo-frontend", "key.pem");
    const before = readFileSync(keyPath, "utf8");
    const second = await new Promise<{ code: number | null; output: string }>((resolve) => {
      // Free ports of its own: only the state directory is shared.
      execFile("node", ["--import", "tsx", "examples/mesh/main.ts"], {
        cwd: ROOT,
        env: {
          ...process.env,
          MESHAUTH_MESH_DIR: join(state, "mesh"),
          MESHAUTH_MESH_PORT: "0",
          TMPDIR: state,
        },
        timeout: 30_000,
      }, (err, stdout, stderr) => resolve({ code: err ? Number(err.code) : 0, output: stdout + stderr }));
    });
    assert.equal(second.code, 1, second.output);
    assert.match(
      second.output,
      new RegExp(
        `npm start already runs on ${join(state, "mesh").replaceAll("/", "\\/")} \\(process \\d+\\)`,
      ),
    );
    assert.equal(readFileSync(keyPath, "utf8"), before, "the running mesh's files are untouched");
    assert.ok(existsSync(join(state, "mesh", "ca")), "the running mesh's CA directory is there");
  });

  test("the commands it prints work as printed", async () => {
    const command = (pattern: RegExp) => {
      const match = pattern.exec(output);
      assert.ok(match, `${pattern} in the output`);
      return match[0].split("   #")[0].trim();
    };
    const photos = await sh(command(/curl http:\/\/127\.0\.0\.1:\d+\/photos/));
    assert.equal(photos.code, 0, photos.stderr);
    assert.equal(JSON.parse(photos.output).caller, "spiffe://cluster.local/ns/photo-ns/sa/photo-frontend");
    const denied = await sh(command(/curl -i http:\/\/127\.0\.0\.1:\d+\/objects\/photos/));
    assert.match(denied.output, /^HTTP\/1\.1 403 /);
    assert.match(denied.output, /"code":"ERR_POLICY_DENIED"/);
    const stored = await sh(command(/curl http:\/\/127\.0\.0\.1:\d+\/objects\/photos/));
    assert.equal(JSON.parse(stored.output).caller, "spiffe://cluster.local/ns/photo-ns/sa/photo-backend");
    // openssl s_client with photo-frontend's files, against photo-backend's inbound port.
    const openssl = await sh(/^ +(printf .* \| openssl s_client .*)$/m.exec(output)![1]);
    assert.equal(openssl.code, 0, openssl.stderr);
    assert.match(openssl.output, /HTTP\/1\.1 200 OK/);
    assert.match(openssl.output, /"caller":"spiffe:\/\/cluster\.local\/ns\/photo-ns\/sa\/photo-frontend"/);
    const metrics = await sh(command(/curl http:\/\/127\.0\.0\.1:\d+\/metrics/));
    assert.match(metrics.output, /^meshauth_agent_workloads 3$/m);
    assert.match(
      metrics.output,
      /^meshauth_proxy_decisions_total\{listener="datastore",decision="deny",policy="never-the-frontend"\} [1-9]/m,
    );
  });

  test("the status page, in headless Chromium, shows the workloads with their serials and moving bars, an allowed and a denied decision with their rules", async () => {
    assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install chromium (npm test does)`);
    const { chromium } = await import("playwright-core");
    const url = /status page +(http:\/\/127\.0\.0\.1:\d+\/)/.exec(output)![1];
    const profile = await mkdtemp(join(tmpdir(), "meshauth-chromium-"));
    const browser = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
      ],
      viewport: { width: 1180, height: 860 },
      offline: false,
    });
    try {
      const page = browser.pages()[0] ?? await browser.newPage();
      const requested: string[] = [];
      page.on("request", (r) => requested.push(r.url()));
      await page.goto(url);
      await page.waitForSelector("#state.live", { timeout: 10_000 });
      const rows = page.locator("#workloads tbody tr");
      await rows.nth(2).waitFor({ timeout: 10_000 });
      assert.deepEqual(await page.locator("#workloads tbody td.id").allTextContents(), [
        "spiffe://cluster.local/ns/datastore-ns/sa/datastore",
        "spiffe://cluster.local/ns/photo-ns/sa/photo-backend",
        "spiffe://cluster.local/ns/photo-ns/sa/photo-frontend",
      ]);
      // Each row's serial is the one the workload holds (the full serial in its title).
      const status = JSON.parse(
        (await sh(`curl -s ${url}status.json`)).output,
      ) as { workloads: { serialNumber: string }[] };
      assert.deepEqual(
        await page.locator("#workloads tbody td.serial").evaluateAll((cells) =>
          cells.map((c) => (c as HTMLElement).title)
        ),
        status.workloads.map((w) => w.serialNumber),
      );
      // The bars show time left, and move.
      const width = () =>
        page.locator("#workloads .bar > span").first().evaluate((e) =>
          parseFloat((e as HTMLElement).style.width)
        );
      const first = await width();
      assert.ok(first > 0 && first <= 100, `bar at ${first}%`);
      await page.waitForFunction(
        (before) =>
          parseFloat((document.querySelector("#workloads .bar > span") as HTMLElement).style.width) < before,
        first,
        { timeout: 10_000 },
      );
      // A decision that happens now appears as it happens.
      await sh(/curl -i http:\/\/127\.0\.0\.1:\d+\/objects\/photos/.exec(output)![0]);
      const denied = page.locator("#events tr.decision.deny", { hasText: "never-the-frontend" }).first();
      await denied.waitFor({ timeout: 10_000 });
      assert.match(
        await denied.textContent() ?? "",
        /DENY.*datastore \(inbound\) GET \/objects\/photos.*photo-frontend.*policy never-the-frontend, rule 0/,
      );
      await sh(/curl http:\/\/127\.0\.0\.1:\d+\/photos/.exec(output)![0]);
      const allowed = page.locator("#events tr.decision.allow", { hasText: "frontend-reads-photos" }).first();
      await allowed.waitFor({ timeout: 10_000 });
      assert.match(
        await allowed.textContent() ?? "",
        /ALLOW.*photo-backend \(inbound\) GET \/photos.*photo-frontend.*policy frontend-reads-photos, rule 0/,
      );
      await page.locator("#events tr", { hasText: "ROTATED" }).first().waitFor({ timeout: 5000 });
      assert.ok(
        requested.every((r) => r.startsWith(url)),
        `the page fetched only from the agent: ${requested.join(", ")}`,
      );
      // Once the rows' highlight of new events has faded.
      await page.waitForTimeout(2200);
      const shot = join(profile, "status-page.png");
      await page.screenshot({ path: shot });
      if (process.env.MESHAUTH_UPDATE_SCREENSHOT) await copyFile(shot, SCREENSHOT);
    } finally {
      await browser.close();
      await rm(profile, { recursive: true, force: true });
    }
    // The docs show the page (npm test leaves the committed picture alone unless asked to update it).
    const png = readFileSync(SCREENSHOT);
    assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    assert.ok(png.length < 400_000, `docs/status-page.png is ${png.length} bytes`);
    assert.match(readFileSync(join(ROOT, "docs", "agent.md"), "utf8"), /\]\(status-page\.png\)/);
  });

  test("Ctrl-C, pressed twice, stops everything, and nothing of its tree is left", async () => {
    const tree = descendants(npm.pid!);
    assert.ok(tree.length >= 2, `npm start runs node, and node the CA: ${tree.join(", ")}`);
    assert.ok(readdirSync(state).some((name) => name.startsWith("meshauth-mesh-")), "its sockets directory");
    // A terminal's Ctrl-C signals the whole foreground process group (npm, node, the CA); an
    // impatient reader presses it again while the mesh stops, which must change nothing.
    process.kill(-npm.pid!, "SIGINT");
    while (!output.includes("SIGINT: stopping") && npm.exitCode === null) {
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    try {
      process.kill(-npm.pid!, "SIGINT");
    } catch {
      // already stopped: the second press came too late to matter
    }
    const code = await Promise.race([
      exited,
      new Promise<"timeout">((resolve) => setTimeout(() => resolve("timeout"), 20_000)),
    ]);
    assert.notEqual(code, "timeout", `npm start still runs 20 s after SIGINT:\n${output.slice(-2000)}`);
    assert.match(
      output,
      /SIGINT: stopping the agent and its proxy, the services and the CA\.\.\.\nstopped; nothing is left running\.\n/,
    );
    const deadline = Date.now() + 5000;
    while (tree.some(isRunning) && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.deepEqual(tree.filter(isRunning), [], "every process npm start ran has exited");
    assert.deepEqual(descendants(npm.pid!), []);
    assert.deepEqual(readdirSync(state).filter((name) => name.startsWith("meshauth-mesh-")), []);
  });
});

describe("npm start, briefly", () => {
  const main = (args: string[], env: Record<string, string>) =>
    new Promise<{ code: number; stdout: string }>((resolve) => {
      execFile("node", ["--import", "tsx", "examples/mesh/main.ts", ...args], {
        cwd: ROOT,
        env: { ...process.env, ...env },
        timeout: 30_000,
      }, (err, stdout) => resolve({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, stdout }));
    });

  test("--help names the state directory, the ports and how to move them", async () => {
    const help = await main(["--help"], {});
    assert.equal(help.code, 0);
    assert.match(
      help.stdout,
      /MESHAUTH_MESH_DIR +where its state goes, made afresh each run \(default \.meshauth\/mesh\)/,
    );
    assert.match(help.stdout, /MESHAUTH_MESH_PORT +the first of its ports on 127\.0\.0\.1 \(default 15000/);
    assert.match(help.stdout, /"npm run ca" runs the development CA alone/);
  });

  test("on a terminal (a pseudo-terminal from script(1)) its lines are coloured, on a pipe not", async () => {
    const foreign = await mkdtemp(join(tmpdir(), "meshauth-not-npm-start-"));
    try {
      writeFileSync(join(foreign, "precious.txt"), "keep me");
      const env: NodeJS.ProcessEnv = {
        ...process.env,
        MESHAUTH_MESH_DIR: foreign,
        MESHAUTH_MESH_PORT: "0",
        TERM: "xterm",
      };
      delete env.NO_COLOR;
      delete env.FORCE_COLOR;
      const onTerminal = await new Promise<string>((resolve, reject) => {
        execFile(
          "script",
          ["-qec", "node --import tsx examples/mesh/main.ts", "/dev/null"],
          { cwd: ROOT, env, timeout: 30_000 },
          (err, stdout) => (err && typeof err.code !== "number" ? reject(err) : resolve(stdout)),
        );
      });
      assert.ok(onTerminal.includes("\u001b[31m✘\u001b[39m \u001b[31mnpm start: "), onTerminal);
      assert.match(onTerminal, /holds files npm start did not make/);
      const onPipe = await main([], { MESHAUTH_MESH_DIR: foreign, MESHAUTH_MESH_PORT: "0", TERM: "xterm" });
      assert.match(onPipe.stdout, /^ {3}✘ npm start: .* holds files npm start did not make/m);
      assert.ok(!onPipe.stdout.includes("\u001b["), "no colour on a pipe");
    } finally {
      await rm(foreign, { recursive: true, force: true });
    }
  });

  test("a port in use is one line naming it, what needs it, and how to move the ports; nothing is left", async () => {
    // The status port (the base) held by someone else. On a busy machine another port of the block
    // may be taken too (the CA's, tried first): then that one is named, with what needs it.
    const holder = createServer();
    await new Promise<void>((resolve) => holder.listen(0, "127.0.0.1", resolve));
    const base = (holder.address() as AddressInfo).port;
    const state = await mkdtemp(join(tmpdir(), "meshauth-npm-start-"));
    try {
      assert.ok(base <= 65535 - 30, `an ephemeral port (${base}) leaves room for the block above it`);
      const refused = await main([], {
        MESHAUTH_MESH_DIR: join(state, "mesh"),
        MESHAUTH_MESH_PORT: String(base),
        TMPDIR: state,
      });
      assert.equal(refused.code, 1);
      const named = new RegExp(
        `^ {3}✘ npm start: 127\\.0\\.0\\.1:(\\d+) \\((the agent's status page|the CA|[a-z-]+'s [a-z -]+)\\) ` +
          `is in use by another process\\. Its ports are 127\\.0\\.0\\.1:${base} to ${base + 30}: ` +
          `MESHAUTH_MESH_PORT=<first port> npm start moves them, MESHAUTH_MESH_PORT=0 npm start takes free ones$`,
        "m",
      ).exec(refused.stdout);
      assert.ok(named, refused.stdout);
      const port = Number(named[1]);
      assert.ok(port >= base && port <= base + 30, refused.stdout);
      if (port === base) assert.equal(named[2], "the agent's status page");
      assert.doesNotMatch(refused.stdout, /MESHAUTH_AGENT_LISTEN_PORT|MESHAUTH_LISTEN_PORT|listen\.port/);
      assert.deepEqual(readdirSync(state).filter((name) => name.startsWith("meshauth-mesh-")), []);
    } finally {
      holder.close();
      await rm(state, { recursive: true, force: true });
    }
  });

  test("a sockets directory left by a run whose process is gone is removed at the next start; a live run's, or one without its owner file, is kept", async () => {
    const state = await mkdtemp(join(tmpdir(), "meshauth-npm-start-"));
    try {
      // A process that has exited: its pid names no process now.
      const gone = spawn(process.execPath, ["-e", ""]);
      await new Promise((resolve) => gone.once("exit", resolve));
      const dirs = {
        dead: "meshauth-mesh-dead",
        live: "meshauth-mesh-live",
        unmarked: "meshauth-mesh-unmarked",
      };
      for (const name of Object.values(dirs)) mkdirSync(join(state, name));
      writeFileSync(join(state, dirs.dead, "owner.pid"), `${gone.pid}\n`);
      writeFileSync(join(state, dirs.dead, "photo-backend.sock"), "");
      writeFileSync(join(state, dirs.live, "owner.pid"), `${process.pid}\n`);
      // A start refused at once (a state directory it did not make) has cleaned up first.
      mkdirSync(join(state, "foreign"));
      writeFileSync(join(state, "foreign", "precious.txt"), "keep me");
      const refused = await main([], {
        MESHAUTH_MESH_DIR: join(state, "foreign"),
        MESHAUTH_MESH_PORT: "0",
        TMPDIR: state,
      });
      assert.match(refused.stdout, /holds files npm start did not make/);
      assert.equal(refused.code, 1, refused.stdout);
      assert.deepEqual(
        readdirSync(state).filter((name) => name.startsWith("meshauth-mesh-")).sort(),
        [dirs.live, dirs.unmarked],
      );
    } finally {
      await rm(state, { recursive: true, force: true });
    }
  });

  test(
    "SIGHUP (the terminal closed) stops everything as Ctrl-C does: no process and no sockets directory is left",
    {
      timeout: 120_000,
    },
    async () => {
      const state = await mkdtemp(join(tmpdir(), "meshauth-npm-start-"));
      const child = spawn(process.execPath, ["--import", "tsx", "examples/mesh/main.ts"], {
        cwd: ROOT,
        env: {
          ...process.env,
          MESHAUTH_MESH_DIR: join(state, "mesh"),
          MESHAUTH_MESH_PORT: "0",
          TMPDIR: state,
        },
        stdio: ["ignore", "pipe", "pipe"],
        detached: true,
      });
      let output = "";
      child.stdout!.on("data", (d) => (output += d));
      child.stderr!.on("data", (d) => (output += d));
      const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
      try {
        // Once the story began, the CA, the services and the agent all run.
        const deadline = Date.now() + 90_000;
        while (!output.includes("1. Identities issued")) {
          assert.equal(child.exitCode, null, output);
          assert.ok(Date.now() < deadline, `the story did not begin in 90 s:\n${output}`);
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
        const tree = descendants(child.pid!);
        assert.ok(tree.length > 0, "the CA runs as a child process");
        // A closing terminal sends SIGHUP to its foreground process group.
        process.kill(-child.pid!, "SIGHUP");
        const code = await Promise.race([
          exited,
          new Promise<"timeout">((resolve) => setTimeout(() => resolve("timeout"), 20_000)),
        ]);
        assert.equal(code, 0, output.slice(-2000));
        assert.match(
          output,
          /SIGHUP: stopping the agent and its proxy, the services and the CA\.\.\.\n[\s\S]*stopped; nothing is left running\.\n$/,
        );
        const stopped = Date.now() + 5000;
        while (tree.some(isRunning) && Date.now() < stopped) {
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
        assert.deepEqual(tree.filter(isRunning), []);
        assert.deepEqual(readdirSync(state).filter((name) => name.startsWith("meshauth-mesh-")), []);
      } finally {
        try {
          process.kill(-child.pid!, "SIGKILL");
        } catch {
          // the group is gone, as it should be
        }
        await rm(state, { recursive: true, force: true });
      }
    },
  );

  test("a state directory it did not make is refused, never emptied", async () => {
    const foreign = await mkdtemp(join(tmpdir(), "meshauth-not-npm-start-"));
    try {
      writeFileSync(join(foreign, "precious.txt"), "keep me");
      const refused = await main([], { MESHAUTH_MESH_DIR: foreign, MESHAUTH_MESH_PORT: "0" });
      assert.equal(refused.code, 1);
      assert.match(
        refused.stdout,
        /holds files npm start did not make; .* choose another \(MESHAUTH_MESH_DIR\)/,
      );
      assert.equal(readFileSync(join(foreign, "precious.txt"), "utf8"), "keep me");
    } finally {
      await rm(foreign, { recursive: true, force: true });
    }
  });
});

describe("npm start's terminal", () => {
  test("colour on a terminal only, never with NO_COLOR or TERM=dumb", () => {
    assert.equal(wantsColor({ isTTY: true }, {}), true);
    assert.equal(wantsColor({ isTTY: false }, {}), false);
    assert.equal(wantsColor({ isTTY: true }, { NO_COLOR: "1" }), false);
    assert.equal(wantsColor({ isTTY: true }, { TERM: "dumb" }), false);
    assert.equal(wantsColor({ isTTY: false }, { FORCE_COLOR: "1" }), true);
    const written: string[] = [];
    new Terminal({ isColor: true, write: (t) => written.push(t) }).ok("fine");
    new Terminal({ isColor: false, write: (t) => written.push(t) }).ok("fine");
    assert.deepEqual(written, ["   \u001b[32m✔\u001b[39m fine\n", "   ✔ fine\n"]);
  });
});
