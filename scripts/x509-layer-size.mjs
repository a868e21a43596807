#!/usr/bin/env node
// Measures what meshauth's own X.509 layer costs in the edge bundle beside the packages the
// design first named (docs/x509-layer.md): each entry is bundled the way scripts/build.mjs
// bundles the edge build (esbuild, ESM, neutral platform, worker conditions, minified) and
// gzipped at level 9. Run: node scripts/x509-layer-size.mjs
import { gzipSync } from "node:zlib";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const root = fileURLToPath(new URL("..", import.meta.url));
const entries = {
  "meshauth edge bundle (mod.ts, everything)": `export * from "./mod.ts";`,
  "meshauth X.509 layer (DER reader and writer, PEM, certificates, CRLs, CSRs)":
    `export { parseCertificates } from "./lib/x509/certificate.ts"; export { parseCrl } from "./lib/x509/crl.ts";
     export { parseCsr, createCsr } from "./lib/csr.ts"; export { decodePem, encodePem } from "./lib/pem.ts";`,
  "meshauth path validation (verifyChain, verifySvid, with the X.509 layer)":
    `export { verifyChain } from "./lib/verify/chain.ts"; export { verifySvid } from "./lib/svid/verify.ts";`,
  "@peculiar/x509 (certificates, CRLs, CSRs, chain building; no RFC 5280 validation)":
    `import "reflect-metadata"; export * from "@peculiar/x509";`,
  "pkijs (certificates, CRLs, CSRs, RFC 5280 chain validation)": `export * from "pkijs";`,
  "meshauth edge bundle + @peculiar/x509":
    `import "reflect-metadata"; export * from "./mod.ts"; export * as x509 from "@peculiar/x509";`,
};

const kb = (n) => `${(n / 1024).toFixed(1)} KB`;
console.log("entry".padEnd(84) + "minified".padStart(10) + "gzipped".padStart(10));
for (const [name, contents] of Object.entries(entries)) {
  const result = await esbuild.build({
    stdin: { contents, resolveDir: root, loader: "ts", sourcefile: "entry.ts" },
    bundle: true,
    format: "esm",
    platform: "neutral",
    target: "es2022",
    conditions: ["workerd", "worker", "browser"],
    mainFields: ["module", "main"],
    minify: true,
    treeShaking: true,
    write: false,
    logLevel: "error",
    absWorkingDir: root,
  });
  const code = result.outputFiles[0].contents;
  console.log(
    name.padEnd(84) + kb(code.byteLength).padStart(10) +
      kb(gzipSync(code, { level: 9 }).byteLength).padStart(10),
  );
}
