/**
 * The TLS settings every proxy connection uses: TLS 1.3 only, and the key exchange groups with
 * the hybrid post-quantum `X25519MLKEM768` first wherever the runtime's TLS library has it
 * (OpenSSL 3.5, as in Node 24), classical groups after it as the fallback. Which groups the
 * runtime has is found by asking it once, not by reading version numbers.
 *
 * @module
 */

import { createSecureContext, type SecureContextOptions } from "node:tls";
import { ConfigError } from "../../internal/mod.ts";

/** The hybrid group Linkerd 2.19 and Chrome use: X25519 combined with ML-KEM-768 (FIPS 203). */
export const POST_QUANTUM_GROUP = "X25519MLKEM768";
/** Classical groups, in order: the fallback for peers without the hybrid group. */
export const CLASSICAL_GROUPS = ["X25519", "P-256", "P-384"] as const;

let cachedDefault: { groups: string[]; isPostQuantum: boolean } | undefined;

/** True when this runtime's TLS library accepts `group` in a groups list. */
export function supportsGroup(group: string): boolean {
  try {
    createSecureContext({ ecdhCurve: group, minVersion: "TLSv1.3" });
    return true;
  } catch {
    // Node 20 leaves the refusal on OpenSSL's error queue, where the next key import of this
    // thread finds it and fails (ERR_SSL_PASSED_INVALID_ARGUMENT); a context that succeeds
    // clears the queue.
    createSecureContext({ minVersion: "TLSv1.3" });
    return false;
  }
}

/** The default groups on this runtime: the hybrid one first when available. */
export function defaultGroups(): { groups: string[]; isPostQuantum: boolean } {
  if (!cachedDefault) {
    const isPostQuantum = supportsGroup(POST_QUANTUM_GROUP);
    cachedDefault = {
      groups: isPostQuantum ? [POST_QUANTUM_GROUP, ...CLASSICAL_GROUPS] : [...CLASSICAL_GROUPS],
      isPostQuantum,
    };
  }
  return cachedDefault;
}

/**
 * The groups to use: the configured ones (each checked against the runtime) or the defaults.
 * Throws a `ConfigError` (`ERR_CONFIG`) naming the groups this runtime does not have.
 */
export function resolveGroups(configured: readonly string[] | undefined): string[] {
  if (!configured) return defaultGroups().groups;
  const unsupported = configured.filter((g) => !supportsGroup(g));
  if (unsupported.length) {
    throw new ConfigError("proxy.tls.groups", [
      `proxy.tls.groups: this runtime's TLS library does not offer ${unsupported.join(", ")} (it has ${
        [POST_QUANTUM_GROUP, ...CLASSICAL_GROUPS].filter(supportsGroup).join(", ")
      })`,
    ]);
  }
  return [...configured];
}

/** The options of a workload's TLS context: its SVID, TLS 1.3, and the groups. */
export function contextOptions(
  credential: { certificateChainPem: string; privateKeyPem: string },
  groups: readonly string[],
): SecureContextOptions {
  return {
    cert: credential.certificateChainPem,
    key: credential.privateKeyPem,
    minVersion: "TLSv1.3",
    ecdhCurve: groups.join(":"),
  };
}
