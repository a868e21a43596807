/**
 * Serving the CA app on Node with `@hono/node-server`: TLS by default with a serving
 * certificate the CA issues to itself (renewed at half its life), client certificates
 * requested (and verified by the app, not by the TLS layer, so a missing one is not a
 * handshake failure), plain HTTP only on loopback when asked, and time and size limits on
 * the listener.
 *
 * @example
 * ```ts
 * import { loadConfig, startCaServer } from "meshauth/ca-server";
 * const server = await startCaServer(await loadConfig({ env: process.env }));
 * console.log(server.url);
 * await server.close();
 * ```
 * @module
 */

import { createServer as createHttpsServer, type Server as HttpsServer } from "node:https";
import type { Server as HttpServer } from "node:http";
import type { TLSSocket } from "node:tls";
import { type HttpBindings, serve } from "@hono/node-server";
import type { Context } from "hono";
import { createCsr, encodePem, exportPrivateKeyPem, generateKeyPair, SpiffeId } from "../mod.ts";
import { createCaApp } from "./app.ts";
import type { Authorities } from "./authorities.ts";
import { type CaConfig, isLoopback } from "./config.ts";
import { jsonLogger, type Logger } from "./logger.ts";
import { CaMetrics } from "./metrics.ts";
import { buildAuthenticators, loadAuthorities, openKeyManager, openStore } from "./setup.ts";
import type { CaStore } from "./store/store.ts";

const AUTHORITY_RELOAD_MS = 30_000;

/** A running CA server. */
export interface RunningCaServer {
  /** `https://localhost:<port>` (or `http://127.0.0.1:<port>` for plain HTTP). */
  url: string;
  port: number;
  authorities: Authorities;
  store: CaStore;
  /** Stops accepting connections, ends open ones and closes the store. */
  close(): Promise<void>;
}

/** The TLS client's chain as PEM, leaf first, from the Node socket under the request. */
export function nodeClientCertificate(c: Context): string | undefined {
  const socket = (c.env as HttpBindings | undefined)?.incoming?.socket as TLSSocket | undefined;
  if (!socket || typeof socket.getPeerCertificate !== "function") return undefined;
  let cert = socket.getPeerCertificate(true);
  if (!cert || !cert.raw) return undefined;
  const pems: string[] = [];
  for (let i = 0; i < 8 && cert?.raw; i++) {
    pems.push(encodePem("CERTIFICATE", new Uint8Array(cert.raw)));
    if (!cert.issuerCertificate || cert.issuerCertificate === cert) break;
    cert = cert.issuerCertificate;
  }
  return pems.join("");
}

/** The client's address from the Node socket. */
export function nodeClientAddress(c: Context): string | undefined {
  return (c.env as HttpBindings | undefined)?.incoming?.socket?.remoteAddress;
}

async function servingCredentials(
  authorities: Authorities,
  store: CaStore,
  config: CaConfig,
): Promise<{ key: string; cert: string; notAfter: Date; notBefore: Date }> {
  const id = SpiffeId.fromSegments(authorities.trustDomain, "meshauth", "ca-server");
  const keys = await generateKeyPair("ECDSA-P256");
  const dnsNames = ["localhost", ...config.listen.dnsNames];
  const authority = authorities.active();
  const issued = await authority.ca.issue(await createCsr({ keys, id, dnsNames }), {
    id,
    dnsNames,
    ttlSeconds: Math.min(86400, config.issuance.maxTtlSeconds),
  });
  await store.recordIssuance({
    serialNumber: issued.serialNumber,
    spiffeId: id.toString(),
    notBefore: issued.notBefore,
    notAfter: issued.notAfter,
    issuedAt: new Date(),
    requester: "ca-server",
    method: "self",
    authorityId: authority.record.id,
  });
  return {
    key: await exportPrivateKeyPem(keys.privateKey),
    cert: issued.chainPem,
    notBefore: issued.notBefore,
    notAfter: issued.notAfter,
  };
}

