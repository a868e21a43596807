/**
 * Custody of the CA's signing keys. A {@link KeyManager} holds each authority's private key
 * and certificate chain and hands out a {@link Signer}; the key itself leaves only through
 * the explicit `exportPrivateKeyPem`. File-backed and in-memory implementations are here;
 * a KMS or HSM plugs in behind the same interface by returning its own `Signer`.
 *
 * @example
 * ```ts
 * import { CertificateAuthority } from "meshauth";
 * import { MemoryKeyManager } from "meshauth/ca-server";
 * const root = await CertificateAuthority.createRoot({ trustDomain: "example.org" });
 * const keys = new MemoryKeyManager();
 * await keys.add({ ...(await root.exportPem()), activeFrom: new Date() });
 * ```
 * @module
 */

import { importPrivateKeyPem, type Signer } from "../../mod.ts";
import { authorityIdOf, keySigner } from "../../internal/mod.ts";

export { authorityIdOf };

/** One CA authority the server knows: its certificate chain and when it starts signing. */
export interface AuthorityRecord {
  /** Stable identifier (hex of the CA certificate's SHA-256, first 16 bytes). */
  id: string;
  /** The CA certificate first, then its issuers. */
  certificateChainPem: string;
  /** The roots that verify it; absent for a self-signed root. */
  trustBundlePem?: string;
  /** From when this authority signs; before that its roots are only published in the bundle. */
  activeFrom: Date;
  /** When the authority was added. */
  createdAt: Date;
}

/** What {@link KeyManager.add} takes. */
export interface NewAuthority {
  /** The CA certificate first, then its issuers. */
  certificateChainPem: string;
  /** The CA's private key, PKCS#8 PEM. */
  privateKeyPem: string;
  /** The roots of the chain, when the chain's last certificate is not one. */
  trustBundlePem?: string;
  /** From when the authority signs; before that its roots are only published in the bundle. */
  activeFrom: Date;
}

/** Holds the CA's keys. */
export interface KeyManager {
  /** For logs (`file:/path`, `memory`); never includes key material. */
  readonly description: string;
  /** Every authority, oldest first. */
  list(): Promise<AuthorityRecord[]>;
  /** A signer for the authority's key. */
  signer(id: string): Promise<Signer>;
  /** Stores a new authority and its key. */
  add(authority: NewAuthority): Promise<AuthorityRecord>;
  /** The private key as PKCS#8 PEM: only for an operator's explicit export. */
  exportPrivateKeyPem(id: string): Promise<string>;
}

/** A signer over a PEM private key, imported non-extractable. */
export async function pemSigner(privateKeyPem: string): Promise<Signer> {
  const keys = await importPrivateKeyPem(privateKeyPem, { extractable: false });
  return await keySigner(keys.privateKey, keys.publicKey);
}

/** Keys in memory, for tests and short-lived development CAs. */
export class MemoryKeyManager implements KeyManager {
  readonly description = "memory";
  readonly #authorities: { record: AuthorityRecord; privateKeyPem: string; signer?: Promise<Signer> }[] = [];

  list(): Promise<AuthorityRecord[]> {
    return Promise.resolve(this.#authorities.map((a) => a.record));
  }

  signer(id: string): Promise<Signer> {
    const entry = this.#find(id);
    entry.signer ??= pemSigner(entry.privateKeyPem);
    return entry.signer;
  }

  async add(authority: NewAuthority): Promise<AuthorityRecord> {
    const record: AuthorityRecord = {
      id: await authorityIdOf(authority.certificateChainPem),
      certificateChainPem: authority.certificateChainPem,
      trustBundlePem: authority.trustBundlePem,
      activeFrom: authority.activeFrom,
      createdAt: new Date(),
    };
    this.#authorities.push({ record, privateKeyPem: authority.privateKeyPem });
    return record;
  }

  exportPrivateKeyPem(id: string): Promise<string> {
    return Promise.resolve(this.#find(id).privateKeyPem);
  }

  #find(id: string) {
    const entry = this.#authorities.find((a) => a.record.id === id);
    if (!entry) throw new Error(`no CA authority ${id}`);
    return entry;
  }
}
