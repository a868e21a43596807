/**
 * The PostgreSQL store's schema, as migrations: entry i takes the schema from version i to
 * i + 1. `PostgresStore.open()` applies the missing ones under an advisory lock.
 *
 * @module
 */

// Each entry migrates the schema from version i to i + 1; entries are never edited once shipped.
export const MIGRATIONS: readonly string[] = [
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
  // The row that orders revocations and CRL numbers (see the module's description), carrying
  // on from the sequence's number; and token buckets shared by every replica.
  `CREATE TABLE meshauth_crl_state (
     id boolean PRIMARY KEY DEFAULT true CHECK (id),
     crl_number bigint NOT NULL,
     revocation_revision bigint NOT NULL,
     revocations_total bigint NOT NULL
   );
   INSERT INTO meshauth_crl_state (crl_number, revocation_revision, revocations_total)
     SELECT (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM meshauth_crl_number),
            (SELECT count(*) FROM meshauth_revocations),
            (SELECT count(*) FROM meshauth_revocations);
   CREATE UNLOGGED TABLE meshauth_rate_limits (
     key text PRIMARY KEY,
     tokens double precision NOT NULL,
     last_allowed boolean NOT NULL,
     updated_at timestamptz NOT NULL
   );
   CREATE INDEX meshauth_rate_limits_updated_at ON meshauth_rate_limits (updated_at);
   CREATE TABLE meshauth_crls (
     authority_id text PRIMARY KEY,
     crl_number bigint NOT NULL,
     revision bigint NOT NULL,
     this_update timestamptz NOT NULL,
     der bytea NOT NULL
   );`,
];
