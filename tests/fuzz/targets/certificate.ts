import { type Certificate, parseCertificate, parseCertificates } from "../../../lib/x509/certificate.ts";
import { formatName } from "../../../lib/x509/name.ts";
import { encodePem } from "../../../lib/pem.ts";
import { type FuzzTarget, refusalOnly } from "../harness.ts";
import { assertOpenSslAgrees } from "../openssl-oracle.ts";

/** parseCertificate on DER (and the same bytes as PEM): a model OpenSSL agrees with, or a MalformedInput. */
export const certificate: FuzzTarget = {
  description: "parseCertificate / parseCertificates, with OpenSSL as the oracle for what is accepted",
  sync: true,
  maxLength: 16 * 1024,
  check(data) {
    let cert: Certificate;
    try {
      cert = parseCertificate(data);
    } catch (err) {
      refusalOnly(err);
      try {
        parseCertificates(encodePem("CERTIFICATE", data));
      } catch (again) {
        return refusalOnly(again);
      }
      throw new Error("PEM of the same bytes parsed where the DER did not");
    }
    // What error messages and logs do with a parsed certificate must not throw either.
    formatName(cert.subject);
    formatName(cert.issuer);
    assertOpenSslAgrees(cert);
  },
};
