/**
 * The proxy's credentials from a directory the agent delivers into (a pod's CSI volume, or any
 * directory `writeGeneration` writes): the SVID, its key and the trust bundle, in one of the
 * delivery's layouts, read through `..data` once so that the three belong to one generation.
 * This is how `meshauth proxy` runs as a sidecar beside a workload that has its files but no
 * agent in its process.
 *
 * Each read checks what it reads: every file is there, each parses with the core, the chain
 * verifies against the bundle, and the key is the leaf's. A directory that fails any of these
 * is {@link CredentialDirectoryUnusable}. Rotations are picked up by watching the directory
 * (the `..data` swap is a rename in it) and, since a watch can miss a rename of a symlink or not
 * work on a volume at all, by reading again every few seconds. A bad rotation is logged and
 * counted, and the credentials in service stay.
 *
 * @example
 * ```ts
 * import { FileCredentialSource, MeshProxy } from "meshauth/agent";
 * const source = new FileCredentialSource({ directory: "/var/run/secrets/meshauth" });
 * await source.start(); // reads once; then watches and polls
 * const proxy = new MeshProxy({ config: proxyConfig, sources: { "photo-backend": source } });
 * ```
 * @module
 */

import { EventEmitter } from "node:events";
import { type FSWatcher, watch } from "node:fs";
import { lstat, readlink } from "node:fs/promises";
import { join } from "node:path";
import {
  type Crl,
  exportSpki,
  importPrivateKeyPem,
  MeshAuthError,
  parseCertificates,
  SpiffeId,
  TrustBundle,
  uriSans,
  verifySvid,
} from "../../mod.ts";
import { bytesEqual, type Logger, silentLogger } from "../../internal/mod.ts";
import { isGenerationName, readGenerationFiles } from "../delivery/atomic-writer.ts";
import { type LayoutName, LAYOUTS } from "../delivery/layouts.ts";
import type { CredentialSource, SvidCredential } from "./credentials.ts";
import type { ProxyMetrics } from "./metrics.ts";

/** Why a credential directory cannot be used. */
export type CredentialDirectoryReason = "missing" | "incomplete" | "invalid" | "key-mismatch";

/**
 * A credential directory that cannot be used: `missing` (no directory, or nothing delivered in
 * it: no `..data`), `incomplete` (a file of the layout is absent), `invalid` (`..data` names
 * no generation the agent writes, a file does not parse, is not a regular file or is writable
 * by group or others, the directory is a symlink or writable by group or others, the chain
 * does not verify against the bundle, the leaf has no SPIFFE ID) or `key-mismatch` (the key is
 * not the leaf's).
 */
export class CredentialDirectoryUnusable extends MeshAuthError {
  /** Stable code of this class: `ERR_CREDENTIAL_DIRECTORY_UNUSABLE`. */
  static override code: string = "ERR_CREDENTIAL_DIRECTORY_UNUSABLE";
  /** `directory` is the directory read; `reason` the kind of failure; `detail` what was found. */
  constructor(
    readonly directory: string,
    readonly reason: CredentialDirectoryReason,
    detail: string,
    options?: ErrorOptions,
  ) {
    super(`credential directory ${directory} is unusable (${reason}): ${detail}`, options);
    this.name = "CredentialDirectoryUnusable";
  }
}

/** One generation of the directory, checked. */
export interface FileCredentials extends SvidCredential {
  /** The leaf's SPIFFE ID. */
  id: SpiffeId;
  /** The leaf's serial number (hex). */
  serialNumber: string;
  /** The leaf's notAfter. */
  expiresAt: Date;
  /** The roots of the leaf's trust domain, as delivered. */
  trustBundlePem: string;
  /** The same roots, parsed: what peers are verified against. */
  trustBundle: TrustBundle;
}

/** Options of {@link FileCredentialSource}. */
export interface FileCredentialSourceOptions {
  /** The delivered directory (the one holding `..data`). */
  directory: string;
  /** Its file names: `istio` (the default, as the agent delivers by default) or `spiffe-helper`. */
  layout?: LayoutName;
  /** How often the directory is read again whatever the watch says. Default 5000 ms. */
  pollIntervalMs?: number;
  /** Where refused reads and rotations are logged. Default: nowhere. */
  logger?: Logger;
  /** Refused reads are counted in its `meshauth_proxy_credential_files_refused_total`. */
  metrics?: ProxyMetrics;
}

/**
 * Reads and checks one generation of `directory` in `layout`; throws
 * {@link CredentialDirectoryUnusable}. Given the credentials `previous` read, answers them as
 * they are when the files hold the same bytes (their modes checked again), without parsing,
 * importing and verifying them again: what a poll of an unchanged directory finds.
 */
