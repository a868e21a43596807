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

import { readFile } from "node:fs/promises";
import { isAbsolute, resolve } from "node:path";
import { parse as parseYaml } from "yaml";
import { KEY_ALGORITHMS, type KeyAlgorithm, MeshAuthError, SpiffeId, TrustDomain } from "../mod.ts";
import type { LogLevel } from "../internal/mod.ts";

/** The validated configuration. */
export interface CaConfig {
  trustDomain: string;
  /** Where the embedded store and the file key manager live. */
  dataDir: string;
  listen: {
    host: string;
    port: number;
    /** Plain HTTP instead of TLS; refused unless `host` is a loopback address. */
    plainHttp: boolean;
    /** Extra DNS names for the serving certificate (`localhost` is always there). */
    dnsNames: string[];
  };
  /** `fsync: false` (file store): acknowledge once the kernel has the journal, sync once a second. */
  store: { kind: "file"; fsync: boolean } | { kind: "postgres"; url: string; maxConnections: number };
  keys: { kind: "file"; dir: string };
  issuance: { defaultTtlSeconds: number; maxTtlSeconds: number };
  ca: { keyAlgorithm: KeyAlgorithm; ttlSeconds: number };
  crl: { nextUpdateSeconds: number };
  /** `false` turns rate limiting off (for benchmarks). */
  rateLimit: { requestsPerSecond: number; burst: number } | false;
  /** SPIFFE IDs allowed to use the administrative API with their SVID. */
  admins: string[];
  /** Node name to the SPIFFE IDs of the workloads placed on it. */
  nodes: Record<string, string[]>;
  /** SPIFFE ID to the DNS names its certificates may carry. */
  dnsNames: Record<string, string[]>;
  kubernetes?: {
    issuer?: string;
    audiences: string[];
    jwksFile?: string;
    jwksUrl?: string;
    tokenReview?: { url: string; tokenFile: string; caFile?: string };
  };
  log: { level: LogLevel };
  /** Worker processes serving the API (node:cluster); 1 serves from the main process. */
  workers: number;
}

/** A configuration that cannot be used; `problems` lists each field and what was wrong. */
export class ConfigError extends MeshAuthError {
  static override code = "ERR_CONFIG";
  override code = ConfigError.code;
  override name = "ConfigError";
  constructor(readonly source: string, readonly problems: string[]) {
    super(`invalid configuration (${source}):\n${problems.map((p) => `  - ${p}`).join("\n")}`);
  }
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

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|::1|localhost)$/;

/** True for loopback hosts, the only ones plain HTTP may listen on. */
export function isLoopback(host: string): boolean {
  return LOOPBACK.test(host);
}

type Raw = Record<string, unknown>;

function setPath(target: Raw, path: string, value: unknown): void {
  const parts = path.split(".");
  let node = target;
  for (const p of parts.slice(0, -1)) {
    if (typeof node[p] !== "object" || node[p] === null) node[p] = {};
    node = node[p] as Raw;
  }
  node[parts.at(-1)!] = value;
}

/** Reads, overrides and validates. `path` may be omitted (defaults plus environment). */
export async function loadConfig(
  options: { path?: string; env?: Record<string, string | undefined>; overrides?: Raw; cwd?: string } = {},
): Promise<CaConfig> {
  const cwd = options.cwd ?? process.cwd();
  let raw: Raw = {};
  const source = options.path ?? "defaults";
  if (options.path) {
    let text: string;
    try {
      text = await readFile(options.path, "utf8");
    } catch (err) {
      throw new ConfigError(source, [`cannot read the file: ${(err as Error).message}`]);
    }
    try {
      raw = (options.path.endsWith(".json") ? JSON.parse(text) : parseYaml(text)) ?? {};
    } catch (err) {
      throw new ConfigError(source, [
        `not valid ${options.path.endsWith(".json") ? "JSON" : "YAML"}: ${(err as Error).message}`,
      ]);
    }
    if (typeof raw !== "object" || Array.isArray(raw)) {
      throw new ConfigError(source, ["the top level must be a mapping"]);
    }
  }
  const fromEnv = new Map<string, string>();
  for (const [name, path] of Object.entries(ENV_OVERRIDES)) {
    const value = options.env?.[name];
    if (value === undefined || value === "") continue;
    if (name === "MESHAUTH_STORE_URL") setPath(raw, "store.kind", "postgres");
    setPath(raw, path, value);
    fromEnv.set(path, name);
  }
  for (const [path, value] of Object.entries(options.overrides ?? {})) {
    if (value !== undefined) setPath(raw, path, value);
  }
  try {
    return validate(raw, source, cwd);
  } catch (err) {
    if (!(err instanceof ConfigError) || fromEnv.size === 0) throw err;
    // A bad value that came from the environment is reported under its variable's name.
    throw new ConfigError(
      source,
      err.problems.map((problem) => {
        const path = problem.slice(0, problem.indexOf(":"));
        const name = fromEnv.get(path);
        return name ? `${path} (from ${name})${problem.slice(path.length)}` : problem;
      }),
    );
  }
}

