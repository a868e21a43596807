/**
 * The certificate authority: a root or intermediate that issues X509-SVIDs from CSRs, makes
 * intermediates, publishes its trust bundle and signs CRLs. Istio's Citadel and SPIRE's
 * server do this for Go; here it is WebCrypto, so it runs anywhere.
 *
 * @example
 * ```ts
 * import { CertificateAuthority, createCsr, generateKeyPair, SpiffeId } from "meshauth";
 * const root = await CertificateAuthority.createRoot({ trustDomain: "cluster.local" });
 * const ca = await root.createIntermediate({ ttlSeconds: 30 * 86400 });
 * const id = SpiffeId.fromServiceAccount("cluster.local", "default", "photos");
 * const keys = await generateKeyPair();
 * const svid = await ca.issue(await createCsr({ keys, id }), { id });
 * svid.chainPem; // leaf + intermediate, verifiable against root.bundle()
 * ```
 * @module
 */

import { childrenOf, expectTag, parseDer, readBitString, Tag } from "./asn1/der.ts";
import { OID } from "./asn1/oids.ts";
import { TrustBundle } from "./bundle.ts";
import {
  type CreateCrlOptions,
  type CreateRootOptions,
  crlEntries,
  crlNumber,
  DEFAULT_BACKDATE_SECONDS,
  DEFAULT_LEAF_TTL_SECONDS,
  DEFAULT_MAX_LEAF_TTL_SECONDS,
  DEFAULT_ROOT_TTL_SECONDS,
  type FromSignerOptions,
  type IssuancePolicy,
  type IssuedCertificate,
  type IssueOptions,
  type LoadOptions,
  pathLength,
  positiveSeconds,
  rootNotAfter,
  validDate,
} from "./ca-options.ts";
import { keyIdentifier, randomSerial, signCertificate, signCrl } from "./certificate-template.ts";
import { type CertificateRequest, createCsr, parseCsr, publicKeyAlgorithm } from "./csr.ts";
import { verifySvid } from "./svid/verify.ts";
import {
  LEAF_EXTENDED_KEY_USAGE,
  leafIdProblem,
  leafKeyUsage,
  signingCertificateProblem,
} from "./svid/profile.ts";
import { bytesEqual, toHex } from "./encoding.ts";
import {
  IdentityMismatch,
  InvalidArgument,
  InvalidKey,
  IssuanceRefused,
  optionsOf,
  TtlExceedsMaximum,
  VerificationError,
} from "./errors.ts";
import { exportPrivateKeyPem, generateKeyPair, importPrivateKeyPem, type KeyAlgorithm } from "./keys.ts";
import { encodePem } from "./pem.ts";
import { SpiffeId, TrustDomain } from "./spiffeid.ts";
import { type Certificate, type KeyUsageName, parseCertificates, uriSans } from "./x509/certificate.ts";
import { LeafTemplate } from "./leaf-template.ts";
import { encodeName, encodeSubject, formatName } from "./x509/name.ts";
import { formatIp, parseIp } from "./x509/general-name.ts";
import { type CryptoProvider, webCryptoProvider } from "./x509/crypto-provider.ts";
import { keySigner, type Signer } from "./x509/signature.ts";

/** A certificate authority able to issue X509-SVIDs. */
export class CertificateAuthority {
  /** The trust domain this CA issues for. */
  readonly trustDomain: TrustDomain;
  /** This CA's certificate. */
  readonly certificate: Certificate;
  /** This CA's certificate and its issuers below the trust anchors. */
  readonly certificateChain: readonly Certificate[];
  readonly #signer: Signer;
  readonly #privateKey?: CryptoKey;
  readonly #bundle: TrustBundle;
  readonly #policy: Required<Omit<IssuancePolicy, "now">> & { now: () => Date };
  readonly #subjectKeyIdentifier: Promise<Uint8Array>;
  readonly #chainSuffixPem: string;
  readonly #chainSuffixPems: string[];
  /** Every leaf's subject: O=<trust domain>. */
  #leafSubject?: Uint8Array;
  readonly #crypto: CryptoProvider;
  readonly #leafTemplates = new Map<string, LeafTemplate>();

