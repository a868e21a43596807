/**
 * Which files a workload gets, and their names: Istio's layout (`cert-chain.pem`, `key.pem`,
 * `root-cert.pem`, what istio-agent writes for a proxy-less workload) by default, or the SPIFFE
 * helper's (`svid.pem`, `svid_key.pem`, `svid_bundle.pem`). Optionally one more file holds the
 * certificate chain and the key together, for programs that read the two at different moments
 * and so could pair a new certificate with an old key. Bundles of other trust domains, when
 * federation arrives, become files of their own; they are never merged into the local one.
 *
 * @module
 */

import type { PayloadFile } from "./atomic-writer.ts";

/** The file layouts a workload may choose. */
export const LAYOUT_NAMES = ["istio", "spiffe-helper"] as const;

/** One of {@link LAYOUT_NAMES}. */
export type LayoutName = typeof LAYOUT_NAMES[number];

/** File names of one layout. */
export interface FileLayout {
  /** File name of the certificate chain, leaf first (mode 0644). */
  certificateChain: string;
  /** File name of the private key, PKCS#8 PEM (mode {@link DeliveryOptions.keyFileMode}). */
  privateKey: string;
  /** File name of the trust domain's roots (mode 0644). */
  trustBundle: string;
}

/** The names each layout uses. */
export const LAYOUTS: Readonly<Record<LayoutName, Readonly<FileLayout>>> = {
  istio: { certificateChain: "cert-chain.pem", privateKey: "key.pem", trustBundle: "root-cert.pem" },
  "spiffe-helper": {
    certificateChain: "svid.pem",
    privateKey: "svid_key.pem",
    trustBundle: "svid_bundle.pem",
  },
};

/** How a workload wants its files. */
export interface DeliveryOptions {
  /** Which file names to use: `istio` (the default in configuration) or `spiffe-helper`. */
  layout: LayoutName;
  /** Mode of the key file and of the combined file. */
  keyFileMode: number;
  /** Name of a file holding the chain and the key together, if wanted. */
  combinedFile?: string;
}

/** What is delivered: a certificate chain, its key, and the trust bundle to verify peers with. */
export interface Credentials {
  /** The leaf first, then any intermediates, as PEM. */
  certificateChainPem: string;
  /** The workload's private key, PKCS#8 PEM. */
  privateKeyPem: string;
  /** The roots to verify peers with, as PEM. */
  trustBundlePem: string;
}

/** The files of one generation, in the names and modes `options` ask for. */
export function credentialFiles(credentials: Credentials, options: DeliveryOptions): PayloadFile[] {
  const names = LAYOUTS[options.layout];
  const files: PayloadFile[] = [
    { name: names.certificateChain, content: credentials.certificateChainPem, mode: 0o644 },
    { name: names.privateKey, content: credentials.privateKeyPem, mode: options.keyFileMode },
    { name: names.trustBundle, content: credentials.trustBundlePem, mode: 0o644 },
  ];
  if (options.combinedFile) {
    files.push({
      name: options.combinedFile,
      content: withNewline(credentials.certificateChainPem) + credentials.privateKeyPem,
      mode: options.keyFileMode,
    });
  }
  return files;
}

function withNewline(text: string): string {
  return text.endsWith("\n") ? text : `${text}\n`;
}
