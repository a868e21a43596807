/**
 * The `meshauth` command line: `meshauth ca init|serve|revoke|token create|rotate|export-key`.
 * Every command takes `--config <file>` (YAML or JSON) and honours `MESHAUTH_*` environment
 * overrides; `--help` on any of them says what it does.
 *
 * @module
 */

import { readFile, writeFile } from "node:fs/promises";
import {
  CertificateAuthority,
  createCsr,
  exportPrivateKeyPem,
  generateKeyPair,
  type KeyAlgorithm,
  SpiffeId,
  TrustDomain,
} from "../mod.ts";
import { type CaConfig, ENV_OVERRIDES, loadConfig } from "../ca-server/config.ts";
import { checkTrustDomain } from "../ca-server/authorities.ts";
import { authorityIdOf, type KeyManager } from "../ca-server/keys/key-manager.ts";
import { jsonLogger } from "../internal/mod.ts";
import { didYouMean, isHelp, parseFlags, reportCliError, UsageError } from "./args.ts";
import { Problem } from "../ca-server/problems.ts";
import { revocationSelector } from "../ca-server/service.ts";
import { ACCEPTED_REVOCATION_REASONS, type RevocationSelector } from "../ca-server/store/store.ts";

const COMMON = `Common options:
  --config <file>   YAML or JSON configuration (see docs/ca-server.md)
  --help            this text
Environment overrides: ${Object.keys(ENV_OVERRIDES).join(", ")}`;

const HELP: Record<string, string> = {
  "": `usage: meshauth ca <command> [options]

Commands:
  ca init           create the CA's root (or import an intermediate, or write a CSR for an offline root)
  ca serve          serve the CA's HTTP API
  ca revoke         revoke a certificate by serial number, or every certificate of a SPIFFE ID
  ca token create   create a join token for a workload, a node agent or an administrator
  ca rotate         add a new root that signs after an overlap period
  ca export-key     print an authority's private key (PKCS#8 PEM): the only way a key leaves

Run "meshauth ca <command> --help" for a command's options; "meshauth --version" for the version.`,
  init: `usage: meshauth ca init [options]

Creates the CA's first authority in the key directory, unless one exists.
  --trust-domain <td>       the trust domain (default from the configuration)
  --key-algorithm <alg>     ECDSA-P256 (default), ECDSA-P384, RSA-2048, RSA-3072, RSA-4096, Ed25519
  --ttl-seconds <n>         lifetime of the root
  --csr <file>              instead: make a key and write a CSR for an offline root to sign (key kept in <file>.key, mode 0600)
  --chain <file>            instead: import an intermediate: its chain (intermediate first) ...
  --key <file>              ... its private key ...
  --bundle <file>           ... and the root(s) that verify it
  --overlap-seconds <n>     with --chain, when a CA already signs: publish the new one now, sign with it after n seconds
${COMMON}`,
  serve: `usage: meshauth ca serve [options]

Serves the API (TLS on 127.0.0.1:8443 by default). Stops on SIGINT or SIGTERM; SIGHUP
reads the key directory again at once (a root added by "meshauth ca rotate" is published).
${COMMON}`,
  revoke: `usage: meshauth ca revoke (--serial <hex> | --spiffe-id <id>) --reason <reason> [options]

Revokes directly in the store; running servers put it in their next CRL.
  --serial <hex>      one certificate, by serial number (as the API answers it, or OpenSSL's AB:CD:... form)
  --spiffe-id <id>    every unexpired certificate of this SPIFFE ID (of this CA's trust domain)
  --reason <reason>   one of ${ACCEPTED_REVOCATION_REASONS.join(", ")}
Prints {"revoked": [...], "alreadyRevoked": [...]}; a certificate revoked before is left as it was
(its first reason stands), and said so on stderr.
${COMMON}`,
  token: `usage: meshauth ca token create (--spiffe-id <id> | --node <name> | --admin) [options]

Prints a new join token once; the store keeps only its hash.
  --spiffe-id <id>    for a workload: the one SPIFFE ID it may obtain
  --node <name>       for a node agent: the node's ID and the workloads configured on that node
  --admin             for an administrator: the revocation and listing API
  --ttl-seconds <n>   lifetime (default 3600)
  --reusable          may be used more than once (administrator tokens always are)
${COMMON}`,
  rotate: `usage: meshauth ca rotate [options]

Adds a new root now; it is published in the bundle at once and signs after the overlap.
  --overlap-seconds <n>   how long both roots are published before the new one signs (default 86400)
  --key-algorithm <alg>   key of the new root
${COMMON}`,
  "export-key": `usage: meshauth ca export-key --authority <id> [options]

Prints the private key of one authority as PKCS#8 PEM.
${COMMON}`,
};

