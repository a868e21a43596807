/**
 * The seed's story, played on the running mesh and told in plain words, one outcome a line:
 * identities issued and files written; frontend -> backend allowed; backend -> datastore
 * allowed; frontend -> datastore denied by policy; an impostor refused by secure naming; a
 * certificate revoked and refused on its open connection; a rotation with no failed request; a
 * root rotation that reaches every workload with no restart.
 *
 * npm start speaks as each workload the way the workload's own code would: plain HTTP to the
 * workload's local port for another service (an outbound listener of the proxy). Each outcome
 * is checked, not assumed: the answer, what the service saw, and the proxy's audit record.
 *
 * @module
 */

import { readFile, stat } from "node:fs/promises";
import { connect } from "node:net";
import { join } from "node:path";
import { Agent as HttpAgent, request } from "node:http";
import { Agent, fetch } from "undici";
import { TrustBundle, verifySvid } from "../../mod.ts";
import type { AuditRecord, RunningAgent } from "../../agent/mod.ts";
import { initRoot, openKeyManager } from "../../ca-server/mod.ts";
import { type App, getJson, type Impostor, startImpostor } from "./apps.ts";
import type { PreparedCa } from "./ca-process.ts";
import { type MeshLayout, NODE, spiffeIdOf, TRUST_DOMAIN, type WorkloadName, WORKLOADS } from "./layout.ts";
import { seconds, shortSerial, type Terminal } from "./terminal.ts";

/** What the story plays on. */
export interface Mesh {
  term: Terminal;
  layout: MeshLayout;
  running: RunningAgent;
  ca: { url: string; pid: number };
  prepared: PreparedCa;
  apps: Record<WorkloadName, App>;
  /** Set by the impostor step, closed with the mesh. */
  impostor?: Impostor;
}

const FRONTEND = spiffeIdOf("photo-frontend");
const BACKEND = spiffeIdOf("photo-backend");
const DATASTORE = spiffeIdOf("datastore");

