/**
 * `meshauth proxy --config proxy.yaml`: the mutual-TLS proxy on its own, beside one workload
 * (a Kubernetes sidecar), with the SVID files the agent delivers, until SIGTERM or SIGINT.
 * `--check` validates the configuration and the policy files and exits. Every key is in
 * `docs/proxy.md` ("Sidecar mode").
 *
 * @module
 */

import { formatAddress } from "../agent/proxy/address.ts";
import { readCredentialDirectory } from "../agent/proxy/file-credentials.ts";
import { loadSidecarConfig, type SidecarConfig } from "../agent/proxy/sidecar-config.ts";
import { errorLine, jsonLogger } from "../internal/mod.ts";
import { parseConfigCommand, reportCliError, UsageError } from "./args.ts";
import { listenerPolicyProblems } from "./policy-problems.ts";
import { runUntilSignal } from "./until-signal.ts";

const HELP = `usage: meshauth proxy --config <file> [options]

Runs the mutual-TLS proxy beside one workload (a Kubernetes sidecar): presents the SVID the
agent delivers into credentials.dir (read through ..data, followed as it rotates), verifies
peers against the delivered trust bundle and, with ca.url, the CA's CRLs; inbound listeners
enforce their policy files, outbound ones check the upstream's SPIFFE ID (secure naming).
Serves /healthz, /readyz (ready while the SVID in service is valid) and /metrics on
127.0.0.1:15020. Logs JSON lines. Stops on SIGTERM or SIGINT.

Options:
  --config <file>   YAML or JSON configuration (every key: docs/proxy.md, "Sidecar mode")
  --check           validate the configuration and the policy files, print them, exit
  --help            this text`;

/** What the credentials directory holds now, as a start would read it. */
async function credentialsNow(config: SidecarConfig): Promise<string> {
  try {
    const now = await readCredentialDirectory(config.credentials.dir, config.credentials.layout);
    return `credentials now: ${now.id} (serial ${now.serialNumber}), valid until ${now.expiresAt.toISOString()}`;
  } catch (err) {
    return `credentials now: none usable (${
      errorLine(err)
    }); a start waits for them and is not ready until then`;
  }
}

/** What `--check` prints; its first line says whether the configuration is valid, as the exit code does. */
async function describe(config: SidecarConfig): Promise<{ text: string; isValid: boolean }> {
  const policyProblems = await listenerPolicyProblems(config.proxy.inbound);
  const where = `credentials ${config.credentials.dir} (${config.credentials.layout})${
    config.ca ? `, CRLs from ${config.ca.url}` : ", no CA (no CRLs)"
  }`;
  const lines = [
    policyProblems.length === 0
      ? `configuration is valid: ${where}`
      : `configuration is not valid: ${policyProblems.length} listener${
        policyProblems.length === 1 ? "'s" : "s'"
      } policies cannot be used (below); ${where}`,
    ...policyProblems,
    // Not part of validity: on Kubernetes the files exist only in the pod, and the sidecar waits
    // for them; but an operator checking on the host is told what a start would find.
    await credentialsNow(config),
    `ops port ${config.listen.host}:${config.listen.port}; audit log ${config.proxy.auditLog}`,
    ...config.proxy.inbound.map((l) =>
      `  inbound ${l.name}: ${formatAddress(l.listen)} (${l.mode} ${l.protocol}, as ${l.workload}) -> ${
        formatAddress(l.forward)
      }, policies ${l.policies.join(", ") || "(none)"}`
    ),
    ...config.proxy.outbound.map((l) =>
      `  outbound ${l.name}: ${
        formatAddress(l.listen)
      } -> ${l.upstream.host}:${l.upstream.port} as ${l.workload}, served by ${l.allowedIds.join(", ")}`
    ),
  ];
  return { text: lines.join("\n"), isValid: policyProblems.length === 0 };
}

/** Runs `meshauth proxy <args>`; answers the exit code once the proxy stops (2 for a usage error). */
export async function runProxyCommand(args: string[]): Promise<number> {
  try {
    const values = parseConfigCommand(args, HELP);
    if (!values) return 0;
    if (values.config === undefined) throw new UsageError(`--config <file> is required\n\n${HELP}`);
    const config = await loadSidecarConfig({ path: values.config });
    if (values.check) {
      const { text, isValid } = await describe(config);
      console.log(text);
      return isValid ? 0 : 1;
    }
    const { startProxySidecar } = await import("../agent/proxy/sidecar.ts");
    const logger = jsonLogger({ level: config.log.level });
    const signal = await runUntilSignal(() => startProxySidecar(config, { logger }), { logger });
    logger.info("stopped", { signal });
    return 0;
  } catch (err) {
    return reportCliError(err);
  }
}