export async function readCredentialDirectory(
  directory: string,
  layout: LayoutName = "istio",
  previous?: FileCredentials,
): Promise<FileCredentials> {
  const names = LAYOUTS[layout];
  const wanted = [names.certificateChain, names.privateKey, names.trustBundle];
  const files = await readGenerationFiles(directory, wanted);
  if (!files) throw await whyUnread(directory, wanted);
  const unusable = (reason: CredentialDirectoryReason, detail: string, cause?: unknown) =>
    new CredentialDirectoryUnusable(directory, reason, detail, cause ? { cause } : undefined);
  // Whoever can write the bundle chooses whom the proxy trusts, and the chain and key what it
  // presents: the agent delivers each file with an exact mode that neither group nor others can write.
  for (const [name, file] of files) {
    if (file.mode & 0o022) {
      throw unusable(
        "invalid",
        `${name} is writable by group or others (mode 0${
          file.mode.toString(8)
        }): whoever can write it chooses the roots or the SVID`,
      );
    }
  }
  const text = (name: string) => new TextDecoder().decode(files.get(name)!.content);
  const chainPem = text(names.certificateChain);
  const keyPem = text(names.privateKey);
  const bundlePem = text(names.trustBundle);
  if (
    previous && previous.certificateChainPem === chainPem && previous.privateKeyPem === keyPem &&
    previous.trustBundlePem === bundlePem
  ) return previous;
  let leaf;
  let id: SpiffeId;
  try {
    leaf = parseCertificates(chainPem)[0];
    if (!leaf) throw new Error("no certificate in it");
    const uri = uriSans(leaf)[0];
    if (!uri) throw new Error("the leaf has no SPIFFE ID");
    id = SpiffeId.parse(uri);
  } catch (err) {
    throw unusable("invalid", `${names.certificateChain}: ${(err as Error).message}`, err);
  }
  let trustBundle: TrustBundle;
  try {
    trustBundle = TrustBundle.fromPem(id.trustDomain, bundlePem);
  } catch (err) {
    throw unusable("invalid", `${names.trustBundle}: ${(err as Error).message}`, err);
  }
  let spki: Uint8Array;
  try {
    spki = await exportSpki((await importPrivateKeyPem(keyPem)).publicKey);
  } catch (err) {
    throw unusable("invalid", `${names.privateKey}: ${(err as Error).message}`, err);
  }
  // A key of another generation (a reader that mixed two) would fail every handshake.
  if (!bytesEqual(spki, leaf.spki)) {
    throw unusable("key-mismatch", `${names.privateKey} is not the key of ${names.certificateChain}'s leaf`);
  }
  try {
    await verifySvid(chainPem, trustBundle);
  } catch (err) {
    throw unusable(
      "invalid",
      `${names.certificateChain} does not verify against ${names.trustBundle}: ${(err as Error).message}`,
      err,
    );
  }
  return {
    certificateChainPem: chainPem,
    privateKeyPem: keyPem,
    id,
    serialNumber: leaf.serialNumber,
    expiresAt: leaf.notAfter,
    trustBundlePem: bundlePem,
    trustBundle,
  };
}

/** Why `readGeneration` answered nothing: no directory or no `..data`, or a file missing. */
async function whyUnread(directory: string, wanted: readonly string[]): Promise<CredentialDirectoryUnusable> {
  const isThere = (path: string) => lstat(path).then(() => true, () => false);
  if (!(await isThere(directory))) {
    return new CredentialDirectoryUnusable(directory, "missing", "no such directory");
  }
  const generation = await readlink(join(directory, "..data")).catch(() => undefined);
  if (generation === undefined) {
    return new CredentialDirectoryUnusable(directory, "missing", "nothing delivered in it (no ..data)");
  }
  if (!isGenerationName(generation)) {
    return new CredentialDirectoryUnusable(
      directory,
      "invalid",
      `..data points to ${JSON.stringify(generation)}, which is not a generation the agent writes ` +
        `(..YYYY_MM_DD_hh_mm_ss.xxxxxx): another writer's files, such as a kubelet Secret or ConfigMap volume`,
    );
  }
  const absent = [];
  for (const name of wanted) if (!(await isThere(join(directory, generation, name)))) absent.push(name);
  return absent.length
    ? new CredentialDirectoryUnusable(directory, "incomplete", `no ${absent.join(", ")} in ${generation}`)
    : new CredentialDirectoryUnusable(
      directory,
      "invalid",
      "a file is not a regular file, or the directory is a symlink or writable by others",
    );
}

/** What verifies peers before the directory was read: nothing. */
const NO_ROOTS = new TrustBundle("meshauth.invalid");

/** A workload's credentials read from a delivered directory and followed as it changes. */
export class FileCredentialSource extends EventEmitter implements CredentialSource {
  /** The delivered directory it reads. */
  readonly directory: string;
  /** Its file names. */
  readonly layout: LayoutName;
  readonly #pollIntervalMs: number;
  readonly #logger: Logger;
  readonly #metrics?: ProxyMetrics;
  #current?: FileCredentials;
  #crls: readonly Crl[] = [];
  #fetchCrls?: (peerChainPem: string) => Promise<void>;
  #watcher?: FSWatcher;
  #timer?: ReturnType<typeof setInterval>;
  #reading?: Promise<void>;
  #isReadAgain = false;
  #lastRefusal = "";
  #isClosed = false;
  /** Reads refused since the start (the credentials in service stayed). */
  refusedReads = 0;
  /** The last refused read, until a read succeeds. */
  lastError?: CredentialDirectoryUnusable;

