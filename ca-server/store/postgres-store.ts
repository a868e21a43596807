/**
 * {@link CaStore} on PostgreSQL (`pg`), for several CA replicas sharing one database. The
 * schema is created and migrated at `open()` under an advisory lock, so replicas starting
 * together migrate once.
 *
 * One row, `meshauth_crl_state`, orders what must not interleave: a revocation locks it, adds
 * its entries and counts one more revision; a CRL takes the next number from it and reads the
 * revocations in the same transaction, while holding it. So CRL numbers are unique and
 * increasing across replicas, a CRL with a higher number never lacks an entry that a lower one
 * has, and the revision grows in commit order (a `bigserial` does not: its values commit out of
 * order, so a cache keyed on its maximum can miss a revocation that committed late).
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
import { CircuitBreaker } from "../circuit-breaker.ts";
import type { RateLimit, RateLimitOptions } from "../rate-limit.ts";
import { PostgresRateLimit } from "./postgres-rate-limit.ts";
import {
  type AcceptedRevocationReason,
  type AuditEvent,
  type CaStore,
  type CertificateRecord,
  type CrlClaim,
  type CrlStatus,
  type JoinTokenRecord,
  type RevocationOutcome,
  type RevocationRecord,
  type RevocationSelector,
  type SignedCrl,
  StoreError,
} from "./store.ts";
import { MIGRATIONS } from "./postgres-schema.ts";

// Any constant works; it only has to be the same in every replica.
const MIGRATION_LOCK = 0x6d657368;

/** Connection settings (those of `pg.Pool`). */
export interface PostgresStoreOptions {
  /** The PostgreSQL URL (`postgres://user:pass@host:5432/db`). */
  connectionString: string;
  /** Connections per replica. Default 10. */
  maxConnections?: number;
  /**
   * The longest one statement may take, on the server (`statement_timeout`) and, a second
   * later, on this side, where a database that stopped answering (a partition drops packets, it
   * does not refuse them) would otherwise hold the request until TCP gives up. Default 5 s.
   */
  statementTimeoutMs?: number;
}

// SQLSTATE classes and codes of a database that is away rather than a statement that failed:
// connection exceptions, shutdown or start-up, too many connections.
const UNAVAILABLE_SQLSTATE = /^(08...|57P0[1-3]|53300)$/;

/** True when `err` says PostgreSQL could not be reached or did not answer, not that a statement failed. */
function isUnavailable(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown };
  if (typeof e?.code === "string" && (UNAVAILABLE_SQLSTATE.test(e.code) || /^E[A-Z]+$/.test(e.code))) {
    return true;
  }
  return /timeout|terminated|Connection|connect|ECONN/i.test(String(e?.message ?? ""));
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

