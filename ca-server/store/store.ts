/**
 * The CA's persistent state behind one interface: issued certificates, revocations, the CRL
 * number, join tokens and the audit trail. Two implementations: {@link FileStore} (embedded,
 * crash-safe, in a data directory) and {@link PostgresStore} (shared by several replicas).
 *
 * @module
 */

import { MeshAuthError, type Revocation, REVOCATION_REASONS, type RevocationReason } from "../../mod.ts";
import type { RateLimit, RateLimitOptions } from "../rate-limit.ts";
import { writeFailureOf } from "../../internal/mod.ts";

// A hold can be lifted (this CA never un-revokes), removeFromCRL belongs to delta CRLs and
// aACompromise to attribute authorities: none of them revokes an X509-SVID for good.
const NOT_ACCEPTED: readonly RevocationReason[] = ["certificateHold", "removeFromCRL", "aACompromise"];

/** The RFC 5280 5.3.1 reasons (from the core's list) that the server accepts for a revocation. */
export const ACCEPTED_REVOCATION_REASONS = REVOCATION_REASONS.filter((r) =>
  !NOT_ACCEPTED.includes(r)
) as readonly AcceptedRevocationReason[];

/** A CRL reason the server accepts. */
export type AcceptedRevocationReason = Exclude<
  RevocationReason,
  "certificateHold" | "removeFromCRL" | "aACompromise"
>;

/** One certificate the CA issued, as the store keeps it. */
export interface CertificateRecord {
  /** Lowercase hex of the serial number. */
  serialNumber: string;
  /** The SPIFFE ID the certificate proves. */
  spiffeId: string;
  /** Start of its validity. */
  notBefore: Date;
  /** End of its validity. */
  notAfter: Date;
  /** When the CA signed it. */
  issuedAt: Date;
  /** Who asked: the authenticated identity and how it authenticated. */
  requester: string;
  /** How the requester authenticated (`join-token`, `kubernetes`, `mtls`). */
  method: string;
  /** Which CA authority signed it. */
  authorityId: string;
}

/** One revoked certificate: the CRL entry, and what the store needs to keep and expire it. */
export interface RevocationRecord extends Revocation {
  /** Why it was revoked. */
  reason: AcceptedRevocationReason;
  /** The SPIFFE ID of the revoked certificate. */
  spiffeId: string;
  /** The certificate's expiry: once past, the entry may leave the CRL (RFC 5280 3.3). */
  notAfter: Date;
  /** The authority that signed the certificate, whose CRL lists it. */
  authorityId: string;
}

/** What a revocation did: the entries it added, and those that were revoked before. */
export interface RevocationOutcome {
  /** The certificates this revocation revoked. */
  revoked: RevocationRecord[];
  /** Certificates the selector named that were already revoked, as they were revoked then. */
  alreadyRevoked: RevocationRecord[];
}

/** A CRL number taken together with the revocations that CRL must list. */
export interface CrlClaim {
  /** The CRL number taken: unique and increasing across every process. */
  crlNumber: bigint;
  /** The {@link CaStore.revocationRevision} these revocations are from. */
  revision: number;
  /** Revocations of certificates not expired at the claim's `at`, of every authority. */
  revocations: RevocationRecord[];
}

/** A CRL as signed and stored, so every process serves the same one: the newest. */
export interface SignedCrl {
  /** The authority that signed the CRL. */
  authorityId: string;
  /** Its CRL number. */
  crlNumber: bigint;
  /** The revocation revision its entries are from. */
  revision: number;
  /** When it was signed. */
  thisUpdate: Date;
  /** The CRL, DER. */
  der: Uint8Array;
}

/** What decides whether the stored CRL still serves: the current revision, and the stored CRL's. */
export interface CrlStatus {
  /** The current revocation revision. */
  revision: number;
  /** The newest stored CRL, without its DER, if any. */
  latest?: Omit<SignedCrl, "der">;
}

/** Who a join token lets in. */
export type JoinTokenRole = "workload" | "node" | "admin";

/** A join token as stored: the secret only as its SHA-256. */
export interface JoinTokenRecord {
  /** The public half of the token (`<id>.<secret>`), used to find it. */
  id: string;
  /** SHA-256 of the secret half, lowercase hex. */
  secretSha256: string;
  /** Who the token lets in. */
  role: JoinTokenRole;
  /** For workload tokens, the SPIFFE ID it may obtain; for node tokens, the node's SPIFFE ID. */
  spiffeId?: string;
  /** For node tokens, the node name. */
  node?: string;
  /** When the token stops being accepted. */
  expiresAt: Date;
  /** Whether the first use spends it. */
  isSingleUse: boolean;
  /** When a single-use token was spent. */
  usedAt?: Date;
  /** When the token was created. */
  createdAt: Date;
}

/** One audit event: every issuance, denial and revocation, with who asked. */
export interface AuditEvent {
  /** When it happened. */
  at: Date;
  /** `issued`, `denied`, `revoked`, `token-created`, `authority-added`. */
  action: string;
  /** The authenticated requester (a SPIFFE ID, `token:<id>`, `cli:<user>`), or `anonymous`. */
  requester: string;
  /** Fields of the event: serial numbers, SPIFFE IDs, reasons, problem codes. */
  details: Record<string, unknown>;
}

