/**
 * The seed's three services, each a tiny real HTTP server on a Unix socket in a directory only
 * this user can open: the only way to reach one from the network is its inbound proxy, which
 * tells it who called in `X-Forwarded-Client-Cert`. photo-backend calls the datastore through
 * its own outbound port, as a service in the mesh does: plain HTTP to a local port, mutual TLS
 * from there. And the story's impostor: a TLS server that holds the datastore's valid SVID.
 *
 * @module
 */

import { createServer, type IncomingMessage, request, type Server, type ServerResponse } from "node:http";
import { chmod, readFile } from "node:fs/promises";
import { createServer as createTlsServer, type Server as TlsServer } from "node:tls";
import type { Socket } from "node:net";
import type { MeshLayout, WorkloadName } from "./layout.ts";

/** A running service, with the requests it served. */
export interface App {
  name: WorkloadName;
  served: number;
  close(): Promise<void>;
}

/** The caller's SPIFFE ID as the inbound proxy vouched for it (Envoy's XFCC `URI=`). */
export function callerOf(request: IncomingMessage): string | undefined {
  const xfcc = request.headers["x-forwarded-client-cert"];
  return typeof xfcc === "string" ? /(?:^|;)URI=([^;,]+)/.exec(xfcc)?.[1] : undefined;
}

function json(response: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  response.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
  });
  response.end(text);
}

/** GET `path` on a local plain-text port (an outbound listener); the status and the parsed body. */
export function getJson(
  port: number,
  path: string,
  timeoutMs = 5000,
): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path, agent: false }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (d) => (text += d));
      res.on("end", () => {
        let body: unknown = text;
        try {
          body = JSON.parse(text);
        } catch {
          // not JSON: the text itself
        }
        resolve({ status: res.statusCode ?? 0, body });
      });
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on("error", reject);
    req.end();
  });
}

const PHOTOS = [
  { id: 1, title: "harbour at dawn" },
  { id: 2, title: "the old bridge" },
  { id: 3, title: "market street" },
];

async function listen(
  layout: MeshLayout,
  name: WorkloadName,
  handler: (req: IncomingMessage, res: ServerResponse) => void,
): Promise<App> {
  const sockets = new Set<Socket>();
  const app: App = { name, served: 0, close: () => Promise.resolve() };
  const server: Server = createServer((req, res) => {
    app.served++;
    handler(req, res);
  });
  // The proxy keeps its connection to the service open between requests.
  server.keepAliveTimeout = 10 * 60_000;
  server.on("connection", (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  const path = layout.socketOf(name);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(path, resolve);
  });
  await chmod(path, 0o600);
  app.close = () =>
    new Promise((resolve) => {
      for (const socket of sockets) socket.destroy();
      server.close(() => resolve());
    });
  return app;
}

/** Starts the three services. */
export async function startApps(layout: MeshLayout): Promise<Record<WorkloadName, App>> {
  const datastore = await listen(layout, "datastore", (req, res) => {
    json(res, 200, { objects: PHOTOS, servedBy: "datastore", caller: callerOf(req) ?? null });
  });
  const backend = await listen(layout, "photo-backend", (req, res) => {
    if (!req.url?.startsWith("/photos")) return json(res, 404, { error: "no such path" });
    getJson(layout.ports.backendToDatastore, "/objects/photos").then(
      (stored) =>
        json(res, stored.status === 200 ? 200 : 502, {
          photos: stored.body?.objects ?? [],
          servedBy: "photo-backend",
          caller: callerOf(req) ?? null,
          datastoreSaw: stored.body?.caller ?? null,
        }),
      (err) => json(res, 502, { error: `the datastore did not answer: ${(err as Error).message}` }),
    );
  });
  const frontend = await listen(layout, "photo-frontend", (_req, res) => {
    getJson(layout.ports.frontendToBackend, "/photos").then(
      (answer) => {
        const text = `photos (from photo-backend, from the datastore):\n${
          (answer.body?.photos ?? []).map((p: { id: number; title: string }) => `  ${p.id}. ${p.title}`).join(
            "\n",
          )
        }\n`;
        res.writeHead(answer.status, { "content-type": "text/plain; charset=utf-8" });
        res.end(text);
      },
      (err) => json(res, 502, { error: `photo-backend did not answer: ${(err as Error).message}` }),
    );
  });
  return { "photo-frontend": frontend, "photo-backend": backend, datastore };
}

/** The impostor: a TLS server presenting the datastore's SVID, which counts the bytes it is sent. */
export interface Impostor {
  bytesReceived: number;
  handshakes: number;
  close(): Promise<void>;
}

/**
 * Starts the impostor on its port with the datastore's key and certificate, read from the
 * datastore's files as an attacker who took them would: a real SVID of the mesh, valid and
 * verifiable, for the wrong identity.
 */
export async function startImpostor(layout: MeshLayout): Promise<Impostor> {
  const dir = layout.workloadDir("datastore");
  const [key, cert] = await Promise.all([
    readFile(`${dir}/key.pem`, "utf8"),
    readFile(`${dir}/cert-chain.pem`, "utf8"),
  ]);
  const sockets = new Set<Socket>();
  const impostor: Impostor = { bytesReceived: 0, handshakes: 0, close: () => Promise.resolve() };
  const server: TlsServer = createTlsServer(
    { key, cert, requestCert: true, rejectUnauthorized: false },
    (socket) => {
      impostor.handshakes++;
      sockets.add(socket);
      socket.on("data", (data) => (impostor.bytesReceived += data.length));
      socket.on("error", () => {});
      socket.on("close", () => sockets.delete(socket));
    },
  );
  server.on("tlsClientError", () => {});
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(layout.ports.impostor, "127.0.0.1", resolve);
  });
  impostor.close = () =>
    new Promise((resolve) => {
      for (const socket of sockets) socket.destroy();
      server.close(() => resolve());
    });
  return impostor;
}