/** Running servers reload authorities every 30 s (or on SIGHUP): a short overlap leaves clients no time. */
function warnShortOverlap(seconds: number): void {
  if (seconds < 60) {
    console.error(
      `meshauth: warning: servers pick up a new authority within 30 s (at once on SIGHUP), so an overlap of ` +
        `${seconds}s leaves clients little or no time to fetch its root before it signs`,
    );
  }
}

function positiveInt(value: string | undefined, name: string): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value) || Number(value) <= 0) {
    throw new UsageError(`${name} must be a positive whole number`);
  }
  return Number(value);
}

/** A word as a POSIX shell reads it back: as it is when plain, else single-quoted. */
function shellWord(word: string): string {
  return /^[\w./:=@%+,-]+$/.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`;
}

/**
 * The flags that chose this CA (` --config ca.yaml`, and `--trust-domain` where given), for
 * the commands the CLI tells users to run next: without them a copied command would act on
 * the default configuration.
 */
function sameCaFlags(values: { config?: string; "trust-domain"?: string }): string {
  return (values.config === undefined ? "" : ` --config ${shellWord(values.config)}`) +
    (values["trust-domain"] === undefined ? "" : ` --trust-domain ${shellWord(values["trust-domain"])}`);
}

async function configFrom(values: { config?: string; "trust-domain"?: string }): Promise<CaConfig> {
  return await loadConfig({
    path: values.config,
    env: process.env,
    overrides: { trustDomain: values["trust-domain"] },
  });
}

// The server, stores and crypto load only for the commands that use them, so --help is quick.
const setup = () => import("../ca-server/from-config.ts");

const commonOptions = {
  config: { type: "string" },
  help: { type: "boolean" },
} as const;

async function init(args: string[]): Promise<void> {
  const { values } = parseFlags(args, {
    ...commonOptions,
    "trust-domain": { type: "string" },
    "key-algorithm": { type: "string" },
    "ttl-seconds": { type: "string" },
    csr: { type: "string" },
    chain: { type: "string" },
    key: { type: "string" },
    bundle: { type: "string" },
    "overlap-seconds": { type: "string" },
  });
  if (values.help) return console.log(HELP.init);
  const config = await configFrom(values);
  const { initRoot, openKeyManager } = await setup();
  const keyManager = openKeyManager(config);
  const keyAlgorithm = values["key-algorithm"] as KeyAlgorithm | undefined;
  if (values.csr) {
    const keys = await generateKeyPair(keyAlgorithm ?? config.ca.keyAlgorithm);
    const csr = await createCsr({
      keys,
      id: `spiffe://${config.trustDomain}`,
      // The intermediate's subject is the issuer name of every SVID it signs: never empty.
      subject: { O: config.trustDomain, CN: "meshauth intermediate CA" },
    });
    await writeFile(`${values.csr}.key`, await exportPrivateKeyPem(keys.privateKey), { mode: 0o600 });
    await writeFile(values.csr, csr);
    console.log(
      `wrote ${values.csr} (key in ${values.csr}.key); have the offline root sign it as a CA, then run
  meshauth ca init${sameCaFlags(values)} --chain <signed chain> --key ${
        shellWord(`${values.csr}.key`)
      } --bundle <root.pem>`,
    );
    return;
  }
  const existing = await keyManager.list();
  checkTrustDomain(existing, config.trustDomain, keyManager);
  const overlap = positiveInt(values["overlap-seconds"], "--overlap-seconds");
  if (overlap !== undefined && !values.chain) throw new UsageError("--overlap-seconds goes with --chain");
  if (overlap !== undefined && existing.length === 0) {
    throw new UsageError("--overlap-seconds is for a CA that already signs; this one has no authority yet");
  }
  if (values.chain || values.key) {
    if (!values.chain || !values.key) throw new UsageError("--chain and --key go together");
    const certificateChainPem = await readFile(values.chain, "utf8");
    const privateKeyPem = await readFile(values.key, "utf8");
    const trustBundlePem = values.bundle ? await readFile(values.bundle, "utf8") : undefined;
    // Loading checks that the key matches the certificate and that it is a CA of this trust domain.
    await CertificateAuthority.load({
      certificateChainPem,
      privateKeyPem,
      trustBundlePem,
      trustDomain: config.trustDomain,
    });
    const id = await authorityIdOf(certificateChainPem);
    if (existing.some((r) => r.id === id)) {
      throw new UsageError(
        `authority ${id} is already imported; importing it again would move when it signs`,
      );
    }
    if (overlap !== undefined) warnShortOverlap(overlap);
    // With an overlap, the new authority is published at once and signs only after it, so
    // clients have the time to pick up its roots.
    const activeFrom = new Date(Date.now() + (overlap ?? 0) * 1000);
    const record = await keyManager.add({ certificateChainPem, privateKeyPem, trustBundlePem, activeFrom });
    console.log(
      `imported authority ${record.id} for ${config.trustDomain} into ${config.keys.dir}; ` +
        (overlap ? `published now, signs from ${activeFrom.toISOString()}` : "signs now"),
    );
    await reportTrustBundle(config, keyManager);
    return;
  }
  if (existing.length > 0) {
    console.log(
      `${config.keys.dir} already holds ${existing.length} authorit${
        existing.length === 1 ? "y" : "ies"
      } for ${config.trustDomain}; nothing to create`,
    );
    await reportTrustBundle(config, keyManager);
    return;
  }
  const record = await initRoot(config, keyManager, {
    keyAlgorithm,
    ttlSeconds: positiveInt(values["ttl-seconds"], "--ttl-seconds"),
  });
  console.log(`created root ${record.id} for ${config.trustDomain}`);
  console.log(`  root certificate and key: ${config.keys.dir} (the key file is mode 0600; back it up)`);
  await reportTrustBundle(config, keyManager);
  // serve has no --trust-domain: the variable carries it.
  const trustDomain = values["trust-domain"];
  console.log(
    `next: ${
      trustDomain === undefined ? "" : `MESHAUTH_TRUST_DOMAIN=${shellWord(trustDomain)} `
    }meshauth ca serve${sameCaFlags({ config: values.config })}`,
  );
}

