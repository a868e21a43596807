/**
 * Serving the CA app as a process, on Node or Bun (the sockets are chosen per runtime in
 * `http-listener.ts`): TLS by default with a serving certificate the CA issues to itself (renewed
 * at half its life), client certificates requested (and verified by the app, not by the TLS
 * layer, so a missing one is not a handshake failure), plain HTTP only on loopback when
 * asked, and time and size limits on the listener.
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

import cluster from "node:cluster";
import { isIP } from "node:net";
import { networkInterfaces } from "node:os";
import { createCsr, exportPrivateKeyPem, generateKeyPair, renewalTime, SpiffeId } from "../mod.ts";
import { createCaApp } from "./app.ts";
import type { Authorities } from "./authorities.ts";
import { type CaConfig, isLoopback } from "./config.ts";
import {
  checkListenAddress,
  clientAddress,
  clientCertificate,
  listen,
  type Listener,
} from "./http-listener.ts";
import { jsonLogger, type Logger } from "../internal/mod.ts";
import { CaMetrics } from "./metrics.ts";
import { WorkerGroup } from "./process-group.ts";
import {
  buildAuthenticators,
  loadAuthorities,
  openKeyManager,
  openStore,
  trustBundlePath,
  writeTrustBundle,
} from "./from-config.ts";
import type { CaStore } from "./store/store.ts";
import type { KubernetesIntegration } from "./kubernetes/integration.ts";

const AUTHORITY_RELOAD_MS = 30_000;

/** A running CA server. */
export interface RunningCaServer {
  /** `https://<host>:<port>` (or `http://` for plain HTTP), with `127.0.0.1` for a wildcard host. */
  url: string;
  /** The port the API listens on (the one bound, when 0 was asked). */
  port: number;
  /** The CA's authorities, reloaded from the key manager every 30 s. */
  authorities: Authorities;
  /** The open store. */
  store: CaStore;
  /**
   * Reads the key manager's authorities again now (they are also read every 30 s): a root
   * added by `meshauth ca rotate` is published at once. `meshauth ca serve` does this on SIGHUP.
   */
  reloadAuthorities(): Promise<void>;
  /** Stops accepting connections, ends open ones and closes the store. */
  close(): Promise<void>;
}

const WILDCARD_HOSTS = new Set(["0.0.0.0", "::", "[::]"]);

/**
 * The names a client may use to reach a listener on `host`, all of which the serving
 * certificate must carry: `localhost`, the configured DNS names, and every IP address the
 * listener answers on (each interface's address for a wildcard host).
 */
export function servingNames(host: string, extraDnsNames: readonly string[]): {
  dnsNames: string[];
  ipAddresses: string[];
} {
  const dnsNames = [...new Set(["localhost", ...extraDnsNames.map((n) => n.toLowerCase())])];
  let ipAddresses: string[];
  if (WILDCARD_HOSTS.has(host)) {
    ipAddresses = Object.values(networkInterfaces()).flatMap((list) =>
      (list ?? []).filter((i) => host === "0.0.0.0" ? i.family === "IPv4" : true).map((i) =>
        i.address.replace(/%.*$/, "")
      )
    );
  } else if (host === "localhost") {
    ipAddresses = ["127.0.0.1", "::1"];
  } else if (isIP(host.replace(/^\[|\]$/g, ""))) {
    ipAddresses = [host.replace(/^\[|\]$/g, "")];
  } else {
    ipAddresses = [];
    if (!dnsNames.includes(host.toLowerCase())) dnsNames.push(host.toLowerCase());
  }
  return { dnsNames, ipAddresses: [...new Set(ipAddresses)] };
}

/** How a client on this machine reaches a listener on `host`. */
function urlHost(host: string): string {
  if (WILDCARD_HOSTS.has(host)) return "127.0.0.1";
  return isIP(host) === 6 ? `[${host}]` : host;
}

interface ServingCredentials {
  key: string;
  cert: string;
  notAfter: Date;
  notBefore: Date;
  /** Recorded in the store once the certificate is served, so a failed start writes nothing. */
  record: () => Promise<void>;
}

