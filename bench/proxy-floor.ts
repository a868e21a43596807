// bench/proxy-floor.ts: the floor of bench/proxy.ts, a minimal Node mutual-TLS relay doing only
// the essential work: TLS 1.3 with a client certificate, the chain checked by OpenSSL against
// the bundle (`ca`, `rejectUnauthorized`), and pipe() both ways. No SPIFFE checks, secure
// naming, policy, audit, metrics, limits or revalidation. No proxy on Node can do less per
// byte or per connection, so meshauth's ratio to it is what its own work costs, and the
// floor's ratio to HAProxy is what Node itself allows.
//
//   node --import tsx bench/proxy-floor.ts <config.json>
//
// config: { role: "client" | "server", routes: [{ listen: port, target: port }], cert, key,
// ca (file paths), resumption: boolean, groups: "X25519:P-256" }.
import { readFileSync } from "node:fs";
import { connect, createServer } from "node:net";
import { connect as tlsConnect, createServer as createTlsServer } from "node:tls";

interface FloorConfig {
  role: "client" | "server";
  routes: { listen: number; target: number }[];
  cert: string;
  key: string;
  ca: string;
  resumption: boolean;
  groups: string;
}

const config = JSON.parse(readFileSync(process.argv[2], "utf8")) as FloorConfig;
const tls = {
  cert: readFileSync(config.cert),
  key: readFileSync(config.key),
  ca: readFileSync(config.ca),
  minVersion: "TLSv1.3" as const,
  ecdhCurve: config.groups,
};

for (const route of config.routes) {
  if (config.role === "client") {
    let session: Buffer | undefined;
    const server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, (local) => {
      const remote = tlsConnect({
        ...tls,
        host: "127.0.0.1",
        port: route.target,
        rejectUnauthorized: true,
        // SPIFFE SVIDs name no host; the chain is what is checked.
        checkServerIdentity: () => undefined,
        session: config.resumption ? session : undefined,
      });
      if (config.resumption) remote.on("session", (s) => session = s);
      remote.once("secureConnect", () => {
        local.pipe(remote).pipe(local);
        local.resume();
      });
      local.setNoDelay(true);
      remote.setNoDelay(true);
      const close = () => {
        local.destroy();
        remote.destroy();
      };
      local.on("error", close).on("close", close);
      remote.on("error", close).on("close", close);
    });
    server.listen(route.listen, "127.0.0.1");
  } else {
    const server = createTlsServer({
      ...tls,
      requestCert: true,
      rejectUnauthorized: true,
      ...(config.resumption
        ? {}
        : { secureOptions: (await import("node:crypto")).constants.SSL_OP_NO_TICKET }),
    }, (remote) => {
      remote.pause();
      const local = connect(route.target, "127.0.0.1", () => {
        remote.pipe(local).pipe(remote);
        remote.resume();
      });
      local.setNoDelay(true);
      remote.setNoDelay(true);
      const close = () => {
        local.destroy();
        remote.destroy();
      };
      local.on("error", close).on("close", close);
      remote.on("error", close).on("close", close);
    });
    server.listen(route.listen, "127.0.0.1");
  }
}
console.log(JSON.stringify({ msg: "ready", pid: process.pid }));