function certificateOf(row: CertificateRow): CertificateRecord {
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

function revocationOf(row: RevocationRow): RevocationRecord {
  return {
    serialNumber: row.serial_number,
    spiffeId: row.spiffe_id,
    revokedAt: row.revoked_at,
    reason: row.reason as AcceptedRevocationReason,
    notAfter: row.not_after,
    authorityId: row.authority_id,
  };
}

/** {@link CaStore} on PostgreSQL. */
export class PostgresStore implements CaStore {
  readonly description = "postgres";
  readonly #pool: pg.Pool;

  /** A store over a pool of `options.maxConnections`; call `open()` before use. */
  constructor(options: PostgresStoreOptions) {
    const statementTimeoutMs = options.statementTimeoutMs ?? 5000;
    this.#pool = new pg.Pool({
      connectionString: options.connectionString,
      max: options.maxConnections ?? 10,
      connectionTimeoutMillis: statementTimeoutMs,
      statement_timeout: statementTimeoutMs,
      query_timeout: statementTimeoutMs + 1000,
      keepAlive: true,
    });
    // An idle client losing its connection must not crash the process; the pool replaces it.
    this.#pool.on("error", () => {});
  }

  // A database that is away is not asked once more for every request: after three failures in
  // a row, requests are answered 503 at once (Retry-After) while one trial statement at a time
  // finds out whether it is back.
  readonly #breaker = new CircuitBreaker("PostgreSQL", {
    failures: 3,
    cooldownMs: 1000,
    maxCooldownMs: 5000,
    refuse: (message, retryAfterSeconds) => new StoreError(message, { retryAfterSeconds }),
  });

  /** Runs `call` through the breaker; any failure becomes a StoreError, which the app answers 503. */
  async #guarded<T>(call: () => Promise<T>, what: string): Promise<T> {
    this.#breaker.admit();
    try {
      const result = await call();
      this.#breaker.succeeded();
      return result;
    } catch (cause) {
      if (isUnavailable(cause)) this.#breaker.failed();
      else this.#breaker.succeeded();
      if (cause instanceof StoreError) throw cause;
      throw new StoreError(`${what}: ${(cause as Error).message}`, { cause });
    }
  }

  async #query<R extends pg.QueryResultRow = Record<string, any>>(
    text: string,
    values?: unknown[],
  ): Promise<pg.QueryResult<R>> {
    return await this.#guarded(() => this.#pool.query<R>(text, values), "PostgreSQL");
  }

  // Runs `work` in one transaction on one connection; any failure rolls it back. A connection
  // that failed (it timed out, or the server went) is closed rather than given back to the pool.
  #transaction<T>(work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    return this.#guarded(async () => {
      let client: pg.PoolClient;
      try {
        client = await this.#pool.connect();
      } catch (cause) {
        throw new StoreError(`cannot connect to PostgreSQL: ${(cause as Error).message}`, { cause });
      }
      let failure: unknown;
      try {
        await client.query("BEGIN");
        const result = await work(client);
        await client.query("COMMIT");
        return result;
      } catch (cause) {
        failure = cause;
        if (!isUnavailable(cause)) await client.query("ROLLBACK").catch(() => {});
        throw cause;
      } finally {
        client.release(isUnavailable(failure) ? (failure as Error) : undefined);
      }
    }, "PostgreSQL");
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

  /** Ends the pool's connections. */
  async close(): Promise<void> {
    await this.#pool.end();
  }

  /** Records one issued certificate. */
  async recordIssuance(c: CertificateRecord): Promise<void> {
    await this.#query(
      `INSERT INTO meshauth_certificates
         (serial_number, spiffe_id, not_before, not_after, issued_at, requester, method, authority_id)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
      [c.serialNumber, c.spiffeId, c.notBefore, c.notAfter, c.issuedAt, c.requester, c.method, c.authorityId],
    );
  }

  /** The issued certificate with this serial number, if the store has it. */
  async findCertificate(serialNumber: string): Promise<CertificateRecord | undefined> {
    const { rows } = await this.#query<CertificateRow>(
      "SELECT * FROM meshauth_certificates WHERE serial_number = $1",
      [serialNumber],
    );
    return rows[0] ? certificateOf(rows[0]) : undefined;
  }

  async listCertificates(query: { spiffeId?: string; limit?: number }): Promise<CertificateRecord[]> {
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

  revoke(selector: RevocationSelector, at: Date): Promise<RevocationOutcome> {
    const where = "serialNumber" in selector ? "serial_number = $1" : "spiffe_id = $1 AND not_after > $2";
    const key = "serialNumber" in selector ? selector.serialNumber : selector.spiffeId;
    return this.#transaction(async (client) => {
      // The state row first: revocations and CRL claims take their turns on it.
      await client.query("SELECT 1 FROM meshauth_crl_state FOR UPDATE");
      const before = await client.query<RevocationRow>(
        `SELECT * FROM meshauth_revocations WHERE ${
          where.replace("not_after > $2", "not_after > $2::timestamptz")
        }`,
        "serialNumber" in selector ? [key] : [key, at],
      );
      const { rows } = await client.query<RevocationRow>(
        `INSERT INTO meshauth_revocations (serial_number, spiffe_id, revoked_at, reason, not_after, authority_id)
         SELECT serial_number, spiffe_id, $2::timestamptz, $3::text, not_after, authority_id
           FROM meshauth_certificates WHERE ${where}
         ON CONFLICT (serial_number) DO NOTHING
         RETURNING serial_number, spiffe_id, revoked_at, reason, not_after, authority_id`,
        [key, at, selector.reason],
      );
      if (rows.length > 0) {
        await client.query(
          `UPDATE meshauth_crl_state SET revocation_revision = revocation_revision + 1,
             revocations_total = revocations_total + $1`,
          [rows.length],
        );
      }
      return { revoked: rows.map(revocationOf), alreadyRevoked: before.rows.map(revocationOf) };
    });
  }

  async listRevocations(at: Date): Promise<RevocationRecord[]> {
    const { rows } = await this.#query<RevocationRow>(
      "SELECT * FROM meshauth_revocations WHERE not_after > $1 ORDER BY revision",
      [at],
    );
    return rows.map(revocationOf);
  }

  /** Whether the certificate with this serial number is revoked. */
  async isRevoked(serialNumber: string): Promise<boolean> {
    const { rowCount } = await this.#query(
      "SELECT 1 FROM meshauth_revocations WHERE serial_number = $1",
      [serialNumber],
    );
    return (rowCount ?? 0) > 0;
  }

  async revocationRevision(): Promise<number> {
    const { rows } = await this.#query<{ revision: string }>(
      "SELECT revocation_revision AS revision FROM meshauth_crl_state",
    );
    return Number(rows[0].revision);
  }

  async revocationsTotal(): Promise<number> {
    const { rows } = await this.#query<{ total: string }>(
      "SELECT revocations_total AS total FROM meshauth_crl_state",
    );
    return Number(rows[0].total);
  }

  nextCrl(at: Date): Promise<CrlClaim> {
    return this.#transaction(async (client) => {
      // Holding the row until commit: a later claim reads the revocations after this one did.
      const { rows: [state] } = await client.query<{ crl_number: string; revision: string }>(
        `UPDATE meshauth_crl_state SET crl_number = crl_number + 1
         RETURNING crl_number, revocation_revision AS revision`,
      );
      const { rows } = await client.query<RevocationRow>(
        "SELECT * FROM meshauth_revocations WHERE not_after > $1 ORDER BY revision",
        [at],
      );
      return {
        crlNumber: BigInt(state.crl_number),
        revision: Number(state.revision),
        revocations: rows.map(revocationOf),
      };
    });
  }

  async crlStatus(authorityId: string): Promise<CrlStatus> {
    const { rows: [row] } = await this.#query<
      { revision: string; crl_number: string | null; crl_revision: string | null; this_update: Date | null }
    >(
      `SELECT s.revocation_revision AS revision, c.crl_number, c.revision AS crl_revision, c.this_update
         FROM meshauth_crl_state s LEFT JOIN meshauth_crls c ON c.authority_id = $1`,
      [authorityId],
    );
    return {
      revision: Number(row.revision),
      latest: row.crl_number === null ? undefined : {
        authorityId,
        crlNumber: BigInt(row.crl_number),
        revision: Number(row.crl_revision),
        thisUpdate: row.this_update!,
      },
    };
  }

  async latestCrl(authorityId: string): Promise<SignedCrl | undefined> {
    const { rows: [row] } = await this.#query<
      { crl_number: string; revision: string; this_update: Date; der: Uint8Array }
    >("SELECT crl_number, revision, this_update, der FROM meshauth_crls WHERE authority_id = $1", [
      authorityId,
    ]);
    return row && {
      authorityId,
      crlNumber: BigInt(row.crl_number),
      revision: Number(row.revision),
      thisUpdate: row.this_update,
      der: new Uint8Array(row.der),
    };
  }

  async saveCrl(crl: SignedCrl): Promise<SignedCrl> {
    // Only a higher number replaces the stored CRL: every replica then serves the newest.
    await this.#query(
      `INSERT INTO meshauth_crls (authority_id, crl_number, revision, this_update, der)
         VALUES ($1, $2, $3, $4, $5)
       ON CONFLICT (authority_id) DO UPDATE SET crl_number = EXCLUDED.crl_number,
         revision = EXCLUDED.revision, this_update = EXCLUDED.this_update, der = EXCLUDED.der
         WHERE meshauth_crls.crl_number < EXCLUDED.crl_number`,
      [crl.authorityId, crl.crlNumber.toString(), crl.revision, crl.thisUpdate, Buffer.from(crl.der)],
    );
    return (await this.latestCrl(crl.authorityId))!;
  }

  /** Stores a new join token. */
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

  /** The join token with this id, if any. */
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

  /** Token buckets in `meshauth_rate_limits`, shared by every replica on this database. */
  sharedRateLimit(options: RateLimitOptions): RateLimit {
    return new PostgresRateLimit((text, values) => this.#query(text, values), options);
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
