/**
 * The file store's signed CRLs, one file per authority (`crls/<authority>.json`: number,
 * revision, thisUpdate and the DER in base64), replaced whole under the store's lock and only
 * by a CRL with a higher number. Reads are exact and cheap ({@link ReplacedFile}).
 *
 * @module
 */

import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { writeFileAtomic } from "../../internal/mod.ts";
import { ReplacedFile } from "./replaced-file.ts";
import { type SignedCrl, StoreError } from "./store.ts";

/** Stored CRLs in `dir`. */
export class CrlFiles {
  readonly #files = new Map<string, ReplacedFile<SignedCrl>>();
  constructor(readonly dir: string) {}

  #file(authorityId: string): ReplacedFile<SignedCrl> {
    let file = this.#files.get(authorityId);
    if (file) return file;
    if (!/^[0-9A-Za-z_-]{1,128}$/.test(authorityId)) {
      throw new StoreError(`an authority id ${JSON.stringify(authorityId.slice(0, 40))} cannot name a file`);
    }
    const path = join(this.dir, `${authorityId}.json`);
    file = new ReplacedFile(path, (text) => {
      try {
        const stored = JSON.parse(text);
        return {
          authorityId,
          crlNumber: BigInt(stored.crlNumber),
          revision: stored.revision,
          thisUpdate: new Date(stored.thisUpdate),
          der: Uint8Array.from(atob(stored.der), (c) => c.charCodeAt(0)),
        };
      } catch (cause) {
        throw new StoreError(`${path} is damaged; remove it (the CRL is signed again)`, { cause });
      }
    });
    this.#files.set(authorityId, file);
    return file;
  }

  /** The stored CRL of `authorityId`, re-read when another process replaced it. */
  latest(authorityId: string): SignedCrl | undefined {
    return this.#file(authorityId).current();
  }

  /** Writes `crl` unless a higher number is stored; call only under the store's lock. */
  async save(crl: SignedCrl): Promise<SignedCrl> {
    const file = this.#file(crl.authorityId);
    const current = file.current();
    if (current && current.crlNumber >= crl.crlNumber) return current;
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    let binary = "";
    for (const byte of crl.der) binary += String.fromCharCode(byte);
    await writeFileAtomic(
      file.path,
      JSON.stringify({
        crlNumber: crl.crlNumber.toString(),
        revision: crl.revision,
        thisUpdate: crl.thisUpdate.toISOString(),
        der: btoa(binary),
      }),
      0o600,
    );
    file.written(crl);
    return crl;
  }

  close(): void {
    for (const file of this.#files.values()) file.close();
    this.#files.clear();
  }
}
