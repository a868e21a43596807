/**
 * CA keys in a directory: `<id>.key.pem` (PKCS#8, mode 0600) and `<id>.json` (the chain and
 * when it signs). A key file that its group or others can read is refused, as OpenSSH does
 * for private keys: a leaked CA key lets anyone mint identities for the whole trust domain.
 *
 * @example
 * ```ts
 * import { FileKeyManager } from "meshauth/ca-server";
 * const keys = new FileKeyManager("./.meshauth/keys");
 * const authorities = await keys.list();
 * ```
 * @module
 */

import { chmod, mkdir, readdir, readFile, stat } from "node:fs/promises";
import { removeStaleTemporaries, writeFileAtomic } from "../../internal/mod.ts";
import { join } from "node:path";
import type { Signer } from "../../mod.ts";
import { nodeSigner } from "./node-crypto.ts";
import { authorityIdOf, type AuthorityRecord, type KeyManager, type NewAuthority } from "./key-manager.ts";
import { MeshAuthError } from "../../mod.ts";

/** Thrown when a key file is missing, unreadable or too widely readable. */
export class KeyFileError extends MeshAuthError {
  /** Stable code of this class: `ERR_KEY_FILE`. */
  static override code: string = "ERR_KEY_FILE";
  /** `message` names the key file and what is wrong with it. */
  constructor(message: string) {
    super(message);
    this.name = "KeyFileError";
  }
}

/** {@link KeyManager} over a directory of key files. */
export class FileKeyManager implements KeyManager {
  readonly description: string;
  readonly #signers = new Map<string, Promise<Signer>>();
  #swept = false;

  /** A key manager over the key files in `dir` (created 0700 when the first key is added). */
  constructor(readonly dir: string) {
    this.description = `file:${dir}`;
  }

  async list(): Promise<AuthorityRecord[]> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw err;
    }
    // A key file half-written when a process crashed holds key material: remove it, once
    // (servers call list() again at every reload).
    if (!this.#swept) {
      this.#swept = true;
      await removeStaleTemporaries(this.dir);
    }
    const records: AuthorityRecord[] = [];
    for (const name of names.filter((n) => n.endsWith(".json")).sort()) {
      const raw = JSON.parse(await readFile(join(this.dir, name), "utf8"));
      records.push({ ...raw, activeFrom: new Date(raw.activeFrom), createdAt: new Date(raw.createdAt) });
    }
    return records.sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime());
  }

  signer(id: string): Promise<Signer> {
    let signer = this.#signers.get(id);
    if (!signer) {
      signer = this.#readKey(id).then(nodeSigner);
      signer.catch(() => this.#signers.delete(id));
      this.#signers.set(id, signer);
    }
    return signer;
  }

  async add(authority: NewAuthority): Promise<AuthorityRecord> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    await chmod(this.dir, 0o700);
    const record: AuthorityRecord = {
      id: await authorityIdOf(authority.certificateChainPem),
      certificateChainPem: authority.certificateChainPem,
      trustBundlePem: authority.trustBundlePem,
      activeFrom: authority.activeFrom,
      createdAt: new Date(),
    };
    // The key first: a record without its key would be an authority that cannot sign.
    await writeFileAtomic(this.#keyPath(record.id), authority.privateKeyPem, 0o600);
    await writeFileAtomic(join(this.dir, `${record.id}.json`), `${JSON.stringify(record, null, 2)}\n`, 0o644);
    return record;
  }

  exportPrivateKeyPem(id: string): Promise<string> {
    return this.#readKey(id);
  }

  #keyPath(id: string): string {
    if (!/^[0-9a-f]{32}$/.test(id)) throw new KeyFileError(`invalid authority id ${JSON.stringify(id)}`);
    return join(this.dir, `${id}.key.pem`);
  }

  async #readKey(id: string): Promise<string> {
    const path = this.#keyPath(id);
    let mode: number;
    try {
      mode = (await stat(path)).mode;
    } catch {
      throw new KeyFileError(`CA key file ${path} is missing or unreadable`);
    }
    if (mode & 0o077) {
      throw new KeyFileError(
        `CA key file ${path} has mode ${
          (mode & 0o777).toString(8)
        }; it must not be readable by group or others (chmod 600 ${path})`,
      );
    }
    return await readFile(path, "utf8");
  }
}