/** Starts the CA from a configuration; the store and key manager must be initialised (`ca init`). */
export async function startCaServer(
  config: CaConfig,
  options: { logger?: Logger; metrics?: CaMetrics } = {},
): Promise<RunningCaServer> {
  const logger = options.logger ?? jsonLogger({ level: config.log.level });
  if (config.listen.plainHttp && !isLoopback(config.listen.host)) {
    throw new Error(`plain HTTP is allowed only on loopback, not ${config.listen.host}`);
  }
  const store = await openStore(config);
  let authorities: Authorities;
  try {
    authorities = await loadAuthorities(config, openKeyManager(config));
    authorities.active();
  } catch (err) {
    await store.close();
    throw err;
  }
  const app = createCaApp({
    authorities,
    store,
    authenticators: await buildAuthenticators(config, store, authorities),
    logger,
    metrics: options.metrics ?? new CaMetrics(),
    rateLimit: config.rateLimit,
    crlNextUpdateSeconds: config.crl.nextUpdateSeconds,
    allowedDnsNames: (id) => config.dnsNames[id] ?? [],
    clientCertificate: nodeClientCertificate,
    clientAddress: nodeClientAddress,
  });

  let renewal: ReturnType<typeof setTimeout> | undefined;
  let currentCredentials = { key: "", cert: "" };
  let server: HttpServer | HttpsServer;
  if (config.listen.plainHttp) {
    server = serve({
      fetch: app.fetch,
      port: config.listen.port,
      hostname: config.listen.host,
    }) as HttpServer;
  } else {
    const credentials = await servingCredentials(authorities, store, config);
    currentCredentials = { key: credentials.key, cert: credentials.cert };
    const https = serve({
      fetch: app.fetch,
      port: config.listen.port,
      hostname: config.listen.host,
      createServer: createHttpsServer,
      serverOptions: {
        key: credentials.key,
        cert: credentials.cert,
        // Ask for a client SVID but let the app decide: renewal uses it, issuance with a token does not.
        requestCert: true,
        rejectUnauthorized: false,
        ca: authorities.bundlePem(),
        minVersion: "TLSv1.2",
        maxHeaderSize: 16 * 1024,
      },
    }) as HttpsServer;
    server = https;
    const scheduleRenewal = (notBefore: Date, notAfter: Date) => {
      const delay = Math.max(60_000, (notAfter.getTime() - notBefore.getTime()) / 2);
      renewal = setTimeout(async () => {
        try {
          const next = await servingCredentials(authorities, store, config);
          currentCredentials = { key: next.key, cert: next.cert };
          https.setSecureContext({
            ...currentCredentials,
            ca: authorities.bundlePem(),
            minVersion: "TLSv1.2",
          });
          logger.info("serving certificate renewed", { notAfter: next.notAfter.toISOString() });
          scheduleRenewal(next.notBefore, next.notAfter);
        } catch (err) {
          logger.error("serving certificate renewal failed", { error: err });
          scheduleRenewal(new Date(), new Date(Date.now() + 120_000));
        }
      }, Math.min(delay, 2 ** 31 - 1));
      renewal.unref?.();
    };
    scheduleRenewal(credentials.notBefore, credentials.notAfter);
  }
  // Authorities added by `meshauth ca rotate` (or another replica) are picked up without a restart.
  const reload = setInterval(async () => {
    const before = authorities.bundlePem();
    try {
      await authorities.reload();
    } catch (err) {
      logger.error("reloading CA authorities failed", { error: err });
      return;
    }
    if (authorities.bundlePem() !== before) {
      logger.info("trust bundle changed", { authorities: authorities.published().map((a) => a.record.id) });
      if (!config.listen.plainHttp) {
        (server as HttpsServer).setSecureContext({
          ...currentCredentials,
          ca: authorities.bundlePem(),
          minVersion: "TLSv1.2",
        });
      }
    }
  }, AUTHORITY_RELOAD_MS);
  reload.unref?.();
  // Slow clients cannot hold a connection open: whole request 15 s, headers 10 s, idle 5 s.
  server.requestTimeout = 15_000;
  server.headersTimeout = 10_000;
  server.keepAliveTimeout = 5_000;
  server.maxRequestsPerSocket = 10_000;

  await new Promise<void>((resolve, reject) => {
    if (server.listening) return resolve();
    server.once("listening", resolve);
    server.once("error", reject);
  });
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : config.listen.port;
  const url = config.listen.plainHttp ? `http://${config.listen.host}:${port}` : `https://localhost:${port}`;
  logger.info("listening", {
    url,
    port,
    host: config.listen.host,
    tls: !config.listen.plainHttp,
    trustDomain: config.trustDomain,
    store: store.description,
    authority: authorities.active().record.id,
  });
  let closed = false;
  return {
    url,
    port,
    authorities,
    store,
    async close() {
      if (closed) return;
      closed = true;
      if (renewal) clearTimeout(renewal);
      clearInterval(reload);
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections?.();
      });
      await store.close();
    },
  };
}
