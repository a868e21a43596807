import { parseCrl } from "../../../lib/x509/crl.ts";
import { formatName } from "../../../lib/x509/name.ts";
import { type FuzzTarget, refusalOnly } from "../harness.ts";

/** parseCrl on DER: a model or a MalformedInput. */
export const crl: FuzzTarget = {
  description: "parseCrl on DER",
  sync: true,
  maxLength: 16 * 1024,
  check(data) {
    try {
      const parsed = parseCrl(data);
      formatName(parsed.issuer);
    } catch (err) {
      refusalOnly(err);
    }
  },
};
