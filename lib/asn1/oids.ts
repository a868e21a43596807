/**
 * Object identifiers the core reads or writes, by name.
 * @module
 */

export const OID = {
  // Public key algorithms
  rsaEncryption: "1.2.840.113549.1.1.1",
  ecPublicKey: "1.2.840.10045.2.1",
  ed25519: "1.3.101.112",
  rsassaPss: "1.2.840.113549.1.1.10",
  // Curves
  p256: "1.2.840.10045.3.1.7",
  p384: "1.3.132.0.34",
  p521: "1.3.132.0.35",
  // Signature algorithms
  sha256WithRSA: "1.2.840.113549.1.1.11",
  sha384WithRSA: "1.2.840.113549.1.1.12",
  sha512WithRSA: "1.2.840.113549.1.1.13",
  sha1WithRSA: "1.2.840.113549.1.1.5",
  ecdsaWithSha256: "1.2.840.10045.4.3.2",
  ecdsaWithSha384: "1.2.840.10045.4.3.3",
  ecdsaWithSha512: "1.2.840.10045.4.3.4",
  ecdsaWithSha1: "1.2.840.10045.4.1",
  // Hashes and PSS parameters
  sha1: "1.3.14.3.2.26",
  sha256: "2.16.840.1.101.3.4.2.1",
  sha384: "2.16.840.1.101.3.4.2.2",
  sha512: "2.16.840.1.101.3.4.2.3",
  mgf1: "1.2.840.113549.1.1.8",
  // PKCS#9 / PKCS#10
  extensionRequest: "1.2.840.113549.1.9.14",
  // Name attributes
  commonName: "2.5.4.3",
  countryName: "2.5.4.6",
  organizationName: "2.5.4.10",
  organizationalUnitName: "2.5.4.11",
  serialNumber: "2.5.4.5",
  emailAddress: "1.2.840.113549.1.9.1",
  // Certificate extensions (RFC 5280 4.2)
  subjectKeyIdentifier: "2.5.29.14",
  keyUsage: "2.5.29.15",
  subjectAltName: "2.5.29.17",
  issuerAltName: "2.5.29.18",
  basicConstraints: "2.5.29.19",
  nameConstraints: "2.5.29.30",
  crlDistributionPoints: "2.5.29.31",
  certificatePolicies: "2.5.29.32",
  policyMappings: "2.5.29.33",
  authorityKeyIdentifier: "2.5.29.35",
  policyConstraints: "2.5.29.36",
  extKeyUsage: "2.5.29.37",
  inhibitAnyPolicy: "2.5.29.54",
  authorityInfoAccess: "1.3.6.1.5.5.7.1.1",
  // CRL extensions
  crlNumber: "2.5.29.20",
  deltaCrlIndicator: "2.5.29.27",
  issuingDistributionPoint: "2.5.29.28",
  reasonCode: "2.5.29.21",
  invalidityDate: "2.5.29.24",
  certificateIssuer: "2.5.29.29",
  freshestCrl: "2.5.29.46",
  // Extended key usages
  anyExtendedKeyUsage: "2.5.29.37.0",
  serverAuth: "1.3.6.1.5.5.7.3.1",
  clientAuth: "1.3.6.1.5.5.7.3.2",
  codeSigning: "1.3.6.1.5.5.7.3.3",
  emailProtection: "1.3.6.1.5.5.7.3.4",
  timeStamping: "1.3.6.1.5.5.7.3.8",
  ocspSigning: "1.3.6.1.5.5.7.3.9",
  // Precertificate poison (RFC 6962), seen in limbo cases
  ctPoison: "1.3.6.1.4.1.11129.2.4.3",
} as const;

/** Short names of EKUs for users who pass `"serverAuth"` rather than an OID. */
export const EKU_BY_NAME: Readonly<Record<string, string>> = {
  serverAuth: OID.serverAuth,
  clientAuth: OID.clientAuth,
  codeSigning: OID.codeSigning,
  emailProtection: OID.emailProtection,
  timeStamping: OID.timeStamping,
  ocspSigning: OID.ocspSigning,
  anyExtendedKeyUsage: OID.anyExtendedKeyUsage,
};

/** The named EC curves meshauth knows, by OID: WebCrypto's name and the coordinate size in bytes. */
export const EC_CURVES: Readonly<Record<string, { name: "P-256" | "P-384" | "P-521"; size: number }>> = {
  [OID.p256]: { name: "P-256", size: 32 },
  [OID.p384]: { name: "P-384", size: 48 },
  [OID.p521]: { name: "P-521", size: 66 },
};
