// Listeners on Unix domain sockets: the socket file's mode and owner (who may connect), and
// what the proxy does with a file already at the path (a stale socket, a live one, not a socket).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { lstat, mkdir, readFile, stat, writeFile } from "node:fs/promises";
import { connect, createServer } from "node:net";
import { join } from "node:path";
import { MeshProxy, ProxyListenError } from "../../agent/mod.ts";
import {
  echoServer,
  exchange,
  IDS,
  proxyConfig,
  startProxy,
  tempDir,
  TestCa,
  TestSource,
} from "./proxy-support.ts";

let dir: { path: string; remove: () => Promise<void> };
let sources: Record<string, TestSource>;
let upstreamPort: number;
const closers: (() => Promise<void>)[] = [];

before(async () => {
  dir = await tempDir();
  const ca = await TestCa.create();
  sources = { "photo-frontend": new TestSource(await ca.issue(IDS.frontend), ca.bundle()) };
  // Outbound listeners only need an upstream address to be configured; nothing connects in these tests.
  const echo = await echoServer();
  closers.push(echo.close);
  upstreamPort = echo.port;
});

after(async () => {
  for (const close of closers.reverse()) await close();
  await dir?.remove();
});

/** An outbound listener config on `listen`. */
function outbound(name: string, listen: unknown) {
  return {
    outbound: [{
      name,
      service: "photo-backend",
      workload: "photo-frontend",
      listen,
      upstream: `127.0.0.1:${upstreamPort}`,
      allowedIds: [IDS.backend],
    }],
  };
}

/** Whether something accepts connections on the socket at `path`. */
function canConnect(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ path });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

/** A user and group other than this process's when it may give sockets away (root), else its own. */
function otherIds(): { owner: string; uid: number; group: string; gid: number } {
  const byName = (file: string, name: string) =>
    Number(readFileSync(file, "utf8").split("\n").find((l) => l.startsWith(`${name}:`))!.split(":")[2]);
  if (process.getuid?.() === 0) {
    return {
      owner: "nobody",
      uid: byName("/etc/passwd", "nobody"),
      group: "daemon",
      gid: byName("/etc/group", "daemon"),
    };
  }
  const uid = process.getuid!();
  const gid = process.getgid!();
  const line = (file: string, id: number) =>
    readFileSync(file, "utf8").split("\n").find((l) => l.split(":")[2] === String(id))!.split(":")[0];
  return { owner: line("/etc/passwd", uid), uid, group: line("/etc/group", gid), gid };
}

test(
  "a listener's Unix socket is created with mode 0660 by default, or the mode, owner and group configured",
  {
    timeout: 30_000,
  },
  async () => {
    const plain = join(dir.path, "default.sock");
    const defaults = await startProxy(outbound("default-mode", `unix:${plain}`), dir.path, sources);
    closers.push(() => defaults.proxy.stop());
    assert.equal((await stat(plain)).mode & 0o777, 0o660);

    const ids = otherIds();
    const owned = join(dir.path, "owned.sock");
    const configured = await startProxy(
      outbound("owned", { path: owned, mode: "0600", owner: ids.owner, group: ids.group }),
      dir.path,
      sources,
    );
    closers.push(() => configured.proxy.stop());
    const info = await stat(owned);
    assert.equal(info.mode & 0o777, 0o600);
    assert.equal(info.uid, ids.uid);
    assert.equal(info.gid, ids.gid);

    assert.throws(
      () => proxyConfig(outbound("octal", { path: join(dir.path, "x.sock"), mode: 660 }), dir.path),
      /mode: expected an octal mode as a string, such as "0660", got 660/,
    );
    assert.throws(
      () =>
        proxyConfig(
          {
            ...outbound("fwd", "127.0.0.1:0"),
            inbound: [{ name: "in", workload: "w", listen: 0, forward: { path: "/x", mode: "0600" } }],
          },
          dir.path,
        ),
      /forward: unknown field mode/,
    );
    const unknownOwner = new MeshProxy({
      config: proxyConfig(
        {
          auditLog: join(dir.path, "audit.jsonl"),
          ...outbound("no-such-user", { path: join(dir.path, "u.sock"), owner: "no-such-user" }),
        },
        dir.path,
      ),
      sources,
    });
    await assert.rejects(unknownOwner.start(), (err: Error) => {
      assert.ok(err instanceof ProxyListenError, String(err));
      assert.match(err.message, /no user named no-such-user in \/etc\/passwd/);
      return true;
    });
  },
);

test(
  "a stale socket left by a crashed process is replaced; a live one, or a file that is not a socket, refuses the start",
  {
    timeout: 30_000,
  },
  async () => {
    // A process that dies while it listens leaves its socket file behind.
    const stale = join(dir.path, "stale.sock");
    // (Node from PATH: the test also runs on Deno, whose binary takes other arguments.)
    const crashed = spawnSync("node", [
      "-e",
      `require("node:net").createServer().listen(${
        JSON.stringify(stale)
      }, () => process.kill(process.pid, "SIGKILL"))`,
    ], { timeout: 10_000 });
    assert.equal(crashed.signal, "SIGKILL");
    assert.ok((await lstat(stale)).isSocket());
    const replaced = await startProxy(outbound("stale", `unix:${stale}`), dir.path, sources);
    closers.push(() => replaced.proxy.stop());
    assert.equal(await canConnect(stale), true);
    assert.deepEqual(replaced.address("stale"), { path: stale });

    const live = join(dir.path, "live.sock");
    const accepted = new Set<import("node:net").Socket>();
    const other = createServer((socket) => {
      accepted.add(socket);
      socket.on("error", () => {});
      socket.end("the other process\n");
    });
    await new Promise<void>((resolve) => other.listen(live, resolve));
    closers.push(() => {
      for (const socket of accepted) socket.destroy();
      return new Promise<void>((resolve) => other.close(() => resolve()));
    });
    const notFile = join(dir.path, "not-a-socket");
    await writeFile(notFile, "keep me\n");
    const directory = join(dir.path, "a-directory");
    await mkdir(directory);
    for (
      const [path, reason] of [
        [live, /another process listens on this socket/],
        [notFile, /a file that is not a socket is there/],
        [directory, /a file that is not a socket is there/],
      ] as const
    ) {
      const proxy = new MeshProxy({
        config: proxyConfig(
          { auditLog: join(dir.path, "audit.jsonl"), ...outbound("taken", `unix:${path}`) },
          dir.path,
        ),
        sources,
      });
      await assert.rejects(proxy.start(), (err: Error) => {
        assert.ok(err instanceof ProxyListenError, String(err));
        assert.equal(err.code, "ERR_PROXY_LISTEN");
        assert.match(err.message, reason);
        return true;
      });
    }
    assert.equal(await readFile(notFile, "utf8"), "keep me\n");
    assert.equal(
      (await exchange({ path: live }, "x", 3000, { untilClosed: true })).reply,
      "the other process\n",
    );
  },
);
