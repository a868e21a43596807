/**
 * Reading a file that is only ever replaced whole (`writeFileAtomic`), as the file store's
 * `state.json` and CRL files are: parsed again only when another process has replaced it, and
 * never missing a replacement. Each read compares the inode of the path with that of the copy
 * parsed last, which is kept open, so the inode number cannot be handed to a newer file while
 * it is compared (a check on size and modification time misses two writes within one clock
 * tick).
 *
 * @module
 */

import { closeSync, fstatSync, openSync, readFileSync, statSync } from "node:fs";

function isMissing(err: unknown): boolean {
  return (err as NodeJS.ErrnoException).code === "ENOENT";
}

/** The parsed content of `path`, as last replaced by any process. */
export class ReplacedFile<T> {
  #fd?: number;
  #ino?: number;
  #value?: T;

  /** `parse` turns the file's text into its value, or throws if it cannot. */
  constructor(readonly path: string, readonly parse: (text: string) => T) {}

  /** The content now, or `undefined` while there is no file. */
  current(): T | undefined {
    let ino: number;
    try {
      ino = statSync(this.path).ino;
    } catch (err) {
      if (!isMissing(err)) throw err;
      this.#keep(undefined, undefined);
      return undefined;
    }
    if (ino === this.#ino) return this.#value;
    let fd: number;
    try {
      fd = openSync(this.path, "r");
    } catch (err) {
      if (!isMissing(err)) throw err;
      this.#keep(undefined, undefined);
      return undefined;
    }
    let value: T;
    try {
      value = this.parse(readFileSync(fd, "utf8"));
    } catch (err) {
      closeSync(fd);
      throw err;
    }
    this.#keep(fd, value);
    return value;
  }

  /**
   * Takes `value` as the content of the file now at the path, which the caller has just
   * written under a lock that keeps every other writer out, so it need not be read back.
   */
  written(value: T): void {
    this.#keep(openSync(this.path, "r"), value);
  }

  close(): void {
    this.#keep(undefined, undefined);
  }

  #keep(fd: number | undefined, value: T | undefined): void {
    if (this.#fd !== undefined) closeSync(this.#fd);
    this.#fd = fd;
    this.#ino = fd === undefined ? undefined : fstatSync(fd).ino;
    this.#value = value;
  }
}
