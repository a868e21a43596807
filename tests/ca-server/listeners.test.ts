// The CA's TLS listener cuts off slow clients on every runtime: headers that trickle in, a
// body that trickles in, and an idle keep-alive connection are each closed by the server
// within their limit. The listener runs in its own process (Node, or Bun in npm test's
// bun-ca step) with limits of a fraction of a second; each test waits at most 5 s.
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { connect, type TLSSocket } from "node:tls";
import { after, before, describe, it } from "node:test";
import { ROOT, SERVER_COMMAND } from "./helpers.ts";

const BOUND_MS = 5000;

describe("the CA's TLS listener and slow clients", () => {
  let child: ChildProcess;
  let port: number;
  let kind: string;

  before(async () => {
    child = spawn(SERVER_COMMAND[0], [...SERVER_COMMAND.slice(1), "tests/ca-server/fixtures/listen.ts"], {
      cwd: ROOT,
      stdio: ["ignore", "pipe", "inherit"],
    });
    const line = await new Promise<string>((resolve, reject) => {
      let out = "";
      const timer = setTimeout(() => reject(new Error("the listener did not start in 30 s")), 30_000);
      child.stdout!.on("data", (d) => {
        out += d;
        if (out.includes("\n")) {
          clearTimeout(timer);
          resolve(out.split("\n")[0]);
        }
      });
      child.once("exit", (code) => reject(new Error(`the listener exited with ${code}`)));
    });
    ({ port, kind } = JSON.parse(line));
  });

  after(async () => {
    if (child?.exitCode === null) {
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      await exited;
    }
  });

  /** Connects, runs `talk`, and resolves with whether the server closed the socket within the bound. */
  function closedByServer(talk: (socket: TLSSocket) => void): Promise<{ closed: boolean; received: string }> {
    return new Promise((resolve) => {
      let received = "";
      const socket = connect({ host: "127.0.0.1", port, servername: "localhost", rejectUnauthorized: false });
      const bound = setTimeout(() => {
        socket.destroy();
        resolve({ closed: false, received });
      }, BOUND_MS);
      socket.on("data", (d) => received += d);
      socket.on("error", () => {});
      socket.once("close", () => {
        clearTimeout(bound);
        resolve({ closed: true, received });
      });
      socket.once("secureConnect", () => talk(socket));
    });
  }

  /** Writes `text` one byte every 100 ms while the socket is open. */
  function trickle(socket: TLSSocket, text: string): void {
    let i = 0;
    const timer = setInterval(() => {
      if (socket.destroyed || i >= text.length) return clearInterval(timer);
      socket.write(text[i++]);
    }, 100);
    socket.once("close", () => clearInterval(timer));
  }

  it("closes a connection whose headers trickle in", async () => {
    const { closed } = await closedByServer((socket) => {
      socket.write("POST /echo HTTP/1.1\r\nHost: localhost\r\n");
      trickle(socket, `X-Slow: ${"a".repeat(200)}\r\n\r\n`);
    });
    assert.ok(closed, `the ${kind} listener kept a connection whose headers took ${BOUND_MS} ms`);
  });

  it("closes a request whose body trickles in", async () => {
    const { closed, received } = await closedByServer((socket) => {
      socket.write("POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 200\r\n\r\n");
      trickle(socket, "b".repeat(200));
    });
    assert.ok(closed, `the ${kind} listener kept a request whose body took ${BOUND_MS} ms`);
    assert.doesNotMatch(received, /"bytes":200/);
  });

  it("answers a prompt request, then closes the idle keep-alive connection", async () => {
    const { closed, received } = await closedByServer((socket) => {
      socket.write("POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\nabc");
    });
    assert.match(received, /^HTTP\/1\.1 200/);
    assert.match(received, /"bytes":3/);
    assert.ok(closed, `the ${kind} listener kept an idle connection for ${BOUND_MS} ms`);
  });
});