/** What a revocation request selects. */
export type RevocationSelector =
  | { serialNumber: string; reason: AcceptedRevocationReason }
  | { spiffeId: string; reason: AcceptedRevocationReason };

/**
 * Persistent CA state. Every method is safe to call concurrently, from several processes
 * sharing the store, and reads see every change that completed before they were called.
 */
export interface CaStore {
  /** A short name for logs (`file:/path`, `postgres`). */
  readonly description: string;
  /** Opens the store, creating or migrating its schema. */
  open(): Promise<void>;
  /** Closes the store (its files or connections); call it once, after the last use. */
  close(): Promise<void>;

  /** Records one issued certificate. */
  recordIssuance(certificate: CertificateRecord): Promise<void>;
  /** The issued certificate with this serial number, if the store has it (expired ones for a while). */
  findCertificate(serialNumber: string): Promise<CertificateRecord | undefined>;
  /** Issued certificates, newest first, optionally for one SPIFFE ID. */
  listCertificates(query: { spiffeId?: string; limit?: number }): Promise<CertificateRecord[]>;

  /**
   * Revokes one serial, or every unexpired certificate of one SPIFFE ID, at `at`. Entries
   * already revoked are left as they were and answered in `alreadyRevoked`.
   */
  revoke(selector: RevocationSelector, at: Date): Promise<RevocationOutcome>;
  /** Revocations whose certificates have not expired at `at`. */
  listRevocations(at: Date): Promise<RevocationRecord[]>;
  /** Whether the certificate with this serial number is revoked. */
  isRevoked(serialNumber: string): Promise<boolean>;
  /**
   * A number that grows whenever the revocation set changes, for cache invalidation. It grows
   * in the order changes commit, so a value read after a revocation completed is never one
   * from before it.
   */
  revocationRevision(): Promise<number>;
  /** How many certificates were ever revoked through this store, by any process. */
  revocationsTotal(): Promise<number>;
  /**
   * Takes the next CRL number (unique and increasing across every process sharing the store)
   * and, atomically with it, the revocations that CRL lists: a CRL with a higher number never
   * lacks an entry that one with a lower number has.
   */
  nextCrl(at: Date): Promise<CrlClaim>;
  /** The revocation revision and the newest stored CRL of `authorityId` (without its DER), in one read. */
  crlStatus(authorityId: string): Promise<CrlStatus>;
  /** The newest stored CRL of `authorityId`. */
  latestCrl(authorityId: string): Promise<SignedCrl | undefined>;
  /**
   * Stores `crl` unless one with a higher number is stored already; answers the newest stored,
   * so a process that signed an older one serves the newer instead.
   */
  saveCrl(crl: SignedCrl): Promise<SignedCrl>;

  /** Stores a new join token. */
  saveJoinToken(token: JoinTokenRecord): Promise<void>;
  /** The join token with this id, if any. */
  findJoinToken(id: string): Promise<JoinTokenRecord | undefined>;
  /** Marks a single-use token used; false when it already was (by any replica). */
  markJoinTokenUsed(id: string, at: Date): Promise<boolean>;

  /** Appends to the audit trail; nothing rewrites an entry (the file store rotates old ones out). */
  appendAudit(event: AuditEvent): Promise<void>;
  /** The last `limit` audit events, oldest first. */
  readAudit(limit: number): Promise<AuditEvent[]>;

  /**
   * A rate limiter shared by every process using this store (PostgreSQL: all replicas), when
   * the store can offer one.
   */
  sharedRateLimit?(options: RateLimitOptions): RateLimit;
}

/**
 * Thrown when the store cannot be opened, cannot be reached, or is used by another process in
 * a way it forbids. The API answers it `503 ERR_NOT_READY`, with `Retry-After` from
 * `retryAfterSeconds` (1 s when the store cannot say).
 */
export class StoreError extends MeshAuthError {
  /** Stable code of this class: `ERR_STORE`. */
  static override code: string = "ERR_STORE";
  /** How long until the store is worth asking again, when it knows. */
  readonly retryAfterSeconds?: number;
  /**
   * `message` names the store and the operation that failed; `options.cause` is the underlying
   * error; `options.retryAfterSeconds`, when the store knows when to ask again.
   */
  constructor(message: string, options?: ErrorOptions & { retryAfterSeconds?: number }) {
    super(message, options);
    this.name = "StoreError";
    this.retryAfterSeconds = options?.retryAfterSeconds;
  }
}

/**
 * `err` as a {@link StoreError} that says what the file system refused and where
 * (`the disk is full (ENOSPC) writing /var/lib/meshauth/store/journal.jsonl`), when it is a
 * write the file system refused; any other error as it is.
 */
export function writeFailure(err: unknown, path: string): unknown {
  const code = (err as { code?: unknown })?.code;
  const failure = writeFailureOf(code);
  if (err instanceof StoreError || !failure) return err;
  const where = (err as { path?: unknown }).path ?? path;
  return new StoreError(`${failure} (${code}) writing ${where}`, { cause: err });
}