  private constructor(args: {
    trustDomain: TrustDomain;
    chain: Certificate[];
    bundle: TrustBundle;
    signer: Signer;
    privateKey?: CryptoKey;
    policy: IssuancePolicy;
    crypto?: CryptoProvider;
  }) {
    this.trustDomain = args.trustDomain;
    this.certificate = args.chain[0];
    this.certificateChain = args.chain.filter((c) => !args.bundle.hasAuthority(c));
    this.#signer = args.signer;
    this.#privateKey = args.privateKey;
    this.#crypto = args.crypto ?? webCryptoProvider;
    this.#bundle = args.bundle;
    // Checked here, once: a NaN maximum would make every `ttl > max` comparison false and
    // let any lifetime through.
    const backdateSeconds = args.policy.backdateSeconds ?? DEFAULT_BACKDATE_SECONDS;
    if (!Number.isSafeInteger(backdateSeconds) || backdateSeconds < 0) {
      throw new InvalidArgument(
        "backdateSeconds",
        `must be a non-negative whole number, got ${backdateSeconds}`,
      );
    }
    this.#policy = {
      defaultTtlSeconds: positiveSeconds(
        args.policy.defaultTtlSeconds ?? DEFAULT_LEAF_TTL_SECONDS,
        "defaultTtlSeconds",
      ),
      maxTtlSeconds: positiveSeconds(
        args.policy.maxTtlSeconds ?? DEFAULT_MAX_LEAF_TTL_SECONDS,
        "maxTtlSeconds",
      ),
      backdateSeconds,
      now: args.policy.now ?? (() => new Date()),
    };
    if (this.#policy.defaultTtlSeconds > this.#policy.maxTtlSeconds) {
      throw new IssuanceRefused(
        `default TTL ${this.#policy.defaultTtlSeconds}s is above the maximum ${this.#policy.maxTtlSeconds}s`,
      );
    }
    this.#subjectKeyIdentifier = this.certificate.subjectKeyIdentifier
      ? Promise.resolve(this.certificate.subjectKeyIdentifier)
      : keyIdentifier(this.certificate.publicKey, this.#crypto);
    this.#chainSuffixPems = this.certificateChain.map((c) => encodePem("CERTIFICATE", c.der));
    this.#chainSuffixPem = this.#chainSuffixPems.join("");
  }

  /** Creates a self-signed root CA for a trust domain with a fresh key. */
  static async createRoot(options: CreateRootOptions): Promise<CertificateAuthority> {
    optionsOf(options);
    const trustDomain = TrustDomain.from(options.trustDomain);
    const keys = await generateKeyPair(options.keyAlgorithm ?? "ECDSA-P256");
    const signer = await keySigner(keys.privateKey, keys.publicKey);
    const now = (options.now ?? (() => new Date()))();
    const subject = subjectName(options.subject ?? { O: trustDomain.name, CN: "meshauth root CA" });
    const ski = await keyIdentifier(subjectPublicKeyBits(signer.spki), options.crypto);
    const der = await signCertificate({
      serial: randomSerial(),
      issuer: subject,
      subject,
      notBefore: new Date(now.getTime() - (options.backdateSeconds ?? DEFAULT_BACKDATE_SECONDS) * 1000),
      notAfter: rootNotAfter(
        now,
        positiveSeconds(options.ttlSeconds ?? DEFAULT_ROOT_TTL_SECONDS, "ttlSeconds"),
      ),
      spki: signer.spki,
      ca: { pathLength: pathLength(options.pathLen) },
      keyUsage: ["keyCertSign", "cRLSign"],
      uris: [trustDomain.id().toString()],
      subjectKeyIdentifier: ski,
      authorityKeyIdentifier: ski,
    }, signer);
    const [cert] = parseCertificates(der);
    return new CertificateAuthority({
      trustDomain,
      chain: [cert],
      bundle: new TrustBundle(trustDomain, [cert], { sequence: 1 }),
      signer,
      privateKey: keys.privateKey,
      policy: options,
      crypto: options.crypto,
    });
  }

  /** Loads an operator's CA (root or intermediate, like Istio's `cacerts`) from PEM. */
  static async load(options: LoadOptions): Promise<CertificateAuthority> {
    optionsOf(options);
    const keys = await importPrivateKeyPem(options.privateKeyPem);
    const signer = await keySigner(keys.privateKey, keys.publicKey);
    return await CertificateAuthority.#assemble({ ...options, signer }, keys.privateKey).#checkChain();
  }

  /** A CA whose signing key is held by a {@link Signer} (pluggable key management). */
  static async fromSigner(options: FromSignerOptions): Promise<CertificateAuthority> {
    optionsOf(options);
    return await CertificateAuthority.#assemble(options).#checkChain();
  }

