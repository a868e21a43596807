/**
 * `meshauth agent --config agent.yaml`: runs the node agent until SIGTERM or SIGINT.
 * `--check` validates the configuration and the workload entries and exits. Every key is in
 * `docs/agent.md`; `MESHAUTH_*` variables override the file.
 *
 * @module
 */

import { setFlagsFromString } from "node:v8";
import { AGENT_ENV_OVERRIDES, type AgentConfig, loadAgentConfig } from "../agent/config.ts";
import { formatAddress } from "../agent/proxy/address.ts";
import type { WorkloadProblem, WorkloadSpec } from "../agent/sources/source.ts";
import { jsonLogger } from "../internal/mod.ts";
import { parseConfigCommand, reportCliError, UsageError } from "./args.ts";
import { listenerPolicyProblems } from "./policy-problems.ts";
import { runUntilSignal } from "./until-signal.ts";

const HELP = `usage: meshauth agent --config <file> [options]

Runs the node agent: gets the node's identity with a join token (meshauth ca token create
--node <name>) or, on Kubernetes, its projected service-account token, then a certificate for
every workload on the node (static in the file, drop-in files in workloadsDir, annotated pods
of the node, and CSI volumes of driver meshauth.io), written into each workload's directory
and renewed; with a proxy: section, fronts them with the mutual-TLS proxy. Serves /healthz,
/readyz and /metrics (the agent's and the proxy's) on 127.0.0.1:8444, and with
listen.statusPage: true the live status page at /. Stops on SIGTERM or SIGINT.

Options:
  --config <file>   YAML or JSON configuration (every key: docs/agent.md)
  --check           validate the configuration and the workload entries (the drop-in files
                    included), print them, exit (1 when an entry is skipped)
  --help            this text
Environment overrides: ${Object.keys(AGENT_ENV_OVERRIDES).join(", ")}`;

/** The drop-in files of `workloadsDir` as the agent reads them at start: entries and problems. */
async function readDropIns(
  config: AgentConfig,
): Promise<{ workloads: readonly WorkloadSpec[]; problems: WorkloadProblem[] }> {
  const found: { workloads: readonly WorkloadSpec[]; problems: WorkloadProblem[] } = {
    workloads: [],
    problems: [],
  };
  if (!config.workloadsDir) return found;
  const { DirectorySource } = await import("../agent/sources/directory.ts");
  const source = new DirectorySource({
    directory: config.workloadsDir,
    trustDomain: config.trustDomain,
    defaults: config.workloadDefaults,
  });
  await source.start({
    replace: (_source, workloads) => void (found.workloads = workloads),
    problem: (problem) => void found.problems.push(problem),
    delivered: () => Promise.resolve(),
  });
  await source.stop();
  return found;
}

/** What `--check` prints; its first line says whether the configuration is valid, as the exit code does. */
async function describe(config: AgentConfig): Promise<{ text: string; isValid: boolean }> {
  const dropIns = await readDropIns(config);
  const problems = [...config.workloadProblems, ...dropIns.problems];
  const policyProblems = await listenerPolicyProblems(config.proxy?.inbound ?? []);
  const where = `node ${config.node.name} of ${config.trustDomain}, CA ${config.ca.url}`;
  const why = [
    ...(problems.length > 0
      ? [`${problems.length} workload entr${problems.length === 1 ? "y is" : "ies are"} skipped`]
      : []),
    ...(policyProblems.length > 0
      ? [
        `${policyProblems.length} listener${
          policyProblems.length === 1 ? "'s" : "s'"
        } policies cannot be used`,
      ]
      : []),
  ];
  const lines = [
    why.length === 0
      ? `configuration is valid: ${where}`
      : `configuration is not valid: ${why.join(", ")} (below); ${where}`,
    ...policyProblems,
    `state directory ${config.stateDir}; status port ${config.listen.host}:${config.listen.port}`,
    ...[...config.workloads, ...dropIns.workloads].map((w) =>
      `  workload ${w.name}: ${w.spiffeId} -> ${w.directory} (${w.layout})${
        w.origin.file ? ` from ${w.origin.file}` : ""
      }`
    ),
  ];
  if (config.workloadsDir) {
    lines.push(`  and the drop-in files in ${config.workloadsDir}, read again as they change`);
  }
  const k8s = config.kubernetes;
  if (k8s?.pods.enabled) {
    lines.push(`  and the annotated pods of node ${config.node.name}, in ${k8s.pods.directory}`);
  }
  if (k8s?.csi.enabled) {
    lines.push(`  and the CSI volumes of driver ${k8s.csi.driverName}, served on ${k8s.csi.socket}`);
  }
  if (config.proxy) {
    for (const l of config.proxy.inbound) {
      lines.push(
        `  inbound ${l.name}: ${formatAddress(l.listen)} (mutual TLS as ${l.workload}) -> ${
          formatAddress(l.forward)
        }`,
      );
    }
    for (const l of config.proxy.outbound) {
      lines.push(
        `  outbound ${l.name}: ${
          formatAddress(l.listen)
        } -> ${l.upstream.host}:${l.upstream.port} as ${l.workload}, served by ${l.allowedIds.join(", ")}`,
      );
    }
  }
  if (config.listen.statusPage) {
    lines.push(`  status page: http://${config.listen.host}:${config.listen.port}/`);
  }
  for (const p of problems) {
    lines.push(`  skipped ${[p.file, p.field].filter(Boolean).join(" ")}: ${p.message}`);
  }
  return { text: lines.join("\n"), isValid: why.length === 0 };
}

/**
 * The agent holds its workloads' certificates for hours and allocates little in between, but
 * the burst of a thousand first issuances makes V8 grow its young generation from 2 MB to its
 * maximum (32 MB on Node 20, 64 MB on Node 24), which it then keeps: most of the agent's RSS
 * above idle. Holding the young generation at its initial size costs a few more scavenges
 * (measured in bench/agent.ts) and saves that memory on every node. A semi-space size given
 * in NODE_OPTIONS or on the command line is left as the operator set it.
 */
function keepYoungGenerationSmall(): void {
  const given = `${process.env.NODE_OPTIONS ?? ""} ${process.execArgv.join(" ")}`;
  if (/semi[-_]space/.test(given)) return;
  try {
    setFlagsFromString("--semi-space-growth-factor=1");
  } catch {
    // A runtime without V8 flags keeps its own defaults.
  }
}

/** Runs `meshauth agent <args>`; answers the exit code once the agent stops (2 for a usage error). */
export async function runAgentCommand(args: string[]): Promise<number> {
  try {
    const values = parseConfigCommand(args, HELP);
    if (!values) return 0;
    if (values.config === undefined && process.env.MESHAUTH_NODE_NAME === undefined) {
      throw new UsageError(`--config <file> is required (or the MESHAUTH_* variables)\n\n${HELP}`);
    }
    const config = await loadAgentConfig({ path: values.config, env: process.env });
    if (values.check) {
      const { text, isValid } = await describe(config);
      console.log(text);
      return isValid ? 0 : 1;
    }
    keepYoungGenerationSmall();
    const { startAgentDaemon } = await import("../agent/daemon.ts");
    // Signals are handled from the start (see until-signal.ts): a stop while the node is
    // still bootstrapping exits at once.
    const logger = jsonLogger({ level: config.log.level });
    await runUntilSignal(() => startAgentDaemon(config, { logger }), { logger });
    return 0;
  } catch (err) {
    return reportCliError(err);
  }
}
