/**
 * Reading one workload entry, the same way for the configuration's `workloads:` list and for a
 * drop-in file: every field checked, every problem named by its field path, misspelt keys
 * refused, and the defaults of `workloadDefaults:` applied.
 *
 * @module
 */

import { KEY_ALGORITHMS, type KeyAlgorithm, SpiffeId, type TrustDomain } from "../../mod.ts";
import type { FieldReader, RawConfig } from "../../internal/mod.ts";
import { LAYOUT_NAMES, type LayoutName } from "../delivery/layouts.ts";
import type { WorkloadOrigin, WorkloadProblem, WorkloadSpec } from "./source.ts";

/** Defaults for every workload entry (`workloadDefaults:` in the configuration). */
export interface WorkloadDefaults {
  /** Algorithm of each workload's key; `ECDSA-P256` without a default. */
  keyAlgorithm: KeyAlgorithm;
  /** File names in each workload's directory; `istio` without a default. */
  layout: LayoutName;
  /** Mode of the key file (and of the combined file); `0o600` without a default. */
  keyFileMode: number;
  /** Lifetime to ask of the CA, 10 s to 366 days; the CA's default when unset. */
  ttlSeconds?: number;
  /** Owner of the delivered files; the agent's uid when unset. */
  uid?: number;
  /** Group of the delivered files; the agent's gid when unset. */
  gid?: number;
  /** Name of a file holding the chain and the key together; none when unset. */
  combinedFile?: string;
}

/** The defaults without a `workloadDefaults:` section. */
export const WORKLOAD_DEFAULTS: WorkloadDefaults = {
  keyAlgorithm: "ECDSA-P256",
  layout: "istio",
  keyFileMode: 0o600,
};

/** The fields of an entry (a drop-in file has no `name`: its file name is the name). */
export const WORKLOAD_FIELDS = [
  "name",
  "spiffeId",
  "directory",
  "uid",
  "gid",
  "keyFileMode",
  "ttlSeconds",
  "keyAlgorithm",
  "layout",
  "combinedFile",
] as const;

/** Fields that `workloadDefaults:` may set. */
export const DEFAULTABLE_FIELDS = [
  "uid",
  "gid",
  "keyFileMode",
  "ttlSeconds",
  "keyAlgorithm",
  "layout",
  "combinedFile",
] as const;

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$/;
const MAX_ID = 2 ** 32 - 2;

/** `field: message` as FieldReader words it, split into a problem. */
export function problemOf(origin: WorkloadOrigin, text: string): WorkloadProblem {
  const at = text.indexOf(": ");
  return at > 0 && !text.slice(0, at).includes(" ")
    ? { ...origin, field: text.slice(0, at), message: text.slice(at + 2) }
    : { ...origin, message: text };
}

/** A valid workload name (also a file name in the state directory)? */
export function isWorkloadName(name: string): boolean {
  return NAME.test(name) && name !== "." && name !== "..";
}

/**
 * Reads a file mode written as an octal string (`"0600"`, `"640"`). A bare number is refused:
 * YAML reads `0600` as the decimal 600, and a mode silently wrong is worse than an error.
 */
export function readMode(fields: FieldReader, path: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== "string" || !/^0?[0-7]{3}$/.test(value)) {
    fields.problem(
      `${path}: expected an octal mode in quotes, like "0600", got ${JSON.stringify(value)}` +
        (typeof value === "number" ? " (YAML reads an unquoted 0600 as the number 600)" : ""),
    );
    return fallback;
  }
  const mode = Number.parseInt(value, 8);
  // A private key readable or writable by others, or writable by its group, is no secret.
  if (mode & 0o027) {
    fields.problem(
      `${path}: ${value} lets the group write or others read the private key; use 0600, 0640 or 0400`,
    );
    return fallback;
  }
  if (!(mode & 0o400)) {
    fields.problem(`${path}: ${value} does not let the owner read the key`);
    return fallback;
  }
  return mode;
}

/** Reads a plain file name (for `combinedFile`). */
function readFileName(fields: FieldReader, path: string, value: unknown): string | undefined {
  if (value === undefined) return undefined;
  const name = fields.str(path, value);
  if (!name) return undefined;
  if (name.includes("/") || name.startsWith("..") || name === ".") {
    fields.problem(`${path}: a plain file name, not ${JSON.stringify(name)}`);
    return undefined;
  }
  return name;
}

