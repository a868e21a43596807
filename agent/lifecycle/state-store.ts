/**
 * The agent's state directory: its node SVID, the trust bundle it last fetched, and each
 * workload's key and certificate, so that a restarted agent serves every still-valid
 * certificate at once, before the CA answers, and does not re-issue them all.
 *
 * ```
 * <stateDir>/node.json             the node SVID and its key       (0600)
 * <stateDir>/trust.json            the trust bundle, its ETag      (0600)
 * <stateDir>/crls.json             the CRLs held, each with the certificate it was checked against (0600)
 * <stateDir>/workloads/<name>.json one workload's SVID and key     (0600)
 * ```
 *
 * Each record is one file replaced atomically, so a key and its certificate are always stored
 * together. The trust bundle is stored once, in `trust.json`, not in every workload's record.
 * The CRLs are public, but kept with the rest so that an agent restarted while the CA cannot be
 * reached still checks revocation against the CRLs it had.
 * The directory is made 0700, and one that others can reach, or that belongs to another user,
 * is refused: it holds every private key of the node.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { promises as fs } from "node:fs";
import { join } from "node:path";
import { KEY_ALGORITHMS, type KeyAlgorithm, MeshAuthError, SpiffeId } from "../../mod.ts";
import { removeStaleTemporaries, writeFileAtomic } from "../../internal/mod.ts";
import type { HeldSvid } from "../issuance.ts";

/** The state directory cannot be used. */
export class StateDirectoryUnsafe extends MeshAuthError {
  /** Stable code of this class: `ERR_STATE_DIRECTORY_UNSAFE`. */
  static override code: string = "ERR_STATE_DIRECTORY_UNSAFE";
  /** `reason` completes "the state directory <directory> ...": what is wrong with it. */
  constructor(readonly directory: string, reason: string) {
    super(`the state directory ${directory} ${reason}`);
    this.name = "StateDirectoryUnsafe";
  }
}

/** A workload's stored SVID, and where its files were delivered. */
export interface WorkloadRecord {
  /** The workload's name, unique on this node (its `WorkloadSpec.name`); names the record's file. */
  name: string;
  /** Where its files were delivered: a restarted agent clears it if the workload moved or went. */
  directory: string;
  /** The algorithm of the stored key (a changed setting means a new key). */
  keyAlgorithm?: KeyAlgorithm;
  /** The SVID and its private key, as last issued. */
  svid: HeldSvid;
}

/** The trust bundle as last fetched. */
export interface TrustRecord {
  /** The roots, as PEM. */
  bundlePem: string;
  /** The CA's `ETag` for it, sent back as `If-None-Match` so an unchanged bundle costs no body. */
  etag?: string;
  /** The CA's `SPIFFE-Bundle-Sequence`, which grows each time the set of roots changes. */
  sequence?: number;
}

/** A CRL the agent held, with the certificate of its authority it was checked against. */
export interface CrlRecord {
  /** The authority's id (as `GET /v1/crl/<id>` names it). */
  authorityId: string;
  /** The CRL, DER. */
  der: Uint8Array;
  /** A certificate chain of that authority (leaf first): the CRL is checked against it again at load. */
  sampleChainPem: string;
}

interface StoredSvid {
  spiffeId: string;
  serialNumber: string;
  notBefore: string;
  notAfter: string;
  obtainedAt?: string;
  certificateChainPem: string;
  privateKeyPem: string;
  /** In the node's record only (records of older versions have it in every record). */
  trustBundlePem?: string;
}

function store(svid: HeldSvid, withBundle: boolean): StoredSvid {
  return {
    spiffeId: svid.spiffeId.toString(),
    serialNumber: svid.serialNumber,
    notBefore: svid.notBefore.toISOString(),
    notAfter: svid.expiresAt.toISOString(),
    obtainedAt: svid.obtainedAt?.toISOString(),
    certificateChainPem: svid.certificateChainPem,
    privateKeyPem: svid.privateKeyPem,
    ...(withBundle ? { trustBundlePem: svid.trustBundlePem } : {}),
  };
}

/** A stored SVID; `trustBundlePem` fills in the bundle when the record does not carry it. */
function revive(value: unknown, trustBundlePem?: string): HeldSvid | undefined {
  const s = value as Partial<StoredSvid> | undefined;
  const bundle = typeof s?.trustBundlePem === "string" ? s.trustBundlePem : trustBundlePem;
  if (
    !s || typeof s.spiffeId !== "string" || typeof s.serialNumber !== "string" ||
    typeof s.notBefore !== "string" || typeof s.notAfter !== "string" ||
    typeof s.certificateChainPem !== "string" || typeof s.privateKeyPem !== "string" ||
    bundle === undefined
  ) return undefined;
  const notBefore = new Date(s.notBefore);
  const expiresAt = new Date(s.notAfter);
  const obtainedAt = typeof s.obtainedAt === "string" ? new Date(s.obtainedAt) : undefined;
  if (Number.isNaN(notBefore.getTime()) || Number.isNaN(expiresAt.getTime())) return undefined;
  try {
    return {
      spiffeId: SpiffeId.parse(s.spiffeId),
      serialNumber: s.serialNumber,
      notBefore,
      expiresAt,
      ...(obtainedAt && !Number.isNaN(obtainedAt.getTime()) ? { obtainedAt } : {}),
      certificateChainPem: s.certificateChainPem,
      privateKeyPem: s.privateKeyPem,
      trustBundlePem: bundle,
    };
  } catch {
    return undefined;
  }
}

/** The agent's records on disk. */
export class StateStore {
  /** `directory` is the state directory; nothing is touched until {@link StateStore.open}. */
  constructor(readonly directory: string) {}

