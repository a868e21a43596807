import { decodePem } from "../../../lib/pem.ts";
import { type FuzzTarget, refusalOnly, text } from "../harness.ts";

/** decodePem on any text: blocks or a MalformedInput, never anything else. */
export const pem: FuzzTarget = {
  description: "decodePem on arbitrary text",
  sync: true,
  maxLength: 64 * 1024,
  check(data) {
    try {
      decodePem(text(data));
    } catch (err) {
      refusalOnly(err);
    }
  },
};