/** Writes `<dataDir>/bundle.pem` and says where it is. */
async function reportTrustBundle(config: CaConfig, keyManager: KeyManager): Promise<void> {
  const { loadAuthorities, writeTrustBundle } = await setup();
  const path = await writeTrustBundle(config, await loadAuthorities(config, keyManager));
  console.log(`  trust bundle: ${path} (give it to clients; the CA also serves it at /v1/bundle.pem)`);
}

async function serve(args: string[]): Promise<void> {
  const { values } = parseFlags(args, commonOptions);
  if (values.help) return console.log(HELP.serve);
  const config = await configFrom(values);
  // Checked before the server opens (and creates) the store, so a CA that was never set up
  // is one line naming the command that sets it up.
  const { openKeyManager } = await setup();
  if ((await openKeyManager(config).list()).length === 0) {
    throw new Error(
      `no CA authority is configured (${config.keys.dir} holds none); run \`meshauth ca init${
        sameCaFlags({ config: values.config })
      }\``,
    );
  }
  const { runCaServer } = await import("../ca-server/workers.ts");
  await runCaServer(config, jsonLogger({ level: config.log.level }));
}

async function revoke(args: string[]): Promise<void> {
  const { values } = parseFlags(args, {
    ...commonOptions,
    serial: { type: "string" },
    "spiffe-id": { type: "string" },
    reason: { type: "string" },
  });
  if (values.help) return console.log(HELP.revoke);
  if ((values.serial === undefined) === (values["spiffe-id"] === undefined)) {
    throw new UsageError("give exactly one of --serial and --spiffe-id");
  }
  const config = await configFrom(values);
  let selector: RevocationSelector;
  try {
    selector = revocationSelector({
      serialNumber: values.serial,
      spiffeId: values["spiffe-id"],
      reason: values.reason,
    }, TrustDomain.parse(config.trustDomain));
  } catch (err) {
    if (!(err instanceof Problem)) throw err;
    // The API's messages name its fields; here they are flags.
    const flags: Record<string, string> = {
      serialNumber: "--serial",
      spiffeId: "--spiffe-id",
      reason: "--reason",
    };
    throw new UsageError(err.detail.replace(/^\w+/, (field) => flags[field] ?? field));
  }
  const store = await (await setup()).openStore(config, { isCompacting: false });
  try {
    if (
      "serialNumber" in selector && !(await store.findCertificate(selector.serialNumber)) &&
      !(await store.isRevoked(selector.serialNumber))
    ) {
      throw new UsageError(
        `this CA has no certificate with serial number ${selector.serialNumber} (it never issued it, or it expired long ago)`,
      );
    }
    const outcome = await store.revoke(selector, new Date());
    await store.appendAudit({
      at: new Date(),
      action: "revoked",
      requester: `cli:${process.env.USER ?? process.getuid?.() ?? "unknown"}`,
      details: {
        selector,
        serialNumbers: outcome.revoked.map((r) => r.serialNumber),
        alreadyRevoked: outcome.alreadyRevoked.map((r) => r.serialNumber),
      },
    });
    console.log(JSON.stringify(outcome, null, 2));
    for (const r of outcome.alreadyRevoked) {
      console.error(
        `meshauth: ${r.serialNumber} was already revoked at ${r.revokedAt.toISOString()} (${r.reason}); left as it was`,
      );
    }
    if (outcome.revoked.length === 0 && outcome.alreadyRevoked.length === 0) {
      console.error(
        `meshauth: ${
          "spiffeId" in selector ? selector.spiffeId : ""
        } has no unexpired certificate; nothing revoked`,
      );
    }
  } finally {
    await store.close();
  }
}

