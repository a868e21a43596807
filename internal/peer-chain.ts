/**
 * The certificate chain a TLS peer sent, as DER, read from a node:tls socket for the CA's mTLS
 * authenticator and the agent's proxy alike.
 * @module
 */

import type { X509Certificate } from "node:crypto";
import type { DetailedPeerCertificate, TLSSocket } from "node:tls";
import { bytesEqual } from "../lib/encoding.ts";

/** How much of a peer's chain is read. */
export interface PeerChainLimits {
  /** Most certificates read, leaf included; default 10. */
  maxCertificates?: number;
  /**
   * Reading stops once the DER read passes this many bytes, the certificate that passed it
   * included, so a caller holding a size limit sees the chain is over it without the rest
   * being read. No limit by default.
   */
  maxBytes?: number;
}

const DEFAULT_MAX_CERTIFICATES = 10;

/**
 * The chain a TLS peer sent, leaf first, as DER (each certificate once); empty when it sent
 * none. `getPeerX509Certificate` is lazy: walking `issuerCertificate` and reading `raw` hands
 * over the DER OpenSSL holds (a few microseconds) without decoding a field, so a peer's size is
 * known before any of its chain is parsed. `getPeerCertificate(true)` decodes every field of
 * every certificate into objects first; it is the fallback where the other API is missing or,
 * on Deno, stops at a certificate the peer sent twice (OpenSSL's s_client sends the leaf again
 * when -cert_chain holds it).
 */
export function peerChain(socket: TLSSocket, limits: PeerChainLimits = {}): Uint8Array[] {
  const maxCertificates = limits.maxCertificates ?? DEFAULT_MAX_CERTIFICATES;
  const maxBytes = limits.maxBytes ?? Infinity;
  const chain: Uint8Array[] = [];
  let bytes = 0;
  const isFull = () => chain.length >= maxCertificates || bytes > maxBytes;
  const add = (raw: Uint8Array | undefined) => {
    if (!raw || isFull() || chain.some((c) => bytesEqual(c, raw))) return;
    chain.push(raw);
    bytes += raw.length;
  };
  if (typeof socket.getPeerX509Certificate === "function") {
    // issuerCertificate walks what the peer sent, in order.
    let cert: X509Certificate | undefined = socket.getPeerX509Certificate();
    let sawRepeat = false;
    for (let i = 0; cert && i < maxCertificates && !isFull(); i++) {
      const before = chain.length;
      add(cert.raw);
      sawRepeat ||= chain.length === before;
      cert = cert.issuerCertificate;
    }
    if (!sawRepeat || isFull()) return chain;
  }
  let legacy: DetailedPeerCertificate | undefined = socket.getPeerCertificate(true);
  for (let i = 0; legacy?.raw && i < maxCertificates && !isFull(); i++) {
    add(legacy.raw);
    legacy = legacy.issuerCertificate === legacy ? undefined : legacy.issuerCertificate;
  }
  return chain;
}
