/**
 * {@link CaStore} on PostgreSQL (`pg`), for several CA replicas sharing one database. The
 * schema is created and migrated at `open()` under an advisory lock, so replicas starting
 * together migrate once. CRL numbers come from a sequence: unique and increasing across every
 * replica.
 *
 * @example
 * ```ts
 * import { PostgresStore } from "meshauth/ca-server";
 * const store = new PostgresStore({ connectionString: "postgres://meshauth@127.0.0.1:5432/meshauth" });
 * await store.open();
 * ```
 * @module
 */

import pg from "pg";
import {
  type AuditEvent,
  type CaStore,
  type IssuedCertificate,
  type JoinTokenRecord,
  type Revocation,
  type RevocationReason,
  type RevocationSelector,
  StoreError,
} from "./store.ts";

// Each entry migrates the schema from version i to i + 1; entries are never edited once shipped.
const MIGRATIONS: string[] = [
  `CREATE TABLE meshauth_certificates (
     serial_number text PRIMARY KEY,
     spiffe_id text NOT NULL,
     not_before timestamptz NOT NULL,
     not_after timestamptz NOT NULL,
     issued_at timestamptz NOT NULL,
     requester text NOT NULL,
     method text NOT NULL,
     authority_id text NOT NULL
   );
   CREATE INDEX meshauth_certificates_spiffe_id ON meshauth_certificates (spiffe_id, issued_at);
   CREATE TABLE meshauth_revocations (
     serial_number text PRIMARY KEY,
     spiffe_id text NOT NULL,
     revoked_at timestamptz NOT NULL,
     reason text NOT NULL,
     not_after timestamptz NOT NULL,
     authority_id text NOT NULL,
     revision bigserial NOT NULL
   );
   CREATE SEQUENCE meshauth_crl_number;
   CREATE TABLE meshauth_join_tokens (
     id text PRIMARY KEY,
     secret_sha256 text NOT NULL,
     role text NOT NULL,
     spiffe_id text,
     node text,
     expires_at timestamptz NOT NULL,
     single_use boolean NOT NULL,
     used_at timestamptz,
     created_at timestamptz NOT NULL
   );
   CREATE TABLE meshauth_audit (
     id bigserial PRIMARY KEY,
     at timestamptz NOT NULL,
     action text NOT NULL,
     requester text NOT NULL,
     details jsonb NOT NULL
   );
   -- The audit trail is append-only: refuse updates and deletes at the database.
   CREATE FUNCTION meshauth_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS
     $$ BEGIN RAISE EXCEPTION 'meshauth_audit is append-only'; END $$;
   CREATE TRIGGER meshauth_audit_append_only BEFORE UPDATE OR DELETE ON meshauth_audit
     FOR EACH ROW EXECUTE FUNCTION meshauth_audit_append_only();`,
  // TRUNCATE fires no row triggers: refuse it too.
  `CREATE TRIGGER meshauth_audit_no_truncate BEFORE TRUNCATE ON meshauth_audit
     FOR EACH STATEMENT EXECUTE FUNCTION meshauth_audit_append_only();`,
];

// Any constant works; it only has to be the same in every replica.
const MIGRATION_LOCK = 0x6d657368;

/** Connection settings (those of `pg.Pool`). */
export interface PostgresStoreOptions {
  connectionString: string;
  /** Connections per replica. Default 10. */
  maxConnections?: number;
}

interface CertificateRow {
  serial_number: string;
  spiffe_id: string;
  not_before: Date;
  not_after: Date;
  issued_at: Date;
  requester: string;
  method: string;
  authority_id: string;
}

function certificateOf(row: CertificateRow): IssuedCertificate {
  return {
    serialNumber: row.serial_number,
    spiffeId: row.spiffe_id,
    notBefore: row.not_before,
    notAfter: row.not_after,
    issuedAt: row.issued_at,
    requester: row.requester,
    method: row.method,
    authorityId: row.authority_id,
  };
}

interface RevocationRow {
  serial_number: string;
  spiffe_id: string;
  revoked_at: Date;
  reason: string;
  not_after: Date;
  authority_id: string;
}