function validate(raw: Raw, source: string, cwd: string): CaConfig {
  const problems: string[] = [];
  const known = new Set([
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
  for (const key of Object.keys(raw)) if (!known.has(key)) problems.push(`${key}: unknown field`);

  const str = (path: string, value: unknown, fallback?: string): string => {
    if (value === undefined) {
      if (fallback === undefined) problems.push(`${path}: required`);
      return fallback ?? "";
    }
    if (typeof value !== "string" || value === "") {
      problems.push(`${path}: expected a non-empty string, got ${JSON.stringify(value)}`);
      return fallback ?? "";
    }
    return value;
  };
  const int = (path: string, value: unknown, fallback: number, min: number, max: number): number => {
    if (value === undefined) return fallback;
    const n = typeof value === "string" && /^\d+$/.test(value) ? Number(value) : value;
    if (typeof n !== "number" || !Number.isSafeInteger(n) || n < min || n > max) {
      problems.push(`${path}: expected a whole number from ${min} to ${max}, got ${JSON.stringify(value)}`);
      return fallback;
    }
    return n;
  };
  const bool = (path: string, value: unknown, fallback: boolean): boolean => {
    if (value === undefined) return fallback;
    if (value === true || value === "true" || value === "1") return true;
    if (value === false || value === "false" || value === "0") return false;
    problems.push(`${path}: expected true or false, got ${JSON.stringify(value)}`);
    return fallback;
  };
  /** A mapping whose keys must all be in `fields`: a misspelt key is an error, not a default. */
  const obj = (path: string, value: unknown, fields?: readonly string[], alternative = ""): Raw => {
    if (value === undefined) return {};
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      problems.push(`${path}: expected a mapping${alternative}`);
      return {};
    }
    for (const key of Object.keys(value)) {
      if (fields && !fields.includes(key)) {
        problems.push(`${path}.${key}: unknown field (known: ${fields.join(", ")})`);
      }
    }
    return value as Raw;
  };
  const spiffeIds = (path: string, value: unknown): string[] => {
    if (value === undefined) return [];
    if (!Array.isArray(value)) {
      problems.push(`${path}: expected a list of SPIFFE IDs`);
      return [];
    }
    return value.flatMap((v, i) => {
      try {
        return [SpiffeId.parse(String(v)).toString()];
      } catch (err) {
        problems.push(`${path}[${i}]: ${(err as Error).message}`);
        return [];
      }
    });
  };
  const strings = (path: string, value: unknown): string[] => {
    if (value === undefined) return [];
    if (!Array.isArray(value) || value.some((v) => typeof v !== "string")) {
      problems.push(`${path}: expected a list of strings`);
      return [];
    }
    return value as string[];
  };
  const dir = (p: string) => (isAbsolute(p) ? p : resolve(cwd, p));

  const trustDomain = str("trustDomain", raw.trustDomain, "meshauth.local");
  try {
    TrustDomain.parse(trustDomain);
  } catch (err) {
    problems.push(`trustDomain: ${(err as Error).message}`);
  }
  const dataDir = dir(str("dataDir", raw.dataDir, ".meshauth"));

  const listenRaw = obj("listen", raw.listen, ["host", "port", "plainHttp", "dnsNames"]);
  const listen = {
    host: str("listen.host", listenRaw.host, "127.0.0.1"),
    port: int("listen.port", listenRaw.port, 8443, 0, 65535),
    plainHttp: bool("listen.plainHttp", listenRaw.plainHttp, false),
    dnsNames: strings("listen.dnsNames", listenRaw.dnsNames),
  };
  if (listen.plainHttp && !isLoopback(listen.host)) {
    problems.push(`listen.plainHttp: plain HTTP is allowed only on a loopback address, not ${listen.host}`);
  }

  const storeRaw = obj("store", raw.store, ["kind", "fsync", "url", "maxConnections"]);
  const kind = str("store.kind", storeRaw.kind, "file");
  let store: CaConfig["store"] = { kind: "file", fsync: bool("store.fsync", storeRaw.fsync, true) };
  if (kind === "postgres") {
    store = {
      kind: "postgres",
      url: str("store.url", storeRaw.url),
      maxConnections: int("store.maxConnections", storeRaw.maxConnections, 10, 1, 1000),
    };
  } else if (kind !== "file") {
    problems.push(`store.kind: expected "file" or "postgres", got ${JSON.stringify(kind)}`);
  }

  const keysRaw = obj("keys", raw.keys, ["kind", "dir"]);
  if (keysRaw.kind !== undefined && keysRaw.kind !== "file") {
    problems.push(`keys.kind: only "file" is supported`);
  }
  const keys = { kind: "file" as const, dir: dir(str("keys.dir", keysRaw.dir, `${dataDir}/keys`)) };

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
    problems.push("issuance.defaultTtlSeconds: must not exceed issuance.maxTtlSeconds");
  }

  const caRaw = obj("ca", raw.ca, ["keyAlgorithm", "ttlSeconds"]);
  const keyAlgorithm = str("ca.keyAlgorithm", caRaw.keyAlgorithm, "ECDSA-P256") as KeyAlgorithm;
  if (!KEY_ALGORITHMS.includes(keyAlgorithm)) {
    problems.push(
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

  let rateLimit: CaConfig["rateLimit"] = { requestsPerSecond: 5, burst: 50 };
  if (raw.rateLimit === false || raw.rateLimit === "false") rateLimit = false;
  else {
    const r = obj("rateLimit", raw.rateLimit, ["requestsPerSecond", "burst"], " or false");
    rateLimit = {
      requestsPerSecond: int("rateLimit.requestsPerSecond", r.requestsPerSecond, 5, 1, 1_000_000),
      burst: int("rateLimit.burst", r.burst, 50, 1, 1_000_000),
    };
  }

  const nodesRaw = obj("nodes", raw.nodes);
  const nodes: Record<string, string[]> = {};
  for (const [name, value] of Object.entries(nodesRaw)) {
    if (!/^[A-Za-z0-9._-]+$/.test(name)) {
      problems.push(`nodes.${name}: a node name may hold letters, digits, ".", "_", "-"`);
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
      "tokenReview",
    ]);
    const tr = k.tokenReview === undefined
      ? undefined
      : obj("kubernetes.tokenReview", k.tokenReview, ["url", "tokenFile", "caFile"]);
    kubernetes = {
      issuer: k.issuer === undefined ? undefined : str("kubernetes.issuer", k.issuer),
      audiences: strings("kubernetes.audiences", k.audiences),
      jwksFile: k.jwksFile === undefined ? undefined : dir(str("kubernetes.jwksFile", k.jwksFile)),
      jwksUrl: k.jwksUrl === undefined ? undefined : str("kubernetes.jwksUrl", k.jwksUrl),
      tokenReview: tr && {
        url: str("kubernetes.tokenReview.url", tr.url),
        tokenFile: dir(str("kubernetes.tokenReview.tokenFile", tr.tokenFile)),
        caFile: tr.caFile === undefined ? undefined : dir(str("kubernetes.tokenReview.caFile", tr.caFile)),
      },
    };
    if (kubernetes.audiences.length === 0) problems.push("kubernetes.audiences: list at least one audience");
    if (!kubernetes.jwksFile && !kubernetes.jwksUrl && !kubernetes.tokenReview) {
      problems.push("kubernetes: set jwksFile, jwksUrl or tokenReview");
    }
    if ((kubernetes.jwksFile || kubernetes.jwksUrl) && !kubernetes.issuer) {
      problems.push("kubernetes.issuer: required to validate tokens offline");
    }
  }

  const logRaw = obj("log", raw.log, ["level"]);
  const level = str("log.level", logRaw.level, "info") as LogLevel;
  if (!["debug", "info", "warn", "error"].includes(level)) {
    problems.push(`log.level: expected debug, info, warn or error, got ${JSON.stringify(level)}`);
  }
  const workers = int("workers", raw.workers, 1, 1, 64);
  const admins = spiffeIds("admins", raw.admins);

  if (problems.length > 0) throw new ConfigError(source, problems);
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
