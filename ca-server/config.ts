/**
 * The CA server's configuration: a YAML or JSON file, then `MESHAUTH_*` environment
 * overrides, validated into {@link CaConfig}. Every problem is reported with the field's path
 * and what was expected, all at once, as a {@link ConfigError}.
 *
 * @example
 * ```ts
 * import { loadConfig } from "meshauth/ca-server";
 * const config = await loadConfig({ path: "ca.yaml", env: process.env });
 * ```
 * @module
 */

import { KEY_ALGORITHMS, type KeyAlgorithm, TrustDomain } from "../mod.ts";
import {
  ConfigError,
  type ConfigSources,
  FieldReader,
  isLoopbackHost,
  loadConfigFile,
  type LogLevel,
  type RawConfig,
} from "../internal/mod.ts";
import {
  KUBERNETES_CONTROLLER_KEYS,
  type KubernetesControllersConfig,
  readKubernetesControllers,
} from "./kubernetes/config.ts";

export { ConfigError };

/** The validated configuration. */
export interface CaConfig {
  /** The trust domain the CA issues for (`example.org`). */
  trustDomain: string;
  /** Where the embedded store and the file key manager live. */
  dataDir: string;
  /** Where the API listens and how it serves TLS. */
  listen: {
    host: string;
    port: number;
    /** Plain HTTP instead of TLS; refused unless `host` is a loopback address. */
    plainHttp: boolean;
    /** Extra DNS names for the serving certificate (`localhost` is always there). */
    dnsNames: string[];
  };
  /**
   * The file store: `fsync: false` acknowledges once the kernel has the journal and syncs once a
   * second; the journal is compacted past `segmentBytes`, keeping `keepSegments` archived segments
   * (0: all); expired certificates stay findable for `retainExpiredSeconds`.
   */
  store:
    | {
      kind: "file";
      fsync: boolean;
      segmentBytes: number;
      keepSegments: number;
      retainExpiredSeconds: number;
    }
    | { kind: "postgres"; url: string; maxConnections: number };
  /** Where the CA's keys are kept: a directory of key files. */
  keys: { kind: "file"; dir: string };
  /** Lifetimes of issued certificates, in seconds: the default and the most a caller may ask. */
  issuance: { defaultTtlSeconds: number; maxTtlSeconds: number };
  /** The root CA `ca init` creates: its key algorithm and lifetime in seconds. */
  ca: { keyAlgorithm: KeyAlgorithm; ttlSeconds: number };
  /** How long each CRL is valid, in seconds. */
  crl: { nextUpdateSeconds: number };
  /**
   * Per address, requester and identity (`requestsPerSecond`, `burst`), grown per workload for a
   * node agent (`perWorkload`), for the whole CA's issuances (`global`, off when absent), and
   * this process's issuances at once (`maxConcurrentIssuances`); `false` turns them all off (for
   * benchmarks).
   */
  rateLimit:
    | {
      requestsPerSecond: number;
      burst: number;
      perWorkload: { requestsPerSecond: number; burst: number };
      global?: { requestsPerSecond: number; burst: number };
      maxConcurrentIssuances: number;
    }
    | false;
  /** SPIFFE IDs allowed to use the administrative API with their SVID. */
  admins: string[];
  /** Node name to the SPIFFE IDs of the workloads placed on it. */
  nodes: Record<string, string[]>;
  /** SPIFFE ID to the DNS names its certificates may carry. */
  dnsNames: Record<string, string[]>;
  /** Service-account tokens, and (with `api`) the controllers of ca-server/kubernetes/. */
  kubernetes?: KubernetesControllersConfig & {
    issuer?: string;
    audiences: string[];
    jwksFile?: string;
    jwksUrl?: string;
    /** The CA certificate(s) that verify `jwksUrl`'s server (the cluster's `ca.crt`). */
    jwksCaFile?: string;
    tokenReview?: { url: string; tokenFile: string; caFile?: string };
  };
  /** The lowest level logged. */
  log: { level: LogLevel };
  /** Worker processes serving the API (node:cluster); 1 serves from the main process. */
  workers: number;
}

