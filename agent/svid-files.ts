/**
 * Delivers an SVID to a workload as files, the way istio-agent and SPIRE's helper do: the
 * certificate chain, the private key (mode 0600) and the trust bundle, each replaced
 * atomically (write a temporary file, fsync, rename, fsync the directory) so a reader never
 * sees a half-written file or a key that does not match its certificate for long.
 * @module
 */

import { promises as fs } from "node:fs";
import { join } from "node:path";
import { writeFileAtomic } from "../internal/mod.ts";

/** File names inside the delivery directory. */
export interface SvidFileNames {
  certificateChain: string;
  privateKey: string;
  trustBundle: string;
}

/** SPIFFE helper's conventional names. */
export const DEFAULT_SVID_FILE_NAMES: SvidFileNames = {
  certificateChain: "svid.pem",
  privateKey: "svid_key.pem",
  trustBundle: "bundle.pem",
};

/** What gets written. */
export interface SvidFiles {
  certificateChainPem: string;
  privateKeyPem: string;
  trustBundlePem: string;
}

/**
 * Writes the SVID files into `directory` (created with mode 0700 if missing). The key is
 * written before the certificate so that a reader who sees the new certificate finds its key.
 */
export async function writeSvidFiles(
  directory: string,
  files: SvidFiles,
  names: SvidFileNames = DEFAULT_SVID_FILE_NAMES,
): Promise<void> {
  await fs.mkdir(directory, { recursive: true, mode: 0o700 });
  await writeFileAtomic(join(directory, names.trustBundle), files.trustBundlePem, 0o644);
  await writeFileAtomic(join(directory, names.privateKey), files.privateKeyPem, 0o600);
  await writeFileAtomic(join(directory, names.certificateChain), files.certificateChainPem, 0o644);
}
