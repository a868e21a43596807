/**
 * What `--check` of `meshauth agent` and of `meshauth proxy` says of the inbound listeners'
 * policy files: each is read as the proxy reads it at start (which a bad one refuses).
 *
 * @module
 */

import type { InboundConfig } from "../agent/proxy/config.ts";
import { ListenerPolicy } from "../agent/proxy/policy-files.ts";
import { errorLine } from "../internal/mod.ts";

/** One line per listener whose policies cannot be used: `  inbound db: ERR_PROXY_POLICY: ...`. */
export async function listenerPolicyProblems(inbound: readonly InboundConfig[]): Promise<string[]> {
  const problems: string[] = [];
  for (const listener of inbound) {
    await ListenerPolicy.load({
      listener: listener.name,
      files: listener.policies,
      protocol: listener.protocol,
      defaultAction: listener.defaultAction,
    }).catch((err: Error) => problems.push(`  inbound ${listener.name}: ${errorLine(err)}`));
  }
  return problems;
}
