/**
 * The file store's signed CRLs, one file per authority (`crls/<authority>.json`: number,
 * revision, thisUpdate and the DER in base64), replaced whole under the store's lock and only
 * by a CRL with a higher number. Reads are exact and cheap: each compares the file's inode
 * with that of the copy it parsed last, which it keeps open (as `state.json` is read).
 *
 * @module
 */

import { closeSync, fstatSync, mkdirSync, openSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { writeFileAtomic } from "../../internal/mod.ts";
import { type SignedCrl, StoreError } from "./store.ts";

interface Loaded {
  fd: number;
  ino: number;
  crl: SignedCrl;
}

/** Stored CRLs in `dir`. */
export class CrlFiles {
  readonly #loaded = new Map<string, Loaded>();
  constructor(readonly dir: string) {}

  #path(authorityId: string): string {
    if (!/^[0-9A-Za-z_-]{1,128}$/.test(authorityId)) {
      throw new StoreError(`an authority id ${JSON.stringify(authorityId.slice(0, 40))} cannot name a file`);
    }
    return join(this.dir, `${authorityId}.json`);
  }

  /** The stored CRL of `authorityId`, re-read when another process replaced it. */
  latest(authorityId: string): SignedCrl | undefined {
    const path = this.#path(authorityId);
    let ino: number;
    try {
      ino = statSync(path).ino;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw err;
    }
    const known = this.#loaded.get(authorityId);
    if (known?.ino === ino) return known.crl;
    let fd: number;
    try {
      fd = openSync(path, "r");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return known?.crl;
      throw err;
    }
    let crl: SignedCrl;
    try {
      const stored = JSON.parse(readFileSync(fd, "utf8"));
      crl = {
        authorityId,
        crlNumber: BigInt(stored.crlNumber),
        revision: stored.revision,
        thisUpdate: new Date(stored.thisUpdate),
        der: Uint8Array.from(atob(stored.der), (c) => c.charCodeAt(0)),
      };
    } catch (cause) {
      closeSync(fd);
      throw new StoreError(`${path} is damaged; remove it (the CRL is signed again)`, { cause });
    }
    if (known) closeSync(known.fd);
    this.#loaded.set(authorityId, { fd, ino: fstatSync(fd).ino, crl });
    return crl;
  }

  /** Writes `crl` unless a higher number is stored; call only under the store's lock. */
  async save(crl: SignedCrl): Promise<SignedCrl> {
    const current = this.latest(crl.authorityId);
    if (current && current.crlNumber >= crl.crlNumber) return current;
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    let binary = "";
    for (const byte of crl.der) binary += String.fromCharCode(byte);
    await writeFileAtomic(
      this.#path(crl.authorityId),
      JSON.stringify({
        crlNumber: crl.crlNumber.toString(),
        revision: crl.revision,
        thisUpdate: crl.thisUpdate.toISOString(),
        der: btoa(binary),
      }),
      0o600,
    );
    return this.latest(crl.authorityId)!;
  }

  close(): void {
    for (const { fd } of this.#loaded.values()) closeSync(fd);
    this.#loaded.clear();
  }
}
