// docs/kubernetes.md's "Deploying", run as written in a fresh directory beside the checkout's
// examples/ and Dockerfile: `npx meshauth` runs the bin's source, and docker, kind and kubectl
// are stand-ins on PATH that check what they are given (a Dockerfile to build, files and
// directories that exist, Secrets' files) and record the call. The keys `meshauth ca init`
// made must be what the CA in the cluster reads: the example CA configuration, with its keys
// directory holding the Secret's files, finds its authority for the cluster's trust domain.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import {
  chmod,
  copyFile,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rm,
  stat,
  symlink,
  writeFile,
} from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse as parseYaml, parseAllDocuments, stringify } from "yaml";
import { runShell, walkthrough } from "../support/walkthrough.ts";

const ROOT = new URL("../..", import.meta.url).pathname;
let work: string | undefined;
after(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

// Each stand-in appends its arguments, one call a line, to calls.log, and fails on what the real
// command would refuse.
const STANDINS: Record<string, string> = {
  docker:
    `[ "$1 $2 $4" = "build -t ." ] && [ -f Dockerfile ] || { echo "docker: unexpected $*" >&2; exit 2; }`,
  kind: `[ "$1 $2" = "load docker-image" ] || { echo "kind: unexpected $*" >&2; exit 2; }`,
  kubectl: `for a in "$@"; do
  case "$a" in
    --from-file=*) d="\${a#--from-file=}"; [ -d "$d" ] && [ -n "$(ls "$d")" ] || { echo "kubectl: no files in $d" >&2; exit 1; } ;;
  esac
done
if [ "$1" = apply ]; then [ "$2" = -f ] && [ -e "$3" ] || { echo "kubectl: no $3" >&2; exit 1; }; fi`,
};

test("docs/kubernetes.md: Deploying runs as written, and its keys are the ones the CA reads", async () => {
  const markdown = await readFile(join(ROOT, "docs/kubernetes.md"), "utf8");
  const deploying = markdown.slice(markdown.indexOf("## Deploying"));
  const blocks = walkthrough(deploying);
  assert.equal(blocks.length, 5, "the five steps");
  work = await mkdtemp(join(tmpdir(), "meshauth-k8s-deploying-"));
  await symlink(join(ROOT, "examples"), join(work, "examples"));
  await symlink(join(ROOT, "Dockerfile"), join(work, "Dockerfile"));
  const bin = join(work, ".bin");
  await mkdir(bin);
  const tsx = createRequire(join(ROOT, "package.json")).resolve("tsx");
  const log = join(work, "calls.log");
  for (const [name, check] of Object.entries(STANDINS)) {
    await writeFile(join(bin, name), `#!/bin/sh\n${check}\necho "${name} $*" >> "${log}"\n`);
    await chmod(join(bin, name), 0o755);
  }
  await writeFile(
    join(bin, "npx"),
    `#!/bin/sh\n[ "$1" = meshauth ] || exit 127\nshift\nexec node --import "${tsx}" "${ROOT}cli/main.ts" "$@"\n`,
  );
  await chmod(join(bin, "npx"), 0o755);
  const env: NodeJS.ProcessEnv = { ...process.env, PATH: `${bin}:${process.env.PATH}` };
  for (const block of blocks) {
    const r = await runShell(block.script, work, env);
    assert.equal(r.code, 0, `${block.script}\n${r.output}`);
  }

  const calls = (await readFile(log, "utf8")).trim().split("\n");
  assert.deepEqual(calls, [
    "docker build -t ghcr.io/meshauth/meshauth:0.1.0 .",
    "kind load docker-image ghcr.io/meshauth/meshauth:0.1.0",
    "kubectl apply -f examples/kubernetes/00-namespaces.yaml",
    "kubectl -n meshauth-system create secret generic meshauth-ca-keys --from-file=ca-keys/",
    "kubectl -n meshauth-system create secret generic meshauth-ca-postgres --from-literal=url=postgres://meshauth:secret@db.example:5432/meshauth",
    "kubectl apply -f examples/kubernetes/",
    "kubectl -n meshauth-system rollout status deployment/meshauth-ca",
    "kubectl -n meshauth-system rollout status daemonset/meshauth-agent",
    "kubectl apply -f examples/kubernetes/demo/",
  ]);
  // The image the build tags is the one every meshauth container of the manifests runs.
  const images = new Set<string>();
  for (const file of ["ca.yaml", "agent.yaml", "demo/photo-app.yaml"]) {
    const text = await readFile(join(ROOT, "examples/kubernetes", file), "utf8");
    for (const [, image] of text.matchAll(/image: (ghcr\.io\/meshauth\/\S+)/g)) images.add(image);
  }
  assert.deepEqual([...images], ["ghcr.io/meshauth/meshauth:0.1.0"]);

  // What the Secret holds (ca-keys/, flat: --from-file takes a directory's files), copied 0600
  // into the CA's keys directory as its initContainer does, under the example's configuration.
  const secretFiles = await readdir(join(work, "ca-keys"));
  assert.ok(secretFiles.some((f) => f.endsWith(".key.pem")), secretFiles.join(" "));
  for (const f of secretFiles) assert.ok((await stat(join(work, "ca-keys", f))).isFile(), f);
  const keys = join(work, "in-the-pod/keys");
  await mkdir(keys, { recursive: true });
  for (const f of secretFiles) {
    await copyFile(join(work, "ca-keys", f), join(keys, f));
    await chmod(join(keys, f), 0o600);
  }
  const caYaml = await readFile(join(ROOT, "examples/kubernetes/ca.yaml"), "utf8");
  const configMap = parseAllDocuments(caYaml).map((d) => d.toJS()).find((o) =>
    o?.metadata?.name === "meshauth-ca-config"
  );
  const config = parseYaml(configMap.data["ca.yaml"]);
  assert.equal(config.keys.dir, "/var/lib/meshauth/keys");
  config.keys.dir = keys;
  config.dataDir = join(work, "in-the-pod/data");
  delete config.store; // the database is the cluster's; the keys are what is checked here
  delete config.kubernetes;
  await writeFile(join(work, "in-the-pod/ca.yaml"), stringify(config));
  const r = await runShell("npx meshauth ca init --config in-the-pod/ca.yaml", work, env);
  assert.equal(r.code, 0, r.output);
  assert.match(r.output, /already holds 1 authority for cluster\.local; nothing to create/);
});