  /** Reads nothing yet: {@link FileCredentialSource.start} does. */
  constructor(options: FileCredentialSourceOptions) {
    super();
    this.directory = options.directory;
    this.layout = options.layout ?? "istio";
    this.#pollIntervalMs = options.pollIntervalMs ?? 5000;
    this.#logger = options.logger ?? silentLogger;
    this.#metrics = options.metrics;
  }

  /**
   * Reads the directory once and then follows it (watch and poll). Resolves once the first read
   * is done, whether or not the directory could be used: until it can, {@link current} is
   * undefined and the proxy's listeners refuse connections.
   */
  async start(): Promise<void> {
    this.#isClosed = false;
    this.#watch();
    // A second start keeps one poll, not two.
    clearInterval(this.#timer);
    this.#timer = setInterval(() => this.#readSoon(), this.#pollIntervalMs);
    this.#timer.unref?.();
    await this.reload();
  }

  /** The credentials in service, with what was checked about them. */
  get credentials(): FileCredentials | undefined {
    return this.#current;
  }

  current(): SvidCredential | undefined {
    return this.#current;
  }

  /** The delivered trust bundle; empty until the directory was read. */
  trustBundle(): TrustBundle {
    return this.#current?.trustBundle ?? NO_ROOTS;
  }

  crls(): readonly Crl[] {
    return this.#crls;
  }

  /** Replaces the CRLs in force (from whoever fetches them), signalling `change`. */
  setCrls(crls: readonly Crl[]): void {
    this.#crls = crls;
    this.emit("change");
  }

  /** Who fetches the CRLs of a peer's authority; without one, {@link fetchCrlsFor} does nothing. */
  setCrlFetcher(fetch: ((peerChainPem: string) => Promise<void>) | undefined): void {
    this.#fetchCrls = fetch;
  }

  fetchCrlsFor(peerChainPem: string): Promise<void> {
    return this.#fetchCrls?.(peerChainPem) ?? Promise.resolve();
  }

  /**
   * Reads the directory now: new credentials are put into service (`change`); a directory that
   * cannot be used is logged and counted, and the credentials in service stay.
   */
  reload(): Promise<void> {
    if (this.#reading) {
      this.#isReadAgain = true;
      return this.#reading;
    }
    this.#reading = this.#read().finally(() => {
      this.#reading = undefined;
      if (this.#isReadAgain && !this.#isClosed) {
        this.#isReadAgain = false;
        void this.reload();
      }
    });
    return this.#reading;
  }

  /** Stops following the directory. */
  close(): void {
    this.#isClosed = true;
    clearInterval(this.#timer);
    this.#closeWatcher();
  }

  #readSoon(): void {
    if (!this.#isClosed) void this.reload();
  }

  #watch(): void {
    if (this.#watcher || this.#isClosed) return;
    try {
      this.#watcher = watch(this.directory, () => this.#readSoon());
      this.#watcher.on("error", () => this.#closeWatcher());
      // Like the poll's timer, the watch alone does not keep a process alive.
      this.#watcher.unref?.();
    } catch {
      // No directory yet (it is watched once it has been read), or no watch on this file
      // system: the poll finds the files.
    }
  }

  #closeWatcher(): void {
    this.#watcher?.close();
    this.#watcher = undefined;
  }

  async #read(): Promise<void> {
    let read: FileCredentials;
    try {
      read = await readCredentialDirectory(this.directory, this.layout, this.#current);
    } catch (err) {
      const error = err instanceof CredentialDirectoryUnusable
        ? err
        : new CredentialDirectoryUnusable(this.directory, "invalid", (err as Error).message, { cause: err });
      this.lastError = error;
      // Said once per kind of failure, not at every poll; counted every time.
      this.refusedReads++;
      this.#metrics?.credentialFilesRefused.inc({ reason: error.reason });
      if (error.message !== this.#lastRefusal) {
        this.#lastRefusal = error.message;
        this.#logger.error(
          this.#current
            ? "credential files refused; the credentials in service stay"
            : "credential files cannot be used yet",
          { directory: this.directory, reason: error.reason, error },
        );
      }
      return;
    }
    // A read that was under way when the source was closed puts nothing into service.
    if (this.#isClosed) return;
    this.lastError = undefined;
    this.#lastRefusal = "";
    this.#watch();
    const previous = this.#current;
    if (read === previous) return;
    this.#current = read;
    this.#logger.info(previous ? "credential files rotated" : "credential files loaded", {
      directory: this.directory,
      spiffeId: read.id.toString(),
      serialNumber: read.serialNumber,
      notAfter: read.expiresAt.toISOString(),
    });
    this.emit("change");
  }
}