/** Environment variables that override the file, and the fields they set. */
export const ENV_OVERRIDES: Record<string, string> = {
  MESHAUTH_TRUST_DOMAIN: "trustDomain",
  MESHAUTH_DATA_DIR: "dataDir",
  MESHAUTH_LISTEN_HOST: "listen.host",
  MESHAUTH_LISTEN_PORT: "listen.port",
  MESHAUTH_PLAIN_HTTP: "listen.plainHttp",
  MESHAUTH_STORE_URL: "store.url",
  MESHAUTH_LOG_LEVEL: "log.level",
  MESHAUTH_WORKERS: "workers",
};

/** True for `localhost`, `127.0.0.0/8` and `::1` (any spelling): the hosts plain HTTP may listen on. */
export function isLoopback(host: string): boolean {
  return isLoopbackHost(host);
}

/** Reads, overrides and validates. `path` may be omitted (defaults plus environment). */
export function loadConfig(options: ConfigSources = {}): Promise<CaConfig> {
  return loadConfigFile(options, ENV_OVERRIDES, validate, (raw, variable) => {
    // A database URL from the environment means the PostgreSQL store.
    if (variable === "MESHAUTH_STORE_URL") raw.store = { ...(raw.store as RawConfig), kind: "postgres" };
  });
}