function revocationOf(row: RevocationRow): Revocation {
  return {
    serialNumber: row.serial_number,
    spiffeId: row.spiffe_id,
    revokedAt: row.revoked_at,
    reason: row.reason as RevocationReason,
    notAfter: row.not_after,
    authorityId: row.authority_id,
  };
}

/** {@link CaStore} on PostgreSQL. */
export class PostgresStore implements CaStore {
  readonly description = "postgres";
  readonly #pool: pg.Pool;

  constructor(options: PostgresStoreOptions) {
    this.#pool = new pg.Pool({
      connectionString: options.connectionString,
      max: options.maxConnections ?? 10,
      connectionTimeoutMillis: 10_000,
      statement_timeout: 10_000,
    });
    // An idle client losing its connection must not crash the process; the pool replaces it.
    this.#pool.on("error", () => {});
  }

  // Any database failure reaches the app as a StoreError, which it answers with 503.
  async #query<R extends pg.QueryResultRow = Record<string, any>>(
    text: string,
    values?: unknown[],
  ): Promise<pg.QueryResult<R>> {
    try {
      return await this.#pool.query<R>(text, values);
    } catch (cause) {
      throw new StoreError(`PostgreSQL: ${(cause as Error).message}`, { cause });
    }
  }

  async open(): Promise<void> {
    let client: pg.PoolClient;
    try {
      client = await this.#pool.connect();
    } catch (cause) {
      throw new StoreError(`cannot connect to PostgreSQL: ${(cause as Error).message}`, { cause });
    }
    try {
      await client.query("SELECT pg_advisory_lock($1)", [MIGRATION_LOCK]);
      await client.query("CREATE TABLE IF NOT EXISTS meshauth_schema (version integer NOT NULL)");
      const { rows } = await client.query<{ version: number }>("SELECT version FROM meshauth_schema");
      let version = rows[0]?.version ?? 0;
      if (rows.length === 0) await client.query("INSERT INTO meshauth_schema (version) VALUES (0)");
      if (version > MIGRATIONS.length) {
        throw new StoreError(
          `database schema version ${version} is newer than this server (${MIGRATIONS.length})`,
        );
      }
      for (; version < MIGRATIONS.length; version++) {
        await client.query("BEGIN");
        try {
          await client.query(MIGRATIONS[version]);
          await client.query("UPDATE meshauth_schema SET version = $1", [version + 1]);
          await client.query("COMMIT");
        } catch (err) {
          await client.query("ROLLBACK");
          throw err;
        }
      }
    } finally {
      await client.query("SELECT pg_advisory_unlock($1)", [MIGRATION_LOCK]).catch(() => {});
      client.release();
    }
  }

  async close(): Promise<void> {
    await this.#pool.end();
  }

  async recordIssuance(c: IssuedCertificate): Promise<void> {
    await this.#query(
      `INSERT INTO meshauth_certificates
         (serial_number, spiffe_id, not_before, not_after, issued_at, requester, method, authority_id)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
      [c.serialNumber, c.spiffeId, c.notBefore, c.notAfter, c.issuedAt, c.requester, c.method, c.authorityId],
    );
  }

  async findCertificate(serialNumber: string): Promise<IssuedCertificate | undefined> {
    const { rows } = await this.#query<CertificateRow>(
      "SELECT * FROM meshauth_certificates WHERE serial_number = $1",
      [serialNumber],
    );
    return rows[0] ? certificateOf(rows[0]) : undefined;
  }

  async listCertificates(query: { spiffeId?: string; limit?: number }): Promise<IssuedCertificate[]> {
    const limit = query.limit ?? 1000;
    const { rows } = query.spiffeId
      ? await this.#query<CertificateRow>(
        "SELECT * FROM meshauth_certificates WHERE spiffe_id = $1 ORDER BY issued_at DESC LIMIT $2",
        [query.spiffeId, limit],
      )
      : await this.#query<CertificateRow>(
        "SELECT * FROM meshauth_certificates ORDER BY issued_at DESC LIMIT $1",
        [limit],
      );
    return rows.map(certificateOf);
  }

  async revoke(selector: RevocationSelector, at: Date): Promise<Revocation[]> {
    // One statement: concurrent revocations of the same certificate from two replicas
    // insert it once (ON CONFLICT), and each replica learns which rows it added.
    const where = "serialNumber" in selector ? "serial_number = $1" : "spiffe_id = $1 AND not_after > $2";
    const key = "serialNumber" in selector ? selector.serialNumber : selector.spiffeId;
    const { rows } = await this.#query<RevocationRow>(
      `INSERT INTO meshauth_revocations (serial_number, spiffe_id, revoked_at, reason, not_after, authority_id)
       SELECT serial_number, spiffe_id, $2::timestamptz, $3::text, not_after, authority_id
         FROM meshauth_certificates WHERE ${where}
       ON CONFLICT (serial_number) DO NOTHING
       RETURNING serial_number, spiffe_id, revoked_at, reason, not_after, authority_id`,
      [key, at, selector.reason],
    );
    return rows.map(revocationOf);
  }

  async listRevocations(at: Date): Promise<Revocation[]> {
    const { rows } = await this.#query<RevocationRow>(
      "SELECT * FROM meshauth_revocations WHERE not_after > $1 ORDER BY revision",
      [at],
    );
    return rows.map(revocationOf);
  }

  async isRevoked(serialNumber: string): Promise<boolean> {
    const { rowCount } = await this.#query(
      "SELECT 1 FROM meshauth_revocations WHERE serial_number = $1",
      [serialNumber],
    );
    return (rowCount ?? 0) > 0;
  }

  async revocationRevision(): Promise<number> {
    const { rows } = await this.#query<{ revision: string | null }>(
      "SELECT max(revision) AS revision FROM meshauth_revocations",
    );
    return Number(rows[0]?.revision ?? 0);
  }

  async nextCrlNumber(): Promise<bigint> {
    const { rows } = await this.#query<{ n: string }>("SELECT nextval('meshauth_crl_number') AS n");
    return BigInt(rows[0].n);
  }

  async saveJoinToken(t: JoinTokenRecord): Promise<void> {
    await this.#query(
      `INSERT INTO meshauth_join_tokens
         (id, secret_sha256, role, spiffe_id, node, expires_at, single_use, used_at, created_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
       ON CONFLICT (id) DO UPDATE SET secret_sha256 = EXCLUDED.secret_sha256, role = EXCLUDED.role,
         spiffe_id = EXCLUDED.spiffe_id, node = EXCLUDED.node, expires_at = EXCLUDED.expires_at,
         single_use = EXCLUDED.single_use`,
      [
        t.id,
        t.secretSha256,
        t.role,
        t.spiffeId ?? null,
        t.node ?? null,
        t.expiresAt,
        t.isSingleUse,
        t.usedAt ?? null,
        t.createdAt,
      ],
    );
  }

  async findJoinToken(id: string): Promise<JoinTokenRecord | undefined> {
    const { rows } = await this.#query("SELECT * FROM meshauth_join_tokens WHERE id = $1", [id]);
    const r = rows[0];
    if (!r) return undefined;
    return {
      id: r.id,
      secretSha256: r.secret_sha256,
      role: r.role,
      spiffeId: r.spiffe_id ?? undefined,
      node: r.node ?? undefined,
      expiresAt: r.expires_at,
      isSingleUse: r.single_use,
      usedAt: r.used_at ?? undefined,
      createdAt: r.created_at,
    };
  }

  async markJoinTokenUsed(id: string, at: Date): Promise<boolean> {
    const { rowCount } = await this.#query(
      "UPDATE meshauth_join_tokens SET used_at = $2 WHERE id = $1 AND used_at IS NULL",
      [id, at],
    );
    return rowCount === 1;
  }

  async appendAudit(e: AuditEvent): Promise<void> {
    await this.#query(
      "INSERT INTO meshauth_audit (at, action, requester, details) VALUES ($1, $2, $3, $4)",
      [e.at, e.action, e.requester, JSON.stringify(e.details)],
    );
  }

  async readAudit(limit: number): Promise<AuditEvent[]> {
    const { rows } = await this.#query(
      "SELECT at, action, requester, details FROM meshauth_audit ORDER BY id DESC LIMIT $1",
      [limit],
    );
    return rows.reverse().map((r) => ({
      at: r.at,
      action: r.action,
      requester: r.requester,
      details: r.details,
    }));
  }
}
