// The figures docs/conformance.md and docs/x509-layer.md give for `npm run differential` are for
// the pinned inputs (tests/differential/pinned-inputs.txt); they reproduce only while every one
// of them is still in its source. A fuzz corpus merged or x509-limbo updated without re-pinning
// fails here, with what to do.
import { test } from "node:test";
import assert from "node:assert/strict";
import { currentInputs, pinnedInputs } from "../../scripts/differential-inputs.ts";

test("every input the differential figures were made with is still in its source", async () => {
  const { inputs, missing } = pinnedInputs(await currentInputs());
  assert.deepEqual(
    missing.slice(0, 5),
    [],
    `${missing.length} pinned input(s) are gone: run \`npm run differential -- --pin\` and regenerate the ` +
      "figures in docs/conformance.md and docs/x509-layer.md from its output",
  );
  assert.ok(inputs.some((i) => i.kind === "certificate") && inputs.some((i) => i.kind === "crl"));
  assert.ok(inputs.some((i) => i.kind === "csr"));
});
