/**
 * The `meshauth` command line: `meshauth ca ...` runs and manages the CA (see `cli/ca.ts`),
 * `meshauth agent ...` runs the node agent (see `cli/agent.ts`), `meshauth proxy` the mutual-TLS
 * proxy beside one workload, a sidecar (see `cli/proxy.ts`).
 * `meshauth --help` lists the command groups, `meshauth <group> --help` their commands.
 *
 * @module
 */

import { realpathSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { didYouMean, isHelp, packageVersion, reportCliError, UsageError } from "./args.ts";

const HELP = `usage: meshauth <group> <command> [options]

Groups:
  ca       the certificate authority: init, serve, revoke, token create, rotate, export-key
  agent    the node agent: certificates for the workloads of a node, written and renewed
  proxy    the mutual-TLS proxy beside one workload (a sidecar), with the files the agent delivers

Run "meshauth <group> --help" for its commands; "meshauth --version" for the version.`;

/** The command groups, each loaded only when used, so that --help and --version are quick. */
const GROUPS: Record<string, () => Promise<(args: string[]) => Promise<number>>> = {
  ca: async () => (await import("./ca.ts")).runCaCommand,
  agent: async () => (await import("./agent.ts")).runAgentCommand,
  proxy: async () => (await import("./proxy.ts")).runProxyCommand,
};

/** Runs the CLI with `argv` (without the node and script paths); answers the exit code. */
export async function runCli(argv: string[]): Promise<number> {
  const [group, ...rest] = argv;
  if (group === "--version" || group === "-v" || group === "version") {
    console.log(`meshauth ${packageVersion()}`);
    return 0;
  }
  if (isHelp(group)) {
    console.log(HELP);
    return 0;
  }
  const load = group === undefined ? undefined : GROUPS[group];
  if (!load) {
    const what = group === undefined
      ? "no command"
      : `unknown command "${group}"${didYouMean(group, Object.keys(GROUPS))}`;
    return reportCliError(new UsageError(`${what}\n\n${HELP}`));
  }
  return await (await load())(rest);
}

// Run when executed (node cli/main.ts, or the built bin), not when imported.
if (process.argv[1] && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href) {
  const code = await runCli(process.argv.slice(2));
  // A server keeps the process alive by its sockets; every other command ends with its code.
  if (code !== 0 || process.argv[3] !== "serve") process.exitCode = code;
}
