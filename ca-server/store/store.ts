/**
 * The CA's persistent state behind one interface: issued certificates, revocations, the CRL
 * number, join tokens and the audit trail. Two implementations: {@link FileStore} (embedded,
 * crash-safe, in a data directory) and {@link PostgresStore} (shared by several replicas).
 *
 * @module
 */

import { MeshAuthError } from "../../mod.ts";

/** RFC 5280 5.3.1 CRL reason codes the server accepts, by name. */
export const REVOCATION_REASONS = [
  "unspecified",
  "keyCompromise",
  "cACompromise",
  "affiliationChanged",
  "superseded",
  "cessationOfOperation",
  "privilegeWithdrawn",
] as const;

/** A CRL reason name. */
export type RevocationReason = (typeof REVOCATION_REASONS)[number];

/** One certificate the CA issued. */
export interface IssuedCertificate {
  /** Lowercase hex of the serial number. */
  serialNumber: string;
  spiffeId: string;
  notBefore: Date;
  notAfter: Date;
  issuedAt: Date;
  /** Who asked: the authenticated identity and how it authenticated. */
  requester: string;
  method: string;
  /** Which CA authority signed it. */
  authorityId: string;
}

/** One revoked certificate. */
export interface Revocation {
  serialNumber: string;
  spiffeId: string;
  revokedAt: Date;
  reason: RevocationReason;
  /** The certificate's expiry: once past, the entry may leave the CRL (RFC 5280 3.3). */
  notAfter: Date;
  authorityId: string;
}

/** Who a join token lets in. */
export type JoinTokenRole = "workload" | "node" | "admin";

/** A join token as stored: the secret only as its SHA-256. */
export interface JoinTokenRecord {
  /** The public half of the token (`<id>.<secret>`), used to find it. */
  id: string;
  /** SHA-256 of the secret half, lowercase hex. */
  secretSha256: string;
  role: JoinTokenRole;
  /** For workload tokens, the SPIFFE ID it may obtain; for node tokens, the node's SPIFFE ID. */
  spiffeId?: string;
  /** For node tokens, the node name. */
  node?: string;
  expiresAt: Date;
  isSingleUse: boolean;
  usedAt?: Date;
  createdAt: Date;
}

/** One audit event: every issuance, denial and revocation, with who asked. */
export interface AuditEvent {
  at: Date;
  /** `issued`, `denied`, `revoked`, `token-created`, `authority-added`. */
  action: string;
  /** The authenticated requester (a SPIFFE ID, `token:<id>`, `cli`), or `anonymous`. */
  requester: string;
  /** Fields of the event: serial numbers, SPIFFE IDs, reasons, problem codes. */
  details: Record<string, unknown>;
}

/** What a revocation request selects. */
export type RevocationSelector =
  | { serialNumber: string; reason: RevocationReason }
  | { spiffeId: string; reason: RevocationReason };

/** Persistent CA state. Every method is safe to call concurrently. */
export interface CaStore {
  /** A short name for logs (`file:/path`, `postgres`). */
  readonly description: string;
  /** Opens the store, creating or migrating its schema. */
  open(): Promise<void>;
  close(): Promise<void>;

  recordIssuance(certificate: IssuedCertificate): Promise<void>;
  findCertificate(serialNumber: string): Promise<IssuedCertificate | undefined>;
  /** Issued certificates, newest first, optionally for one SPIFFE ID. */
  listCertificates(query: { spiffeId?: string; limit?: number }): Promise<IssuedCertificate[]>;

  /**
   * Revokes one serial, or every unexpired certificate of one SPIFFE ID at `at`. Returns the
   * entries newly revoked (already revoked ones are left as they were).
   */
  revoke(selector: RevocationSelector, at: Date): Promise<Revocation[]>;
  /** Revocations whose certificates have not expired at `at`. */
  listRevocations(at: Date): Promise<Revocation[]>;
  isRevoked(serialNumber: string): Promise<boolean>;
  /** A number that grows whenever the revocation set changes, for cache invalidation. */
  revocationRevision(): Promise<number>;
  /** The next CRL number: unique and increasing across every replica sharing the store. */
  nextCrlNumber(): Promise<bigint>;

  saveJoinToken(token: JoinTokenRecord): Promise<void>;
  findJoinToken(id: string): Promise<JoinTokenRecord | undefined>;
  /** Marks a single-use token used; false when it already was (by any replica). */
  markJoinTokenUsed(id: string, at: Date): Promise<boolean>;

  /** Appends to the audit trail; nothing ever rewrites or deletes an entry. */
  appendAudit(event: AuditEvent): Promise<void>;
  /** The last `limit` audit events, oldest first. */
  readAudit(limit: number): Promise<AuditEvent[]>;
}

/** Thrown when the store cannot be opened or is used by another process in a way it forbids. */
export class StoreError extends MeshAuthError {
  static override code = "ERR_STORE";
  override code = StoreError.code;
  override name = "StoreError";
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
  }
}
