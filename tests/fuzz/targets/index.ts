/**
 * Every fuzz target by name: `npm run fuzz -- <name> <seconds>` runs one under Jazzer.js, and
 * tests/fuzz/regression.test.ts replays each one's corpus (tests/fuzz/corpus/<name>/).
 * @module
 */
import type { FuzzTarget } from "../harness.ts";
import { bundle } from "./bundle.ts";
import { certificate } from "./certificate.ts";
import { chain } from "./chain.ts";
import { config } from "./config.ts";
import { crl } from "./crl.ts";
import { csr } from "./csr.ts";
import { der } from "./der.ts";
import { pem } from "./pem.ts";
import { requestBody } from "./request-body.ts";

export const TARGETS: Readonly<Record<string, FuzzTarget>> = {
  pem,
  der,
  certificate,
  csr,
  crl,
  chain,
  bundle,
  "request-body": requestBody,
  config,
};