async function servingCredentials(
  authorities: Authorities,
  store: CaStore,
  config: CaConfig,
): Promise<ServingCredentials> {
  const id = SpiffeId.fromSegments(authorities.trustDomain, "meshauth", "ca-server");
  const keys = await generateKeyPair("ECDSA-P256");
  const { dnsNames, ipAddresses } = servingNames(config.listen.host, config.listen.dnsNames);
  const authority = authorities.active();
  const issued = await authority.ca.issue(await createCsr({ keys, id, dnsNames, ipAddresses }), {
    id,
    dnsNames,
    ipAddresses,
    ttlSeconds: Math.min(86400, config.issuance.maxTtlSeconds),
  });
  const issuedAt = new Date();
  return {
    key: await exportPrivateKeyPem(keys.privateKey),
    cert: issued.chainPem,
    notBefore: issued.notBefore,
    notAfter: issued.notAfter,
    record: () =>
      store.recordIssuance({
        serialNumber: issued.serialNumber,
        spiffeId: id.toString(),
        notBefore: issued.notBefore,
        notAfter: issued.notAfter,
        issuedAt,
        requester: "ca-server",
        method: "self",
        authorityId: authority.record.id,
      }),
  };
}

/**
 * Checks, opening nothing, what would stop {@link startCaServer} at once: no authority that
 * signs now, and a listen address that cannot be taken.
 */
/**
 * When a failed renewal of the CA's serving certificate is tried again: within a tenth of what
 * the served certificate has left (so a short one is retried several times before it expires),
 * at most a minute on and at least a second.
 */
export function servingRetryDelayMs(notAfter: Date, now: number): number {
  return Math.max(1000, Math.min(60_000, (notAfter.getTime() - now) / 10));
}