  /**
   * A plugged-in CA proves itself before it is used, with the one chain validator every peer
   * uses: it issues a short-lived probe SVID and verifies it against its bundle. A chain that
   * misses an intermediate, does not reach the bundle, has expired, or breaks a constraint
   * (pathLen, key usage, a non-CA issuer) is refused here rather than in every peer.
   */
  async #checkChain(): Promise<CertificateAuthority> {
    const now = this.#policy.now();
    for (const cert of [this.certificate, ...this.certificateChain]) {
      if (now < cert.notBefore || now > cert.notAfter) {
        throw new IssuanceRefused(
          `certificate "${formatName(cert.subject)}" of the CA chain is not valid at ${now.toISOString()}`,
        );
      }
    }
    const keys = await generateKeyPair("ECDSA-P256");
    const id = SpiffeId.fromSegments(this.trustDomain, "meshauth", "ca-probe");
    const probe = await this.issue(await createCsr({ keys, id }), {
      id,
      ttlSeconds: Math.min(60, this.#policy.maxTtlSeconds),
    });
    try {
      await verifySvid(probe.chainPem, this.#bundle, { at: now });
    } catch (cause) {
      if (!(cause instanceof VerificationError)) throw cause;
      throw new IssuanceRefused(`the CA certificate does not chain to the trust bundle: ${cause.message}`);
    }
    return this;
  }

  static #assemble(options: FromSignerOptions, privateKey?: CryptoKey): CertificateAuthority {
    const chain = parseCertificates(options.certificateChainPem, "CA certificate chain");
    const ca = chain[0];
    if (!bytesEqual(ca.spki, options.signer.spki)) {
      throw new InvalidKey("the private key does not belong to the CA certificate (first in the chain)");
    }
    const problem = signingCertificateProblem(ca);
    if (problem) throw new IssuanceRefused(`the CA certificate cannot sign SVIDs: ${problem}`);
    const fromSan = uriSans(ca).map((u) => {
      try {
        return SpiffeId.parse(u);
      } catch {
        return undefined;
      }
    }).find((id) => id && id.path === "")?.trustDomain;
    const trustDomain = options.trustDomain ? TrustDomain.from(options.trustDomain) : fromSan;
    if (!trustDomain) {
      throw new IssuanceRefused(
        "the CA certificate has no spiffe://<trust-domain> URI SAN; pass trustDomain",
      );
    }
    if (fromSan && !fromSan.equals(trustDomain)) {
      throw new IssuanceRefused(`the CA certificate belongs to ${fromSan.name}, not ${trustDomain.name}`);
    }
    let roots: Certificate[];
    if (options.trustBundlePem) roots = parseCertificates(options.trustBundlePem, "trust bundle");
    else {
      const last = chain[chain.length - 1];
      if (last.subject.key !== last.issuer.key) {
        throw new IssuanceRefused("the chain does not end in a self-signed root; pass trustBundlePem");
      }
      roots = [last];
    }
    return new CertificateAuthority({
      trustDomain,
      chain,
      bundle: new TrustBundle(trustDomain, roots, { sequence: 1 }),
      signer: options.signer,
      privateKey,
      policy: options,
      crypto: options.crypto,
    });
  }

  /** This CA's certificate as PEM. */
  get certificatePem(): string {
    return encodePem("CERTIFICATE", this.certificate.der);
  }

  /** When this CA's certificate expires. */
  get notAfter(): Date {
    return this.certificate.notAfter;
  }

  /** The trust bundle (roots) that verifies what this CA issues. A copy: changing it changes nothing here. */
  bundle(): TrustBundle {
    return this.#bundle.clone();
  }