async function token(args: string[]): Promise<void> {
  const [sub, ...rest] = args;
  const { values } = parseFlags(rest, {
    ...commonOptions,
    "spiffe-id": { type: "string" },
    node: { type: "string" },
    admin: { type: "boolean" },
    "ttl-seconds": { type: "string" },
    reusable: { type: "boolean" },
  });
  const wantsHelp = values.help || sub === "--help" || sub === "help";
  if (wantsHelp || sub !== "create") {
    console.log(HELP.token);
    if (!wantsHelp) throw new UsageError(`unknown token command ${JSON.stringify(sub ?? "")}`);
    return;
  }
  const kinds = [values["spiffe-id"], values.node, values.admin].filter((v) => v !== undefined);
  if (kinds.length !== 1) throw new UsageError("give exactly one of --spiffe-id, --node and --admin");
  const config = await configFrom(values);
  if (values["spiffe-id"] !== undefined) {
    let id: SpiffeId;
    try {
      id = SpiffeId.parse(values["spiffe-id"]);
    } catch (err) {
      throw new UsageError(`--spiffe-id: ${(err as Error).message}`);
    }
    if (!id.memberOf(config.trustDomain) || id.path === "") {
      throw new UsageError(`--spiffe-id must be a workload ID in the trust domain ${config.trustDomain}`);
    }
  }
  if (values.node && !/^[A-Za-z0-9._-]+$/.test(values.node)) {
    throw new UsageError("--node may hold letters, digits, '.', '_', '-'");
  }
  if (values.node && !Object.hasOwn(config.nodes, values.node)) {
    console.error(
      `meshauth: warning: the configuration lists no workloads for node ${values.node} (nodes:), so its ` +
        "token obtains only the node's own ID",
    );
  }
  const store = await (await setup()).openStore(config, { isCompacting: false });
  const { createJoinToken } = await import("../ca-server/auth/join-token.ts");
  try {
    const { token, record } = await createJoinToken(store, {
      role: values.admin ? "admin" : values.node ? "node" : "workload",
      spiffeId: values["spiffe-id"],
      node: values.node,
      ttlSeconds: positiveInt(values["ttl-seconds"], "--ttl-seconds") ?? 3600,
      isSingleUse: values.admin ? false : !values.reusable,
    });
    await store.appendAudit({
      at: new Date(),
      action: "token-created",
      requester: `cli:${process.env.USER ?? process.getuid?.() ?? "unknown"}`,
      details: { tokenId: record.id, role: record.role, spiffeId: record.spiffeId, node: record.node },
    });
    console.log(token);
  } finally {
    await store.close();
  }
}

