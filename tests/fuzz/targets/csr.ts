import { parseCsr } from "../../../lib/csr.ts";
import { type FuzzTarget, refusalOnly } from "../harness.ts";

/** parseCsr on DER (signature check included): a request or an InvalidCsr. */
export const csr: FuzzTarget = {
  description: "parseCsr on DER, signature verification included",
  sync: false,
  maxLength: 8 * 1024,
  async check(data) {
    try {
      await parseCsr(data);
    } catch (err) {
      refusalOnly(err);
    }
  },
};
