import { VerificationError } from "../../../lib/errors.ts";
import { verifyChain } from "../../../lib/verify/chain.ts";
import { verifySvid } from "../../../lib/svid/verify.ts";
import { parseCertificate } from "../../../lib/x509/certificate.ts";
import { chainFixture, signLeaf, VALIDATION_TIME } from "../chain-fixture.ts";
import { type FuzzTarget, refusalOnly } from "../harness.ts";
import { assertOpenSslAgrees } from "../openssl-oracle.ts";

const isVerificationError = (err: unknown) => err instanceof VerificationError;

/**
 * verifyChain and verifySvid on a mutated leaf: the input is a leaf's to-be-signed part,
 * signed here by the fixture's name-constrained intermediate. A refusal is a
 * VerificationError; an SVID accepted must be one OpenSSL parses.
 */
export const chain: FuzzTarget = {
  description: "verifyChain and verifySvid on re-signed mutated leaves under a name-constrained CA",
  sync: false,
  maxLength: 4 * 1024,
  async check(data) {
    const { root, intermediate, bundle } = await chainFixture();
    const leaf = await signLeaf(data);
    try {
      await verifyChain({
        leaf,
        intermediates: [intermediate.der],
        roots: [root.der],
        at: VALIDATION_TIME,
        purpose: "clientAuth",
      });
    } catch (err) {
      refusalOnly(err, isVerificationError);
    }
    try {
      await verifySvid([leaf, intermediate.der], bundle, { at: VALIDATION_TIME });
    } catch (err) {
      return refusalOnly(err, isVerificationError);
    }
    assertOpenSslAgrees(parseCertificate(leaf));
  },
};