function validate(raw: RawConfig, fields: FieldReader): CaConfig {
  fields.knownKeys(raw, [
    "trustDomain",
    "dataDir",
    "listen",
    "store",
    "keys",
    "issuance",
    "ca",
    "crl",
    "rateLimit",
    "admins",
    "nodes",
    "dnsNames",
    "kubernetes",
    "log",
    "workers",
  ]);
  const str = fields.str.bind(fields);
  const int = fields.int.bind(fields);
  const bool = fields.bool.bind(fields);
  const obj = fields.obj.bind(fields);
  const strings = fields.strings.bind(fields);
  const spiffeIds = fields.spiffeIds.bind(fields);

  const trustDomain = str("trustDomain", raw.trustDomain, "meshauth.local");
  try {
    TrustDomain.parse(trustDomain);
  } catch (err) {
    fields.problem(`trustDomain: ${(err as Error).message}`);
  }
  const dataDir = fields.path("dataDir", raw.dataDir, ".meshauth");

  const listenRaw = obj("listen", raw.listen, ["host", "port", "plainHttp", "dnsNames"]);
  const listen = {
    host: str("listen.host", listenRaw.host, "127.0.0.1"),
    port: int("listen.port", listenRaw.port, 8443, 0, 65535),
    plainHttp: bool("listen.plainHttp", listenRaw.plainHttp, false),
    dnsNames: strings("listen.dnsNames", listenRaw.dnsNames),
  };
  if (listen.plainHttp && !isLoopback(listen.host)) {
    fields.problem(`listen.plainHttp: plain HTTP is allowed only on a loopback address, not ${listen.host}`);
  }

  const storeRaw = obj("store", raw.store, [
    "kind",
    "fsync",
    "segmentBytes",
    "keepSegments",
    "retainExpiredSeconds",
    "url",
    "maxConnections",
  ]);
  const kind = str("store.kind", storeRaw.kind, "file");
  let store: CaConfig["store"] = {
    kind: "file",
    fsync: bool("store.fsync", storeRaw.fsync, true),
    segmentBytes: int("store.segmentBytes", storeRaw.segmentBytes, 64 * 1024 * 1024, 4096, 2 ** 40),
    keepSegments: int("store.keepSegments", storeRaw.keepSegments, 32, 0, 1_000_000),
    retainExpiredSeconds: int(
      "store.retainExpiredSeconds",
      storeRaw.retainExpiredSeconds,
      86400,
      0,
      366 * 86400,
    ),
  };
  if (kind === "postgres") {
    store = {
      kind: "postgres",
      url: str("store.url", storeRaw.url),
      maxConnections: int("store.maxConnections", storeRaw.maxConnections, 10, 1, 1000),
    };
  } else if (kind !== "file") {
    fields.problem(`store.kind: expected "file" or "postgres", got ${JSON.stringify(kind)}`);
  }

  const keysRaw = obj("keys", raw.keys, ["kind", "dir"]);
  if (keysRaw.kind !== undefined && keysRaw.kind !== "file") {
    fields.problem(`keys.kind: only "file" is supported`);
  }
  const keys = { kind: "file" as const, dir: fields.path("keys.dir", keysRaw.dir, `${dataDir}/keys`) };

  const issuanceRaw = obj("issuance", raw.issuance, ["defaultTtlSeconds", "maxTtlSeconds"]);
  const issuance = {
    defaultTtlSeconds: int(
      "issuance.defaultTtlSeconds",
      issuanceRaw.defaultTtlSeconds,
      86400,
      60,
      366 * 86400,
    ),
    maxTtlSeconds: int("issuance.maxTtlSeconds", issuanceRaw.maxTtlSeconds, 7 * 86400, 60, 366 * 86400),
  };
  if (issuance.defaultTtlSeconds > issuance.maxTtlSeconds) {
    fields.problem("issuance.defaultTtlSeconds: must not exceed issuance.maxTtlSeconds");
  }

  const caRaw = obj("ca", raw.ca, ["keyAlgorithm", "ttlSeconds"]);
  const keyAlgorithm = str("ca.keyAlgorithm", caRaw.keyAlgorithm, "ECDSA-P256") as KeyAlgorithm;
  if (!KEY_ALGORITHMS.includes(keyAlgorithm)) {
    fields.problem(
      `ca.keyAlgorithm: expected one of ${KEY_ALGORITHMS.join(", ")}, got ${JSON.stringify(keyAlgorithm)}`,
    );
  }
  const ca = {
    keyAlgorithm,
    ttlSeconds: int("ca.ttlSeconds", caRaw.ttlSeconds, 10 * 365 * 86400, 3600, 30 * 365 * 86400),
  };

  const crlRaw = obj("crl", raw.crl, ["nextUpdateSeconds"]);
  const crl = {
    nextUpdateSeconds: int("crl.nextUpdateSeconds", crlRaw.nextUpdateSeconds, 3600, 60, 7 * 86400),
  };

  let rateLimit: CaConfig["rateLimit"] = false;
  if (raw.rateLimit !== false && raw.rateLimit !== "false") {
    const r = obj(
      "rateLimit",
      raw.rateLimit,
      ["requestsPerSecond", "burst", "perWorkload", "global", "maxConcurrentIssuances"],
      " or false",
    );
    // Fractions for slow rates: 0.1 is one request every 10 s.
    const bucket = (path: string, value: unknown, rate: number, burst: number, alternative = "") => {
      const b = obj(path, value, ["requestsPerSecond", "burst"], alternative);
      return {
        requestsPerSecond: fields.num(
          `${path}.requestsPerSecond`,
          b.requestsPerSecond,
          rate,
          0.001,
          1_000_000,
        ),
        burst: fields.num(
          `${path}.burst`,
          b.burst,
          burst,
          path === "rateLimit.perWorkload" ? 0 : 1,
          1_000_000,
        ),
      };
    };
    rateLimit = {
      requestsPerSecond: fields.num("rateLimit.requestsPerSecond", r.requestsPerSecond, 5, 0.001, 1_000_000),
      burst: int("rateLimit.burst", r.burst, 50, 1, 1_000_000),
      perWorkload: bucket("rateLimit.perWorkload", r.perWorkload, 0.1, 2),
      global: r.global === undefined || r.global === false || r.global === "false"
        ? undefined
        : bucket("rateLimit.global", r.global, 1000, 1000, " or false"),
      maxConcurrentIssuances: int(
        "rateLimit.maxConcurrentIssuances",
        r.maxConcurrentIssuances,
        64,
        1,
        100_000,
      ),
    };
  }

  const nodesRaw = obj("nodes", raw.nodes);
  const nodes: Record<string, string[]> = {};
  for (const [name, value] of Object.entries(nodesRaw)) {
    if (!/^[A-Za-z0-9._-]+$/.test(name)) {
      fields.problem(`nodes.${name}: a node name may hold letters, digits, ".", "_", "-"`);
    }
    nodes[name] = spiffeIds(`nodes.${name}.workloads`, obj(`nodes.${name}`, value, ["workloads"]).workloads);
  }
  const dnsRaw = obj("dnsNames", raw.dnsNames);
  const dnsNames: Record<string, string[]> = {};
  for (const [id, value] of Object.entries(dnsRaw)) dnsNames[id] = strings(`dnsNames.${id}`, value);

  let kubernetes: CaConfig["kubernetes"];
  if (raw.kubernetes !== undefined) {
    const k = obj("kubernetes", raw.kubernetes, [
      "issuer",
      "audiences",
      "jwksFile",
      "jwksUrl",
      "jwksCaFile",
      "tokenReview",
      ...KUBERNETES_CONTROLLER_KEYS,
    ]);
    const tr = k.tokenReview === undefined
      ? undefined
      : obj("kubernetes.tokenReview", k.tokenReview, ["url", "tokenFile", "caFile"]);
    kubernetes = {
      issuer: k.issuer === undefined ? undefined : str("kubernetes.issuer", k.issuer),
      audiences: strings("kubernetes.audiences", k.audiences),
      jwksFile: k.jwksFile === undefined ? undefined : fields.path("kubernetes.jwksFile", k.jwksFile),
      jwksUrl: k.jwksUrl === undefined ? undefined : str("kubernetes.jwksUrl", k.jwksUrl),
      jwksCaFile: k.jwksCaFile === undefined ? undefined : fields.path("kubernetes.jwksCaFile", k.jwksCaFile),
      tokenReview: tr && {
        url: str("kubernetes.tokenReview.url", tr.url),
        tokenFile: fields.path("kubernetes.tokenReview.tokenFile", tr.tokenFile),
        caFile: tr.caFile === undefined ? undefined : fields.path("kubernetes.tokenReview.caFile", tr.caFile),
      },
      ...readKubernetesControllers(fields, k, { maxTtlSeconds: issuance.maxTtlSeconds }),
    };
    if (kubernetes.audiences.length === 0) fields.problem("kubernetes.audiences: list at least one audience");
    if (kubernetes.api && (kubernetes.jwksFile || kubernetes.jwksUrl || kubernetes.tokenReview)) {
      fields.problem(
        "kubernetes.api: tokens are reviewed through the API server; remove jwksFile, jwksUrl and tokenReview",
      );
    } else if (!kubernetes.api && !kubernetes.jwksFile && !kubernetes.jwksUrl && !kubernetes.tokenReview) {
      fields.problem("kubernetes: set api, jwksFile, jwksUrl or tokenReview");
    }
    if (kubernetes.jwksCaFile && !kubernetes.jwksUrl) {
      fields.problem("kubernetes.jwksCaFile: goes with jwksUrl (it verifies that server)");
    }
    if ((kubernetes.jwksFile || kubernetes.jwksUrl) && !kubernetes.issuer) {
      fields.problem("kubernetes.issuer: required to validate tokens offline");
    }
  }

  const logRaw = obj("log", raw.log, ["level"]);
  const level = str("log.level", logRaw.level, "info") as LogLevel;
  if (!["debug", "info", "warn", "error"].includes(level)) {
    fields.problem(`log.level: expected debug, info, warn or error, got ${JSON.stringify(level)}`);
  }
  const workers = int("workers", raw.workers, 1, 1, 64);
  const admins = spiffeIds("admins", raw.admins);

  return {
    trustDomain,
    dataDir,
    listen,
    store,
    keys,
    issuance,
    ca,
    crl,
    rateLimit,
    admins,
    nodes,
    dnsNames,
    kubernetes,
    log: { level },
    workers,
  };
}
