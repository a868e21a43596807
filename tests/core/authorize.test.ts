import { describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  authorizeAny,
  authorizeId,
  authorizeMemberOf,
  authorizeOneOf,
  SecureNaming,
  SecureNamingError,
  SpiffeId,
  TrustDomain,
  UnauthorizedPeer,
} from "../../mod.ts";

const PHOTOS = SpiffeId.parse("spiffe://cluster.local/ns/default/sa/photos");
const BILLING = SpiffeId.parse("spiffe://cluster.local/ns/prod/sa/billing");
const PARTNER = SpiffeId.parse("spiffe://partner.example/ns/default/sa/photos");
const unauthorized = { name: "UnauthorizedPeer", code: "ERR_PEER_UNAUTHORIZED" };
const SERVICE = "photos.default.svc.cluster.local";

describe("authorizers", () => {
  test("authorizeAny allows every peer", () => {
    const authorize = authorizeAny();
    for (const id of [PHOTOS, BILLING, PARTNER]) assert.doesNotThrow(() => authorize(id));
  });

  test("authorizeId allows exactly the one identity", () => {
    assert.doesNotThrow(() => authorizeId(PHOTOS)(SpiffeId.parse(PHOTOS.toString())));
    assert.doesNotThrow(() => authorizeId(PHOTOS.toString())(PHOTOS));
  });

  test("authorizeId denies any other identity with ERR_PEER_UNAUTHORIZED", () => {
    assert.throws(() => authorizeId(PHOTOS)(BILLING), { ...unauthorized, peerId: BILLING.toString() });
    assert.throws(() => authorizeId(PHOTOS)(PARTNER), unauthorized);
  });

  test("authorizeId refuses an invalid ID when it is made", () => {
    assert.throws(() => authorizeId("spiffe://cluster.local/"), { code: "ERR_SPIFFE_ID_INVALID" });
  });

  test("authorizeOneOf allows each listed identity", () => {
    const authorize = authorizeOneOf(PHOTOS, BILLING.toString());
    assert.doesNotThrow(() => authorize(PHOTOS));
    assert.doesNotThrow(() => authorize(BILLING));
  });

  test("authorizeOneOf denies an identity not listed", () => {
    assert.throws(() => authorizeOneOf(PHOTOS, BILLING)(PARTNER), unauthorized);
  });

  test("authorizeOneOf with no identities denies everyone", () => {
    assert.throws(() => authorizeOneOf()(PHOTOS), unauthorized);
  });

  test("authorizeMemberOf allows any identity of the trust domain", () => {
    const authorize = authorizeMemberOf("cluster.local");
    assert.doesNotThrow(() => authorize(PHOTOS));
    assert.doesNotThrow(() => authorize(BILLING));
    assert.doesNotThrow(() => authorizeMemberOf(TrustDomain.parse("partner.example"))(PARTNER));
  });

  test("authorizeMemberOf denies an identity of another trust domain", () => {
    assert.throws(() => authorizeMemberOf("cluster.local")(PARTNER), {
      ...unauthorized,
      message: /cluster\.local/,
    });
  });

  test("authorizeMemberOf does not treat a suffix as membership", () => {
    assert.throws(() => authorizeMemberOf("local")(PHOTOS), unauthorized);
  });
});

describe("SecureNaming", () => {
  const naming = () =>
    new SecureNaming({
      [SERVICE]: [PHOTOS.toString()],
      "billing.prod.svc.cluster.local": [BILLING, PHOTOS],
    });

  test("check allows an identity listed for the service", () => {
    assert.doesNotThrow(() => naming().check(SERVICE, PHOTOS));
    assert.doesNotThrow(() => naming().check("billing.prod.svc.cluster.local", PHOTOS.toString()));
  });

  test("check denies an identity not listed for the service with ERR_SECURE_NAMING", () => {
    const err = (() => {
      try {
        naming().check(SERVICE, BILLING);
      } catch (e) {
        return e;
      }
    })();
    assert.ok(err instanceof SecureNamingError);
    assert.ok(err instanceof UnauthorizedPeer);
    assert.equal(err.code, "ERR_SECURE_NAMING");
    assert.equal(err.service, SERVICE);
    assert.equal(err.peerId, BILLING.toString());
    assert.match(err.message, /photos\.default\.svc\.cluster\.local/);
  });

  test("check denies every identity for a service missing from the table", () => {
    assert.throws(() => naming().check("unknown.svc", PHOTOS), { code: "ERR_SECURE_NAMING" });
  });

  test("allows answers without throwing", () => {
    assert.equal(naming().allows(SERVICE, PHOTOS), true);
    assert.equal(naming().allows(SERVICE, BILLING), false);
    assert.equal(naming().allows("unknown.svc", PHOTOS), false);
  });

  test("set replaces the identities of a service", () => {
    const table = naming();
    table.set(SERVICE, [BILLING]);
    assert.equal(table.allows(SERVICE, BILLING), true);
    assert.equal(table.allows(SERVICE, PHOTOS), false);
  });

  test("delete removes a service, which is then denied", () => {
    const table = naming();
    assert.equal(table.delete(SERVICE), true);
    assert.equal(table.delete(SERVICE), false);
    assert.throws(() => table.check(SERVICE, PHOTOS), { code: "ERR_SECURE_NAMING" });
  });

  test("allowedIds lists the identities of a service, and none for an unknown one", () => {
    const ids = naming().allowedIds("billing.prod.svc.cluster.local").map(String).sort();
    assert.deepEqual(ids, [PHOTOS.toString(), BILLING.toString()].sort());
    assert.deepEqual(naming().allowedIds("unknown.svc"), []);
  });

  test("a Map builds the same table", () => {
    const table = new SecureNaming(new Map([[SERVICE, [PHOTOS]]]));
    assert.doesNotThrow(() => table.check(SERVICE, PHOTOS));
    assert.throws(() => table.check(SERVICE, BILLING), { code: "ERR_SECURE_NAMING" });
  });

  test("an invalid ID in the table is refused when the table is built", () => {
    assert.throws(() => new SecureNaming({ [SERVICE]: ["https://photos"] }), {
      code: "ERR_SPIFFE_ID_INVALID",
    });
  });

  test("a table entry that is not a list of IDs is refused with ERR_INVALID_ARGUMENT", () => {
    const table = { [SERVICE]: PHOTOS.toString() } as unknown as Record<string, string[]>;
    assert.throws(() => new SecureNaming(table), { code: "ERR_INVALID_ARGUMENT" });
  });

  test("authorizerFor gives an authorizer for one service", () => {
    const authorize = naming().authorizerFor(SERVICE);
    assert.doesNotThrow(() => authorize(PHOTOS));
    assert.throws(() => authorize(BILLING), { code: "ERR_SECURE_NAMING" });
  });

  test("an empty table denies everything", () => {
    assert.throws(() => new SecureNaming().check(SERVICE, PHOTOS), SecureNamingError);
  });
});
