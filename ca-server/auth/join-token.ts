/**
 * Join tokens: `<id>.<secret>` bearer tokens for bootstrapping a workload, a node agent or an
 * administrator. The store keeps only the SHA-256 of the secret; the id finds the record and
 * the secret's digest is compared in constant time. Tokens expire, and a single-use token is
 * spent atomically when it is used for an issuance.
 *
 * @example
 * ```ts
 * import { createJoinToken, FileStore } from "meshauth/ca-server";
 * const store = new FileStore("./.meshauth/store");
 * await store.open();
 * const { token } = await createJoinToken(store, { role: "workload", spiffeId: "spiffe://example.org/demo", ttlSeconds: 3600 });
 * ```
 * @module
 */

import type { CryptoProvider } from "../../mod.ts";
import { fromHex, toBase64Url, toHex, webCryptoProvider } from "../../internal/mod.ts";
import { Problem } from "../problems.ts";
import type { CaStore, JoinTokenRecord, JoinTokenRole } from "../store/store.ts";
import type { Authenticator, Credentials, NodeWorkloads, Principal } from "./principal.ts";

const TOKEN = /^([0-9a-f]{16})\.([A-Za-z0-9_-]{43})$/;

async function sha256(text: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
}

/** Compares two equal-length byte strings without an early exit, so timing reveals nothing. */
export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  let diff = a.length ^ b.length;
  for (let i = 0; i < Math.max(a.length, b.length); i++) diff |= (a[i] ?? 0) ^ (b[i] ?? 0);
  return diff === 0;
}

/** True when `token` has the join token shape (and is therefore not a JWT). */
export function isJoinToken(token: string): boolean {
  return TOKEN.test(token);
}

/** What a new join token is for. */
export interface JoinTokenRequest {
  /** Who the token lets in: a workload, a node agent, or an administrator. */
  role: JoinTokenRole;
  /** For `workload`: the SPIFFE ID it may obtain. */
  spiffeId?: string;
  /** For `node`: the node name; the node's SPIFFE ID is `nodeIdOf(trustDomain, node)`. */
  node?: string;
  /** How long the token stays valid, in seconds. */
  ttlSeconds: number;
  /** Whether the token is spent by its first use (true by default). */
  isSingleUse?: boolean;
  /** The creation time; now by default. */
  now?: Date;
}

/**
 * Makes a join token, stores its record (secret hashed) and returns the token text, which is
 * shown once and never stored.
 */
export async function createJoinToken(
  store: CaStore,
  request: JoinTokenRequest,
): Promise<{ token: string; record: JoinTokenRecord }> {
  if (request.role === "workload" && !request.spiffeId) {
    throw new Error("a workload join token needs a SPIFFE ID");
  }
  if (request.role === "node" && !request.node) throw new Error("a node join token needs a node name");
  if (!Number.isSafeInteger(request.ttlSeconds) || request.ttlSeconds <= 0) {
    throw new Error(`ttlSeconds must be a positive whole number, got ${request.ttlSeconds}`);
  }
  const id = toHex(crypto.getRandomValues(new Uint8Array(8)));
  const secret = toBase64Url(crypto.getRandomValues(new Uint8Array(32)));
  const now = request.now ?? new Date();
  const record: JoinTokenRecord = {
    id,
    secretSha256: toHex(await sha256(secret)),
    role: request.role,
    spiffeId: request.spiffeId,
    node: request.node,
    expiresAt: new Date(now.getTime() + request.ttlSeconds * 1000),
    isSingleUse: request.isSingleUse ?? request.role !== "admin",
    createdAt: now,
  };
  await store.saveJoinToken(record);
  return { token: `${id}.${secret}`, record };
}

/** The SPIFFE ID of a node agent: `spiffe://<td>/node/<name>`. */
export function nodeIdOf(trustDomain: string, node: string): string {
  return `spiffe://${trustDomain}/node/${node}`;
}

/** Options of {@link JoinTokenAuthenticator}. */
export interface JoinTokenAuthenticatorOptions {
  /** Where the tokens are looked up (by id, secret as SHA-256). */
  store: CaStore;
  /** The CA's trust domain, for the SPIFFE IDs of node tokens. */
  trustDomain: string;
  /** Which workloads a node token's agent may obtain certificates for. */
  nodeWorkloads: NodeWorkloads;
  /**
   * Hashes the presented secret. WebCrypto by default; the Node entry passes node:crypto,
   * which spares every request a trip to the thread pool.
   */
  crypto?: CryptoProvider;
  /** The clock that decides expiry; the system's by default. */
  now?: () => Date;
}

/** Authenticates join tokens against the store. */
export class JoinTokenAuthenticator implements Authenticator {
  /** Credentials it takes: `Bearer <id>.<secret>` join tokens. */
  readonly method = "join-token" as const;
  /** An authenticator checking join tokens against `options.store`. */
  constructor(readonly options: JoinTokenAuthenticatorOptions) {}

  /** The principal of a valid join token; undefined for a bearer that is not one; a Problem for a bad one. */
  async authenticate(credentials: Credentials): Promise<Principal | undefined> {
    const token = credentials.bearerToken;
    const m = token === undefined ? null : TOKEN.exec(token);
    if (!m) return undefined;
    const [, id, secret] = m;
    const record = await this.options.store.findJoinToken(id);
    // Hash even when the id is unknown, so both paths take the same time.
    const secretBytes = new TextEncoder().encode(secret);
    const presented = await (this.options.crypto ?? webCryptoProvider).digest("SHA-256", secretBytes);
    const expected = record && /^[0-9a-f]{64}$/.test(record.secretSha256)
      ? fromHex(record.secretSha256)
      : new Uint8Array(32);
    if (!record || !constantTimeEqual(presented, expected)) {
      throw new Problem("ERR_TOKEN_INVALID", "the join token is not one this CA issued", { tokenId: id });
    }
    const now = this.options.now?.() ?? new Date();
    if (record.expiresAt <= now) {
      throw new Problem("ERR_TOKEN_EXPIRED", `the join token expired at ${record.expiresAt.toISOString()}`, {
        tokenId: id,
      });
    }
    if (record.isSingleUse && record.usedAt) {
      throw new Problem("ERR_TOKEN_USED", "the single-use join token was already used", { tokenId: id });
    }
    const store = this.options.store;
    const consume = record.isSingleUse
      ? async () => {
        if (!(await store.markJoinTokenUsed(id, now))) {
          throw new Problem("ERR_TOKEN_USED", "the single-use join token was already used", { tokenId: id });
        }
      }
      : undefined;
    if (record.role === "admin") {
      return { method: "join-token", requester: `token:${id}`, allowedIds: [], isAdmin: true, consume };
    }
    if (record.role === "node" && record.node) {
      const nodeId = nodeIdOf(this.options.trustDomain, record.node);
      const workloads = await this.options.nodeWorkloads(record.node);
      return {
        method: "join-token",
        requester: nodeId,
        allowedIds: [nodeId, ...workloads],
        isAdmin: false,
        node: record.node,
        consume,
      };
    }
    if (record.role === "workload" && record.spiffeId) {
      return {
        method: "join-token",
        requester: record.spiffeId,
        allowedIds: [record.spiffeId],
        isAdmin: false,
        consume,
      };
    }
    throw new Problem("ERR_TOKEN_INVALID", "the join token's record is incomplete", { tokenId: id });
  }
}