  /**
   * Creates the directory (0700) if missing and refuses one that others can reach or that
   * belongs to a user other than root and the agent.
   */
  async open(): Promise<void> {
    await fs.mkdir(join(this.directory, "workloads"), { recursive: true, mode: 0o700 });
    const stat = await fs.lstat(this.directory);
    if (!stat.isDirectory()) throw new StateDirectoryUnsafe(this.directory, "is not a directory");
    const me = process.getuid?.();
    if (me !== undefined && stat.uid !== me && stat.uid !== 0) {
      throw new StateDirectoryUnsafe(
        this.directory,
        `belongs to uid ${stat.uid}, not to root or the agent (uid ${me}), but holds private keys`,
      );
    }
    if (stat.mode & 0o077) {
      throw new StateDirectoryUnsafe(
        this.directory,
        `is open to others (mode ${
          (stat.mode & 0o777).toString(8).padStart(4, "0")
        }) but holds private keys; ` +
          `chmod 700 it`,
      );
    }
    await removeStaleTemporaries(this.directory);
    await removeStaleTemporaries(join(this.directory, "workloads"));
  }

  async #read(path: string): Promise<unknown> {
    try {
      return JSON.parse(await fs.readFile(path, "utf8"));
    } catch {
      return undefined;
    }
  }

  /** The node's SVID, if stored. */
  async loadNode(): Promise<HeldSvid | undefined> {
    return revive(((await this.#read(join(this.directory, "node.json"))) as { svid?: unknown })?.svid);
  }

  /** Stores the node's SVID. */
  async saveNode(svid: HeldSvid): Promise<void> {
    await writeFileAtomic(
      join(this.directory, "node.json"),
      JSON.stringify({ version: 1, svid: store(svid, true) }),
      0o600,
    );
  }

  /** The trust bundle last fetched, if stored. */
  async loadTrust(): Promise<TrustRecord | undefined> {
    const t = (await this.#read(join(this.directory, "trust.json"))) as Partial<TrustRecord> | undefined;
    if (typeof t?.bundlePem !== "string") return undefined;
    return {
      bundlePem: t.bundlePem,
      etag: typeof t.etag === "string" ? t.etag : undefined,
      sequence: typeof t.sequence === "number" ? t.sequence : undefined,
    };
  }

  /** Stores the trust bundle. */
  async saveTrust(record: TrustRecord): Promise<void> {
    await writeFileAtomic(
      join(this.directory, "trust.json"),
      JSON.stringify({ version: 1, ...record }),
      0o600,
    );
  }

  /** The CRLs last held; unreadable entries are skipped. */
  async loadCrls(): Promise<CrlRecord[]> {
    const raw = (await this.#read(join(this.directory, "crls.json"))) as { crls?: unknown } | undefined;
    if (!Array.isArray(raw?.crls)) return [];
    return raw.crls.flatMap((entry: Partial<Record<keyof CrlRecord, unknown>>) => {
      if (
        typeof entry?.authorityId !== "string" || typeof entry.der !== "string" ||
        typeof entry.sampleChainPem !== "string"
      ) return [];
      return [{
        authorityId: entry.authorityId,
        der: new Uint8Array(Buffer.from(entry.der, "base64")),
        sampleChainPem: entry.sampleChainPem,
      }];
    });
  }

  /** Stores the CRLs held now (all of them: the file is replaced). */
  async saveCrls(records: readonly CrlRecord[]): Promise<void> {
    await writeFileAtomic(
      join(this.directory, "crls.json"),
      JSON.stringify({
        version: 1,
        crls: records.map((r) => ({
          authorityId: r.authorityId,
          der: Buffer.from(r.der).toString("base64"),
          sampleChainPem: r.sampleChainPem,
        })),
      }),
      0o600,
    );
  }

  /**
   * Every stored workload record, with `trustBundlePem` (the bundle the agent holds now) as
   * each SVID's bundle; unreadable ones are skipped (their workloads get new SVIDs).
   */
  async loadWorkloads(trustBundlePem: string): Promise<Map<string, WorkloadRecord>> {
    const out = new Map<string, WorkloadRecord>();
    const dir = join(this.directory, "workloads");
    for (const file of await fs.readdir(dir)) {
      if (!file.endsWith(".json")) continue;
      const raw = (await this.#read(join(dir, file))) as {
        name?: unknown;
        directory?: unknown;
        keyAlgorithm?: unknown;
        svid?: unknown;
      };
      const svid = revive(raw?.svid, trustBundlePem);
      if (
        !svid || typeof raw?.name !== "string" || typeof raw.directory !== "string" ||
        `${raw.name}.json` !== file
      ) {
        continue;
      }
      const keyAlgorithm = KEY_ALGORITHMS.find((a) => a === raw.keyAlgorithm);
      out.set(raw.name, { name: raw.name, directory: raw.directory, keyAlgorithm, svid });
    }
    return out;
  }

  /** Stores one workload's SVID (before its files are delivered, so a crash between loses nothing). */
  async saveWorkload(record: WorkloadRecord): Promise<void> {
    await writeFileAtomic(
      join(this.directory, "workloads", `${record.name}.json`),
      JSON.stringify({
        version: 1,
        name: record.name,
        directory: record.directory,
        keyAlgorithm: record.keyAlgorithm,
        svid: store(record.svid, false),
      }),
      0o600,
    );
  }

  /** Forgets a workload. */
  async removeWorkload(name: string): Promise<void> {
    await fs.rm(join(this.directory, "workloads", `${name}.json`), { force: true });
  }
}