/** Reads the `workloadDefaults:` section. */
export function readWorkloadDefaults(fields: FieldReader, value: unknown): WorkloadDefaults {
  const raw = fields.obj("workloadDefaults", value, DEFAULTABLE_FIELDS);
  return readCommon(fields, "workloadDefaults.", raw, WORKLOAD_DEFAULTS);
}

function readCommon(
  fields: FieldReader,
  prefix: string,
  raw: RawConfig,
  defaults: WorkloadDefaults,
): WorkloadDefaults {
  const keyAlgorithm = fields.oneOf(
    `${prefix}keyAlgorithm`,
    raw.keyAlgorithm,
    KEY_ALGORITHMS,
    defaults.keyAlgorithm,
  );
  const out: WorkloadDefaults = {
    keyAlgorithm,
    layout: fields.oneOf(`${prefix}layout`, raw.layout, LAYOUT_NAMES, defaults.layout),
    keyFileMode: readMode(fields, `${prefix}keyFileMode`, raw.keyFileMode, defaults.keyFileMode),
    ttlSeconds: raw.ttlSeconds === undefined
      ? defaults.ttlSeconds
      : fields.int(`${prefix}ttlSeconds`, raw.ttlSeconds, 0, 10, 366 * 86400),
    uid: raw.uid === undefined ? defaults.uid : fields.int(`${prefix}uid`, raw.uid, 0, 0, MAX_ID),
    gid: raw.gid === undefined ? defaults.gid : fields.int(`${prefix}gid`, raw.gid, 0, 0, MAX_ID),
    combinedFile: raw.combinedFile === undefined
      ? defaults.combinedFile
      : readFileName(fields, `${prefix}combinedFile`, raw.combinedFile),
  };
  return out;
}

/** Where an entry is, and what it is called when its file names it. */
export interface EntryContext {
  trustDomain: TrustDomain;
  defaults: WorkloadDefaults;
  origin: WorkloadOrigin;
  /** The name when the entry does not carry one (a drop-in file's base name). */
  name?: string;
  /** The field path of the entry (`workloads[2]`); empty for a file that is one entry. */
  prefix: string;
}

/**
 * Reads one entry; answers undefined when it has problems (which `fields` holds, each with
 * its field path). Relative directories resolve against the defining file's directory.
 */
export function readWorkloadEntry(
  fields: FieldReader,
  value: unknown,
  context: EntryContext,
): WorkloadSpec | undefined {
  const before = fields.problems.length;
  const p = context.prefix ? `${context.prefix}.` : "";
  const known = context.name === undefined ? WORKLOAD_FIELDS : WORKLOAD_FIELDS.filter((f) => f !== "name");
  let raw: RawConfig;
  if (context.prefix) raw = fields.obj(context.prefix, value, known);
  else {
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      fields.problem("the file must hold one mapping (a workload entry)");
      return undefined;
    }
    raw = value as RawConfig;
    fields.knownKeys(raw, known);
  }
  const name = context.name ?? fields.str(`${p}name`, raw.name);
  if (name && !isWorkloadName(name)) {
    fields.problem(
      `${p}name: ${context.name === undefined ? "" : "the file name "}${
        JSON.stringify(name)
      } is not a workload name (letters, digits, ".", "_", "-"; at most 253)`,
    );
  }
  let spiffeId: SpiffeId | undefined;
  const idText = fields.spiffeId(`${p}spiffeId`, raw.spiffeId);
  if (idText !== undefined) {
    spiffeId = SpiffeId.parse(idText);
    if (!spiffeId.memberOf(context.trustDomain)) {
      fields.problem(
        `${p}spiffeId: ${idText} is not in this agent's trust domain ${context.trustDomain.name}`,
      );
    } else if (spiffeId.path === "") {
      fields.problem(`${p}spiffeId: ${idText} names the trust domain, not a workload`);
    }
  }
  const directory = fields.path(`${p}directory`, raw.directory);
  const common = readCommon(fields, p, raw, context.defaults);
  if (fields.problems.length > before || !spiffeId) return undefined;
  return {
    name,
    spiffeId,
    directory,
    owner: { uid: common.uid, gid: common.gid },
    keyFileMode: common.keyFileMode,
    ttlSeconds: common.ttlSeconds,
    keyAlgorithm: common.keyAlgorithm,
    layout: common.layout,
    combinedFile: common.combinedFile,
    origin: context.origin,
  };
}