  /** Creates an intermediate CA below this one with a fresh key. */
  async createIntermediate(
    options: {
      ttlSeconds: number;
      keyAlgorithm?: KeyAlgorithm;
      pathLen?: number;
      subject?: Record<string, string>;
    },
  ): Promise<CertificateAuthority> {
    const pathLen = pathLength(optionsOf(options).pathLen) ?? 0;
    const parentPathLen = this.certificate.basicConstraints?.pathLength;
    if (parentPathLen === 0) {
      throw new IssuanceRefused("this CA's path length constraint (0) forbids intermediates");
    }
    if (parentPathLen !== undefined && pathLen > parentPathLen - 1) {
      throw new IssuanceRefused(`pathLen ${pathLen} exceeds what this CA allows (${parentPathLen - 1})`);
    }
    const keys = await generateKeyPair(options.keyAlgorithm ?? "ECDSA-P256");
    const signer = await keySigner(keys.privateKey, keys.publicKey);
    const { notBefore, notAfter } = this.#validity(positiveSeconds(options.ttlSeconds, "ttlSeconds"));
    const der = await signCertificate({
      serial: randomSerial(),
      issuer: this.certificate.subject.der,
      subject: subjectName(options.subject ?? { O: this.trustDomain.name, CN: "meshauth intermediate CA" }),
      notBefore,
      notAfter,
      spki: signer.spki,
      ca: { pathLength: pathLen },
      keyUsage: ["keyCertSign", "cRLSign"],
      uris: [this.trustDomain.id().toString()],
      subjectKeyIdentifier: await keyIdentifier(subjectPublicKeyBits(signer.spki), this.#crypto),
      authorityKeyIdentifier: await this.#subjectKeyIdentifier,
    }, this.#signer);
    const [cert] = parseCertificates(der);
    return new CertificateAuthority({
      trustDomain: this.trustDomain,
      chain: [cert, ...this.certificateChain],
      bundle: this.#bundle.clone(),
      signer,
      privateKey: keys.privateKey,
      policy: this.#policy,
      crypto: this.#crypto,
    });
  }

  /**
   * Issues an X509-SVID for a CSR. With `id`, the CSR must name exactly that identity (the
   * one the caller authenticated as); the ID must belong to this CA's trust domain.
   */
  async issue(csr: string | Uint8Array, options: IssueOptions = {}): Promise<IssuedCertificate> {
    optionsOf(options);
    const request = await parseCsr(csr, { crypto: this.#crypto });
    if (options.id !== undefined) {
      const authorized = SpiffeId.from(options.id);
      if (!request.id.equals(authorized)) {
        throw new IdentityMismatch(request.id.toString(), authorized.toString());
      }
    }
    if (!request.id.memberOf(this.trustDomain)) {
      throw new IssuanceRefused(`${request.id} is not in this CA's trust domain ${this.trustDomain.name}`);
    }
    const idProblem = leafIdProblem(request.id);
    if (idProblem) throw new IssuanceRefused(idProblem);
    // Deny by default: a DNS SAN is issued only when the caller was authorized for it.
    const allowedDns = (options.dnsNames ?? []).map((n) => n.toLowerCase());
    const extra = request.dnsNames.filter((n) => !allowedDns.includes(n));
    if (extra.length) {
      throw new IssuanceRefused(`the CSR asks for DNS names it may not have: ${extra.join(", ")}`);
    }
    // Compared as bytes, so that `::1` and `0:0:0:0:0:0:0:1` are one address.
    const allowedIps = (options.ipAddresses ?? []).map((text) => formatIp(parseIp(text) ?? new Uint8Array()));
    const extraIps = request.ipAddresses.filter((ip) => !allowedIps.includes(ip));
    if (extraIps.length) {
      throw new IssuanceRefused(`the CSR asks for IP addresses it may not have: ${extraIps.join(", ")}`);
    }
    return await this.#sign(request, options.ttlSeconds);
  }

  /**
   * Issues an X509-SVID for `options.id` to a bare public key (SubjectPublicKeyInfo DER), for
   * a caller that has proven the key's possession some other way: a Kubernetes signer that
   * checked a PodCertificateRequest's `proofOfPossession` or `stubPKCS10Request`. The
   * certificate carries the ID and no other name. Prefer {@link issue}, where the CSR's own
   * signature is the proof.
   */
  async issueToPublicKey(
    spki: Uint8Array,
    options: Omit<IssueOptions, "dnsNames" | "ipAddresses"> & { id: SpiffeId | string },
  ): Promise<IssuedCertificate> {
    optionsOf(options);
    const keyAlgorithm = publicKeyAlgorithm(spki);
    const id = SpiffeId.from(options.id);
    if (!id.memberOf(this.trustDomain)) {
      throw new IssuanceRefused(`${id} is not in this CA's trust domain ${this.trustDomain.name}`);
    }
    const idProblem = leafIdProblem(id);
    if (idProblem) throw new IssuanceRefused(idProblem);
    return await this.#sign({ id, keyAlgorithm, spki, dnsNames: [], ipAddresses: [] }, options.ttlSeconds);
  }

  async #sign(
    request: Pick<CertificateRequest, "id" | "keyAlgorithm" | "spki" | "dnsNames" | "ipAddresses">,
    ttlSeconds: number | undefined,
  ): Promise<IssuedCertificate> {
    const ttl = positiveSeconds(ttlSeconds ?? this.#policy.defaultTtlSeconds, "ttlSeconds");
    if (ttl > this.#policy.maxTtlSeconds) throw new TtlExceedsMaximum(ttl, this.#policy.maxTtlSeconds);
    const { notBefore, notAfter } = this.#validity(ttl);
    const serial = randomSerial();
    const keyUsage = leafKeyUsage(request.keyAlgorithm);
    const template = await this.#leafTemplate(keyUsage);
    const der = await template.sign({
      serial,
      notBefore,
      notAfter,
      spki: request.spki,
      uris: [request.id.toString()],
      dnsNames: request.dnsNames,
      ipAddresses: request.ipAddresses.map((ip) => parseIp(ip)!),
      subjectKeyIdentifier: await keyIdentifier(subjectPublicKeyBits(request.spki), this.#crypto),
    });
    const certificatePem = encodePem("CERTIFICATE", der);
    return {
      id: request.id,
      certificatePem,
      certificateDer: der,
      chainPem: certificatePem + this.#chainSuffixPem,
      chainPems: [certificatePem, ...this.#chainSuffixPems],
      serialNumber: toHex(serial),
      notBefore,
      notAfter,
    };
  }

  /** The template of this CA's leaves with `keyUsage` (one per key usage: EC keys and RSA keys differ). */
  async #leafTemplate(keyUsage: KeyUsageName[]): Promise<LeafTemplate> {
    const key = keyUsage.join(",");
    let template = this.#leafTemplates.get(key);
    if (!template) {
      template = new LeafTemplate({
        issuer: this.certificate.subject.der,
        subject: this.#leafSubject ??= encodeName([[OID.organizationName, this.trustDomain.name]]),
        keyUsage,
        extendedKeyUsage: [...LEAF_EXTENDED_KEY_USAGE],
        authorityKeyIdentifier: await this.#subjectKeyIdentifier,
      }, this.#signer);
      this.#leafTemplates.set(key, template);
    }
    return template;
  }

  /** Signs a CRL (PEM, `X509 CRL`) listing revoked serial numbers of certificates this CA issued. */
  async createCrl(options: CreateCrlOptions): Promise<string> {
    optionsOf(options);
    const thisUpdate = validDate(options.thisUpdate ?? this.#policy.now(), "thisUpdate");
    const nextUpdateSeconds = positiveSeconds(options.nextUpdateSeconds, "nextUpdateSeconds");
    const revoked = crlEntries(options.revoked);
    const der = await signCrl({
      issuer: this.certificate.subject.der,
      thisUpdate,
      nextUpdate: new Date(thisUpdate.getTime() + nextUpdateSeconds * 1000),
      revoked,
      crlNumber: crlNumber(options.crlNumber ?? thisUpdate.getTime()),
      authorityKeyIdentifier: await this.#subjectKeyIdentifier,
    }, this.#signer);
    return encodePem("X509 CRL", der);
  }

  /** Exports the CA as PEM (chain, key, bundle). The key must have been extractable. */
  async exportPem(): Promise<{ certificateChainPem: string; privateKeyPem: string; trustBundlePem: string }> {
    if (!this.#privateKey) {
      throw new InvalidKey("this CA's key is held by an external signer and cannot be exported");
    }
    const chain = [this.certificate, ...this.certificateChain.slice(1)];
    return {
      certificateChainPem: chain.map((c) => encodePem("CERTIFICATE", c.der)).join(""),
      privateKeyPem: await exportPrivateKeyPem(this.#privateKey),
      trustBundlePem: this.#bundle.toPem(),
    };
  }

  #validity(ttlSeconds: number): { notBefore: Date; notAfter: Date } {
    // Certificates carry whole seconds: working in them keeps the returned notBefore and
    // notAfter equal to what the certificate says.
    const now = Math.floor(this.#policy.now().getTime() / 1000) * 1000;
    if (now >= this.certificate.notAfter.getTime()) {
      throw new IssuanceRefused(`the CA certificate expired at ${this.certificate.notAfter.toISOString()}`);
    }
    const notBefore = Math.max(
      now - this.#policy.backdateSeconds * 1000,
      this.certificate.notBefore.getTime(),
    );
    // X509-SVID: never valid past the issuing CA; the actual notAfter is returned to the caller.
    const notAfter = Math.min(now + ttlSeconds * 1000, this.certificate.notAfter.getTime());
    return { notBefore: new Date(notBefore), notAfter: new Date(notAfter) };
  }
}

function subjectName(attributes: Record<string, string>): Uint8Array {
  // RFC 5280 4.1.2.4: the issuer of what this CA signs MUST be a non-empty name.
  if (Object.keys(attributes).length === 0) {
    throw new InvalidArgument("subject", "a CA's subject cannot be empty");
  }
  return encodeSubject(attributes);
}

function subjectPublicKeyBits(spki: Uint8Array): Uint8Array {
  const [, key] = childrenOf(expectTag(parseDer(spki, "public key"), Tag.SEQUENCE, "public key"));
  return readBitString(key).bytes;
}