/** Waits for `check` to hold, polling; throws `what` after `timeoutMs`. */
async function until<T>(
  what: string,
  check: () => T | undefined | Promise<T | undefined>,
  timeoutMs = 15_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`${what}: nothing within ${timeoutMs / 1000} s`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

function validFor(notAfter: Date): string {
  const s = Math.round((notAfter.getTime() - Date.now()) / 1000);
  return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
}

const countCertificates = (pem: string) => pem.split("-----BEGIN CERTIFICATE-----").length - 1;

/** One JSON log line, or undefined for anything else. */
function parseLogLine(line: string): Record<string, unknown> | undefined {
  try {
    const value = JSON.parse(line);
    return typeof value === "object" && value !== null ? value : undefined;
  } catch {
    return undefined;
  }
}

/** Plays the story; answers how many steps went as expected. */
export async function playStory(mesh: Mesh): Promise<void> {
  const { term, layout, running } = mesh;
  const agent = running.agent;
  const proxy = running.proxy!;
  const ports = layout.ports;
  const records: AuditRecord[] = [];
  const unsubscribe = proxy.subscribe((record) => records.push(record));
  const decision = (what: string, match: (r: AuditRecord) => boolean, from = 0) =>
    until(what, () => records.slice(from).find(match), 5000);

  const steps: [string, () => Promise<void>][] = [
    ["Identities issued and files written", async () => {
      await until("every workload's files", () => agent.readiness().isReady, 30_000);
      const node = agent.nodeSvid()!;
      // The CA logs how each certificate's requester authenticated: the node's first, by its token.
      const joined = await until("the CA's record of the node's certificate", async () => {
        const log = await readFile(layout.caLog, "utf8").catch(() => "");
        return log.split("\n").some((line) => {
          const entry = parseLogLine(line);
          return entry?.msg === "issued" && entry.serialNumber === node.serialNumber &&
            entry.method === "join-token";
        }) || undefined;
      }, 5000).catch(() => false);
      if (joined) term.ok(`${NODE} joined with its one-time join token and holds ${node.spiffeId}`);
      else {term.fail(
          `the CA has no record of ${NODE}'s certificate ${
            shortSerial(node.serialNumber)
          } issued for its join token`,
        );}
      for (const { name } of WORKLOADS) {
        const svid = agent.svid(name)!;
        const dir = layout.workloadDir(name);
        const keyMode = (await stat(join(dir, "key.pem"))).mode & 0o777;
        const chain = await readFile(join(dir, "cert-chain.pem"), "utf8");
        const ok = svid.spiffeId.toString() === spiffeIdOf(name) && chain === svid.certificateChainPem &&
          keyMode === 0o600;
        const line = `${name}: ${svid.spiffeId}, serial ${shortSerial(svid.serialNumber)}, valid ${
          validFor(svid.expiresAt)
        }`;
        if (ok) term.ok(line);
        else term.fail(`${line}: its files do not hold it (key mode ${keyMode.toString(8)})`);
        term.detail(
          `${layout.shown(dir)}/: cert-chain.pem, key.pem (0600, made on this node), root-cert.pem`,
        );
      }
    }],
    ["photo-frontend -> photo-backend: allowed", async () => {
      const from = records.length;
      const answer = await getJson(ports.frontendToBackend, "/photos");
      const record = await decision(
        "photo-backend's decision",
        (r) => r.listener === "photo-backend" && r.peerId === FRONTEND,
        from,
      );
      const line =
        `GET /photos from photo-frontend's port 127.0.0.1:${ports.frontendToBackend}: ${answer.status}`;
      if (answer.status === 200 && record.decision === "allow" && answer.body.caller === FRONTEND) {
        term.ok(
          `${line}, allowed at photo-backend's proxy by policy ${record.policy}; photo-backend saw the caller ${answer.body.caller}`,
        );
      } else term.fail(`${line}, ${record.decision} (${record.reason}); expected 200 and an allow`);
    }],
    ["photo-backend -> datastore: allowed", async () => {
      const from = records.length;
      const answer = await getJson(ports.backendToDatastore, "/objects/photos");
      const record = await decision(
        "the datastore's decision",
        (r) => r.listener === "datastore" && r.peerId === BACKEND,
        from,
      );
      const line =
        `GET /objects/photos from photo-backend's port 127.0.0.1:${ports.backendToDatastore}: ${answer.status}`;
      if (answer.status === 200 && record.decision === "allow" && answer.body.caller === BACKEND) {
        term.ok(
          `${line}, allowed at the datastore's proxy by policy ${record.policy}; the datastore saw the caller ${answer.body.caller}`,
        );
      } else term.fail(`${line}, ${record.decision} (${record.reason}); expected 200 and an allow`);
    }],
    ["photo-frontend -> datastore: denied by policy", async () => {
      const from = records.length;
      const servedBefore = mesh.apps.datastore.served;
      const answer = await getJson(ports.frontendToDatastore, "/objects/photos");
      const record = await decision(
        "the datastore's decision",
        (r) => r.listener === "datastore" && r.peerId === FRONTEND,
        from,
      );
      const line =
        `GET /objects/photos from photo-frontend's port 127.0.0.1:${ports.frontendToDatastore}: ${answer.status}`;
      if (
        answer.status === 403 && record.decision === "deny" && mesh.apps.datastore.served === servedBefore
      ) {
        term.ok(
          `${line}, denied at the datastore's proxy by policy ${record.policy} (DENY); the datastore never saw the request`,
        );
      } else term.fail(`${line}, ${record.decision} (${record.reason}); expected 403 and a deny`);
    }],
    ["An impostor refused by secure naming", async () => {
      mesh.impostor = await startImpostor(layout);
      const from = records.length;
      const answer = await getJson(ports.spoofedBackend, "/photos").catch((err: Error) => err);
      const record = await decision(
        "the outbound decision",
        (r) => r.listener === "frontend-to-backend-spoofed",
        from,
      );
      const isRefused = answer instanceof Error && record.decision === "deny" &&
        record.reason === "secure-naming" &&
        record.peerId === DATASTORE && mesh.impostor.bytesReceived === 0;
      const line =
        `photo-frontend's route to photo-backend (127.0.0.1:${ports.spoofedBackend}) led to an impostor ` +
        `presenting the datastore's valid SVID`;
      if (isRefused) {
        term.ok(`${line}: refused by secure naming, ${DATASTORE} may not serve photo-backend`);
        term.ok(
          `not one byte of the request left photo-frontend's proxy: the impostor received ${mesh.impostor.bytesReceived} bytes`,
        );
      } else {
        term.fail(
          `${line}: ${answer instanceof Error ? "refused" : `answered ${answer.status}`}, ` +
            `${record.decision} (${record.reason}), the impostor received ${mesh.impostor.bytesReceived} bytes`,
        );
      }
    }],
    ["A certificate revoked, and refused on its open connection", async () => {
      const connection = await openConnection(ports.frontendToBackend);
      try {
        const first = await connection.get("/photos");
        if (first !== 200) throw new Error(`the connection's first request answered ${first}`);
        const revoked = agent.svid("photo-frontend")!.serialNumber;
        const from = records.length;
        // When the agent first holds a CRL listing it: what the proxy's part is measured from.
        let crlAt: number | undefined;
        const stopWatching = agent.subscribe((event) => {
          if (event.type === "crl" && event.revokedSerials.has(revoked)) crlAt ??= performance.now();
        });
        const revokedAt = performance.now();
        await revoke(mesh, revoked);
        term.ok(
          `revoked photo-frontend's certificate ${
            shortSerial(revoked)
          } at the CA (keyCompromise) while it had a connection open to photo-backend`,
        );
        const closedAt = await Promise.race([
          connection.closed,
          new Promise<never>((_, reject) =>
            setTimeout(() => reject(new Error("the connection stayed open 10 s")), 10_000)
          ),
        ]);
        stopWatching();
        const record = await decision(
          "the close's audit record",
          (r) =>
            r.listener === "photo-backend" && r.reason === "revoked-while-open" && r.peerSerial === revoked,
          from,
        );
        const parts = crlAt === undefined
          ? "the agent's CRL event was not seen"
          : `the agent held the new CRL ${seconds(crlAt - revokedAt)} after it (its CRL poll), ` +
            `the proxy closed the connection ${seconds(closedAt - crlAt)} after that`;
        term.ok(
          `photo-backend's proxy closed that open connection ${
            seconds(closedAt - revokedAt)
          } after the revocation (${record.reason}): ${parts}`,
        );
        const renewed = await until("photo-frontend's new certificate", () => {
          const svid = agent.svid("photo-frontend");
          return svid && svid.serialNumber !== revoked ? svid : undefined;
        });
        const next = records.length;
        const answer = await getJson(ports.frontendToBackend, "/photos");
        const after = await decision(
          "the next decision",
          (r) => r.listener === "photo-backend" && r.peerId === FRONTEND,
          next,
        );
        if (answer.status === 200 && after.peerSerial === renewed.serialNumber) {
          term.ok(
            `the agent gave photo-frontend a new certificate at once (serial ${
              shortSerial(renewed.serialNumber)
            }); its next request: 200`,
          );
        } else term.fail(`after the revocation, photo-frontend's next request answered ${answer.status}`);
      } finally {
        connection.destroy();
      }
    }],
    ["A rotation with no failed request", async () => {
      let isLoading = true;
      let sent = 0;
      const failures: string[] = [];
      const keepAlive = new HttpAgent({ keepAlive: true, maxSockets: 1 });
      const client = async (useKeepAlive: boolean) => {
        while (isLoading) {
          sent++;
          try {
            const status = await get(
              ports.frontendToBackend,
              "/photos",
              useKeepAlive ? keepAlive : undefined,
            );
            if (status !== 200) failures.push(`answered ${status}`);
          } catch (err) {
            failures.push((err as Error).message);
          }
        }
      };
      const clients = [client(false), client(false), client(false), client(true)];
      await new Promise((resolve) => setTimeout(resolve, 300));
      const before = Object.fromEntries(WORKLOADS.map(({ name }) => [name, agent.svid(name)!.serialNumber]));
      const renewed = Object.fromEntries(
        await Promise.all(
          WORKLOADS.map(async ({ name }) => [name, (await agent.renew(name)).serialNumber] as const),
        ),
      );
      const from = records.length;
      await new Promise((resolve) => setTimeout(resolve, 500));
      isLoading = false;
      await Promise.all(clients);
      keepAlive.destroy();
      const sawFrontend = records.slice(from).some((r) =>
        r.listener === "photo-backend" && r.peerSerial === renewed["photo-frontend"]
      );
      const sawBackend = records.slice(from).some((r) =>
        r.listener === "datastore" && r.peerSerial === renewed["photo-backend"]
      );
      const rotated = WORKLOADS.every(({ name }) => renewed[name] !== before[name]);
      const line =
        `photo-frontend, photo-backend and datastore rotated (new keys, new certificates) while 4 clients sent ${sent} ` +
        `requests through the proxies, frontend -> backend -> datastore: ${failures.length} failed`;
      if (rotated && failures.length === 0 && sent > 0) term.ok(line);
      else term.fail(`${line}${failures.length ? ` (${failures[0]})` : ""}`);
      if (sawFrontend && sawBackend) {
        term.ok(
          `the next connections presented the new certificates: photo-backend's proxy saw photo-frontend's serial ` +
            `${shortSerial(renewed["photo-frontend"])}, the datastore's saw photo-backend's ${
              shortSerial(renewed["photo-backend"])
            }`,
        );
      } else term.fail("no connection after the rotation presented the new certificates");
    }],
    ["A root rotation reaching every workload with no restart", async () => {
      const overlapSeconds = 3;
      const config = mesh.prepared.config;
      const activeFrom = new Date(Date.now() + overlapSeconds * 1000);
      const root = await initRoot(config, openKeyManager(config), { activeFrom });
      const trustChanges = () =>
        WORKLOADS.map(({ name }) => proxy.metrics.trustChanges.value({ workload: name }));
      const changesBefore = trustChanges();
      process.kill(mesh.ca.pid, "SIGHUP");
      const addedAt = performance.now();
      term.ok(
        `added a new root (what meshauth ca rotate --overlap-seconds ${overlapSeconds} does) and told the CA with SIGHUP: ` +
          `published at once, it signs ${overlapSeconds} s later`,
      );
      await until("the new root in every workload's files", async () => {
        for (const { name } of WORKLOADS) {
          const pem = await readFile(join(layout.workloadDir(name), "root-cert.pem"), "utf8");
          if (countCertificates(pem) < 2) return false;
        }
        if (countCertificates(agent.trustBundlePem()) < 2) return false;
        // Each workload's proxy side took a new bundle (it reads the agent's, now with both roots).
        return trustChanges().every((count, i) => count > changesBefore[i]);
      });
      term.ok(
        `${
          seconds(performance.now() - addedAt)
        } later every workload's root-cert.pem held both roots, and every proxy trusted ` +
          `both: no restart`,
      );
      await new Promise((resolve) =>
        setTimeout(resolve, Math.max(0, activeFrom.getTime() - Date.now() + 200))
      );
      const newRoot = TrustBundle.fromPem(TRUST_DOMAIN, root.certificateChainPem);
      const renewed = await Promise.all(WORKLOADS.map(({ name }) => agent.renew(name)));
      await Promise.all(renewed.map((svid) => verifySvid(svid.certificateChainPem, newRoot)));
      const from = records.length;
      const answer = await getJson(ports.frontendToBackend, "/photos");
      const serial = (name: WorkloadName) =>
        renewed[WORKLOADS.findIndex((w) => w.name === name)].serialNumber;
      // As in the rotation before: each proxy saw the caller's certificate from the new root.
      const sawNewChains = answer.status === 200 && await Promise.all([
        decision(
          "photo-backend's decision",
          (r) => r.listener === "photo-backend" && r.peerSerial === serial("photo-frontend"),
          from,
        ),
        decision(
          "the datastore's decision",
          (r) => r.listener === "datastore" && r.peerSerial === serial("photo-backend"),
          from,
        ),
      ]).then(() => true, () => false);
      if (answer.status === 200 && answer.body.datastoreSaw === BACKEND && sawNewChains) {
        term.ok(
          `once it signed, the three workloads renewed onto the new root, and frontend -> backend -> datastore ` +
            `answered 200: the proxies took the new chains with no restart`,
        );
      } else term.fail(`after the root rotation, frontend -> backend -> datastore answered ${answer.status}`);
    }],
  ];

  try {
    for (const [i, [title, play]] of steps.entries()) {
      term.step(i + 1, title);
      try {
        await play();
      } catch (err) {
        term.fail((err as Error).message);
      }
    }
  } finally {
    unsubscribe();
  }
}

/** A revocation through the CA's API, as an administrator (`POST /v1/revocations`). */
async function revoke(mesh: Mesh, serialNumber: string): Promise<void> {
  const ca = new Agent({ connect: { ca: mesh.running.agent.trustBundlePem() } });
  try {
    const answer = await fetch(`${mesh.ca.url}/v1/revocations`, {
      method: "POST",
      headers: { authorization: `Bearer ${mesh.prepared.adminToken}`, "content-type": "application/json" },
      body: JSON.stringify({ serialNumber, reason: "keyCompromise" }),
      dispatcher: ca,
    });
    if (answer.status !== 200) {
      throw new Error(`the CA answered the revocation with ${answer.status}: ${await answer.text()}`);
    }
  } finally {
    await ca.close();
  }
}

/** One GET, its status (its body read and dropped). */
function get(port: number, path: string, agent?: HttpAgent): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path, agent: agent ?? false }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode ?? 0));
    });
    req.setTimeout(5000, () => req.destroy(new Error("no answer within 5 s")));
    req.on("error", reject);
    req.end();
  });
}

