import { TrustBundle } from "../../../lib/bundle.ts";
import { type FuzzTarget, refusalOnly, text } from "../harness.ts";

/** TrustBundle.fromJwks on any text: a bundle or an InvalidBundle. */
export const bundle: FuzzTarget = {
  description: "TrustBundle.fromJwks on arbitrary JSON text, and toJwks of what it accepts",
  sync: true,
  maxLength: 32 * 1024,
  check(data) {
    try {
      const parsed = TrustBundle.fromJwks("example.org", text(data));
      // What it accepted it must write back and read again.
      TrustBundle.fromJwks("example.org", JSON.stringify(parsed.toJwks()));
    } catch (err) {
      refusalOnly(err);
    }
  },
};