export async function checkCaCanStart(config: CaConfig): Promise<void> {
  (await loadAuthorities(config, openKeyManager(config))).active();
  await checkListenAddress(config.listen.host, config.listen.port);
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
  // What an operator must fix (no authority, a port in use) is found before the store is
  // opened (or created), so that it is the only thing the start prints.
  const authorities = await loadAuthorities(config, openKeyManager(config));
  authorities.active();
  // A worker's socket is the primary's, which checked the address before forking.
  if (!cluster.isWorker) await checkListenAddress(config.listen.host, config.listen.port);
  const store = await openStore(config, { logger });
  const metrics = options.metrics ?? new CaMetrics();
  let kubernetes: KubernetesIntegration | undefined;
  try {
    // Loaded only when asked for: @kubernetes/client-node is heavy to import.
    if (config.kubernetes?.api) {
      const { startKubernetesIntegration } = await import("./kubernetes/integration.ts");
      kubernetes = await startKubernetesIntegration(config, { authorities, store, logger, metrics });
    }
  } catch (err) {
    await store.close();
    throw err;
  }
  // A worker's limits and metrics are the whole CA's: the store's buckets when it shares them
  // across replicas (PostgreSQL), else the primary's; its metrics are reported with the others'.
  const group = cluster.isWorker ? new WorkerGroup(metrics) : undefined;
  const rateLimiter = config.rateLimit === false
    ? undefined
    : store.sharedRateLimit?.(config.rateLimit) ?? group?.rateLimit();
  const app = createCaApp({
    authorities,
    store,
    authenticators: await buildAuthenticators(config, store, authorities, kubernetes),
    logger,
    metrics,
    rateLimit: config.rateLimit,
    rateLimiter,
    metricsOfGroup: group && (() => group.metricsOfGroup()),
    crlNextUpdateSeconds: config.crl.nextUpdateSeconds,
    allowedDnsNames: (id) => config.dnsNames[id] ?? [],
    clientCertificate,
    clientAddress,
  });

  let renewal: ReturnType<typeof setTimeout> | undefined;
  let currentCredentials = { key: "", cert: "" };
  const secureContext = () => ({
    ...currentCredentials,
    ca: authorities.bundlePem(),
    minVersion: "TLSv1.2" as const,
  });
  let server: Listener;
  const scheduleRenewal = (notBefore: Date, notAfter: Date) => {
    // Half-life, as workloads renew (the backdated notBefore counts: it is part of the
    // lifetime), and never sooner than 10 s from now, so renewals near the CA's own expiry
    // (which caps the lifetime) cannot follow one another every second; but a certificate with
    // less than 20 s left (a lifetime set below the configuration's minimum in code, or the
    // CA's own expiry near) renews at half what is left, at least 1 s on, not after it expired.
    const leftMs = notAfter.getTime() - Date.now();
    const floorMs = Math.max(1000, Math.min(10_000, leftMs / 2));
    schedule(Math.max(floorMs, renewalTime({ notBefore, notAfter }).getTime() - Date.now()), notAfter);
  };
  // notAfter is that of the certificate being served, which a failed renewal keeps serving: its
  // retry is paced by what that certificate has left.
  const schedule = (delay: number, notAfter: Date) => {
    renewal = setTimeout(async () => {
      try {
        const next = await servingCredentials(authorities, store, config);
        await next.record();
        currentCredentials = { key: next.key, cert: next.cert };
        server.setSecureContext(secureContext());
        logger.info("serving certificate renewed", { notAfter: next.notAfter.toISOString() });
        scheduleRenewal(next.notBefore, next.notAfter);
      } catch (err) {
        const retryMs = servingRetryDelayMs(notAfter, Date.now());
        logger.error("serving certificate renewal failed", { error: err, retryInSeconds: retryMs / 1000 });
        schedule(retryMs, notAfter);
      }
    }, Math.min(delay, 2 ** 31 - 1));
    renewal.unref?.();
  };
  let credentials: ServingCredentials | undefined;
  try {
    credentials = config.listen.plainHttp ? undefined : await servingCredentials(authorities, store, config);
    if (credentials) currentCredentials = { key: credentials.key, cert: credentials.cert };
    server = await listen(app, {
      host: config.listen.host,
      port: config.listen.port,
      tls: credentials ? secureContext() : undefined,
      isShared: cluster.isWorker,
    });
  } catch (err) {
    await kubernetes?.close();
    await store.close();
    throw err;
  }
  try {
    if (credentials) {
      await credentials.record();
      scheduleRenewal(credentials.notBefore, credentials.notAfter);
    }
    await writeTrustBundle(config, authorities);
  } catch (err) {
    await server.close();
    await kubernetes?.close();
    await store.close();
    throw err;
  }
  // Authorities added by `meshauth ca rotate` (or another replica) are picked up without a
  // restart: every 30 s, and at once on reloadAuthorities() (SIGHUP to `meshauth ca serve`).
  const reloadAuthorities = async () => {
    const before = authorities.bundlePem();
    try {
      await authorities.reload();
    } catch (err) {
      logger.error("reloading CA authorities failed", { error: err });
      return;
    }
    if (authorities.bundlePem() !== before) {
      logger.info("trust bundle changed", { authorities: authorities.published().map((a) => a.record.id) });
      if (!config.listen.plainHttp) server.setSecureContext(secureContext());
      await writeTrustBundle(config, authorities).catch((err) =>
        logger.error("writing the trust bundle file failed", { path: trustBundlePath(config), error: err })
      );
    }
  };
  const reload = setInterval(reloadAuthorities, AUTHORITY_RELOAD_MS);
  reload.unref?.();
  const port = server.port;
  const url = `${config.listen.plainHttp ? "http" : "https"}://${urlHost(config.listen.host)}:${port}`;
  logger.info("listening", {
    url,
    port,
    host: config.listen.host,
    tls: !config.listen.plainHttp,
    trustDomain: config.trustDomain,
    trustBundle: trustBundlePath(config),
    keys: config.keys.dir,
    store: store.description,
    server: server.kind,
    authority: authorities.active().record.id,
  });
  let closed = false;
  return {
    url,
    port,
    authorities,
    store,
    reloadAuthorities,
    async close() {
      if (closed) return;
      closed = true;
      if (renewal) clearTimeout(renewal);
      clearInterval(reload);
      await kubernetes?.close();
      await server.close();
      await store.close();
    },
  };
}