/** A keep-alive HTTP/1.1 connection by hand: requests one after another, and the moment it closes. */
function openConnection(
  port: number,
): Promise<{ get(path: string): Promise<number>; closed: Promise<number>; destroy(): void }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, "127.0.0.1");
    let buffered = "";
    let waiting: ((status: number) => void) | undefined;
    const closed = new Promise<number>((resolveClosed) =>
      socket.once("close", () => resolveClosed(performance.now()))
    );
    socket.setEncoding("utf8");
    socket.on("data", (data) => {
      buffered += data;
      const head = buffered.indexOf("\r\n\r\n");
      if (head < 0 || !waiting) return;
      const length = Number(/content-length: (\d+)/i.exec(buffered.slice(0, head))?.[1] ?? 0);
      if (buffered.length < head + 4 + length) return;
      const status = Number(buffered.slice(9, 12));
      buffered = buffered.slice(head + 4 + length);
      const done = waiting;
      waiting = undefined;
      done(status);
    });
    socket.on("error", () => {});
    socket.once("connect", () =>
      resolve({
        get: (path) =>
          new Promise((resolveStatus, rejectStatus) => {
            waiting = resolveStatus;
            socket.write(`GET ${path} HTTP/1.1\r\nHost: photo-backend\r\n\r\n`);
            setTimeout(() => rejectStatus(new Error(`no answer to GET ${path} within 5 s`)), 5000).unref();
          }),
        closed,
        destroy: () => socket.destroy(),
      }));
    socket.once("error", reject);
  });
}