async function rotate(args: string[]): Promise<void> {
  const { values } = parseFlags(args, {
    ...commonOptions,
    "overlap-seconds": { type: "string" },
    "key-algorithm": { type: "string" },
  });
  if (values.help) return console.log(HELP.rotate);
  const config = await configFrom(values);
  const { initRoot, loadAuthorities, openKeyManager } = await setup();
  const keyManager = openKeyManager(config);
  await loadAuthorities(config, keyManager);
  const overlap = positiveInt(values["overlap-seconds"], "--overlap-seconds") ?? 86400;
  warnShortOverlap(overlap);
  const activeFrom = new Date(Date.now() + overlap * 1000);
  const record = await initRoot(config, keyManager, {
    keyAlgorithm: values["key-algorithm"] as KeyAlgorithm | undefined,
    activeFrom,
  });
  console.log(
    `added root ${record.id}; published now, signs from ${activeFrom.toISOString()}; running servers load it within 30 s (at once on SIGHUP).`,
  );
  // Clients that read the file get the new root now, not when a server next reloads (or never,
  // with no server running).
  await reportTrustBundle(config, keyManager);
}

async function exportKey(args: string[]): Promise<void> {
  const { values } = parseFlags(args, { ...commonOptions, authority: { type: "string" } });
  if (values.help) return console.log(HELP["export-key"]);
  if (!values.authority) {
    throw new UsageError("--authority <id> is required (the ids are in the key directory)");
  }
  const config = await configFrom(values);
  // A PEM ends in one newline, which console.log gives back.
  console.log((await (await setup()).openKeyManager(config).exportPrivateKeyPem(values.authority)).trimEnd());
}

/** Runs `meshauth ca <args>`; answers the exit code (2 for a usage error). */
export async function runCaCommand(args: string[]): Promise<number> {
  const [command, ...rest] = args;
  try {
    if (command === undefined || isHelp(command)) {
      if (command === undefined) throw new UsageError(`no command after "ca"\n\n${HELP[""]}`);
      console.log(HELP[""]);
      return 0;
    }
    const commands: Record<string, (args: string[]) => Promise<void>> = {
      init,
      serve,
      revoke,
      token,
      rotate,
      "export-key": exportKey,
    };
    const run = commands[command];
    if (!run) {
      throw new UsageError(
        `unknown command "ca ${command}"${didYouMean(command, Object.keys(commands))}\n\n${HELP[""]}`,
      );
    }
    await run(rest);
    return 0;
  } catch (err) {
    return reportCliError(err);
  }
}
