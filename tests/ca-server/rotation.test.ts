// Root rotation without downtime: a new root is published in the bundle as soon as it is
// added, signs from its activation, and the old root leaves the bundle only once every
// certificate it issued has expired.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { CertificateAuthority, createCsr, generateKeyPair, TrustBundle, verifySvid } from "../../mod.ts";
import { Authorities, MemoryKeyManager } from "../../ca-server/mod.ts";

const TD = "rotate.example";
const HOUR = 3600_000;
const MAX_TTL_SECONDS = 2 * 3600;

async function addRoot(keys: MemoryKeyManager, activeFrom: Date): Promise<string> {
  const root = await CertificateAuthority.createRoot({ trustDomain: TD, ttlSeconds: 30 * 24 * 3600 });
  return (await keys.add({ ...(await root.exportPem()), activeFrom })).id;
}

describe("Authorities rotation", () => {
  it("publishes both roots during the overlap, switches signer at activation, then drops the old root", async () => {
    let now = new Date();
    const keys = new MemoryKeyManager();
    const oldId = await addRoot(keys, new Date(now.getTime() - HOUR));
    const newId = await addRoot(keys, new Date(now.getTime() + 24 * HOUR));
    const authorities = await Authorities.load(keys, {
      trustDomain: TD,
      policy: { maxTtlSeconds: MAX_TTL_SECONDS, defaultTtlSeconds: 3600 },
      now: () => now,
    });

    // Overlap: the old root signs, both are published, and the sequence has moved on.
    assert.equal(authorities.active().record.id, oldId);
    assert.equal(authorities.bundle().x509Authorities().length, 2);
    const sequenceDuringOverlap = authorities.bundle().sequence;

    // Activation: the new root signs; certificates from the old one still verify.
    const id = `spiffe://${TD}/workload`;
    const keysOfWorkload = await generateKeyPair();
    const oldSvid = await authorities.active().ca.issue(await createCsr({ keys: keysOfWorkload, id }), {
      id,
    });
    now = new Date(now.getTime() + 24 * HOUR + 1000);
    assert.equal(authorities.active().record.id, newId);
    const newSvid = await authorities.active().ca.issue(await createCsr({ keys: keysOfWorkload, id }), {
      id,
    });
    const bundle = TrustBundle.fromPem(TD, authorities.bundlePem());
    assert.equal(bundle.x509Authorities().length, 2);
    await verifySvid(newSvid.chainPem, bundle, { at: now });

    // Once the longest leaf the old root could have issued has expired, it leaves the bundle.
    now = new Date(now.getTime() + MAX_TTL_SECONDS * 1000 + 1000);
    assert.equal(authorities.bundle().x509Authorities().length, 1);
    assert.ok(authorities.bundle().sequence > sequenceDuringOverlap);
    await assert.rejects(
      verifySvid(oldSvid.chainPem, authorities.bundle(), { at: new Date(oldSvid.notAfter.getTime() - 1000) }),
    );
  });

  it("refuses to sign when no authority is active yet", async () => {
    const keys = new MemoryKeyManager();
    await addRoot(keys, new Date(Date.now() + HOUR));
    const authorities = await Authorities.load(keys, { trustDomain: TD });
    assert.throws(() => authorities.active(), { code: "ERR_NO_ACTIVE_AUTHORITY" });
  });
});
