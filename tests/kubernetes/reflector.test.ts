// The reflector against the API test server: a watch that goes silent without closing (a
// half-open connection) is abandoned and resumed; a dropped watch resumes from the last
// resource version, so a deletion it never saw is replayed without a list; and a 410 Gone
// answered as an HTTP status (not as an ERROR event) leads to a list that catches up.
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { jsonLogger, Reflector, silentLogger } from "../../internal/mod.ts";
import { eventually, startCluster, type TestCluster } from "./helpers.ts";

const ACCOUNTS = "/api/v1/namespaces/photo-ns/serviceaccounts";
const clusters: TestCluster[] = [];
const reflectors: Reflector<string>[] = [];

async function watching(options: Parameters<typeof startCluster>[0], maxWatchIdleSeconds?: number) {
  const cluster = await startCluster(options);
  clusters.push(cluster);
  const reflector = new Reflector<string>({
    api: await cluster.clientFor("meshauth-system", "meshauth-ca"),
    path: ACCOUNTS,
    name: "service accounts in photo-ns",
    logger: process.env.DEBUG_K8S ? jsonLogger({ level: "debug" }) : silentLogger,
    project: (sa) => sa.metadata?.name,
    maxWatchIdleSeconds,
    minBackoffMs: 50,
    maxBackoffMs: 200,
  });
  reflectors.push(reflector);
  reflector.start();
  await reflector.synced();
  await eventually("a watch to be open", () => cluster.server.openWatches > 0 || undefined);
  return { cluster, reflector };
}

const account = (name: string) => ({ apiVersion: "v1", kind: "ServiceAccount", metadata: { name } });

describe("Reflector", () => {
  after(async () => {
    for (const r of reflectors) r.stop();
    await Promise.all(clusters.map((c) => c.stop()));
  });

  test("a watch silent past maxWatchIdleSeconds is abandoned and resumed from its resource version", async () => {
    const { cluster, reflector } = await watching({ bookmarkIntervalMs: 200 }, 1);
    await eventually("a bookmark", () => reflector.stats.bookmarks > 0 || undefined);
    const lists = reflector.stats.lists;
    // The stream stays open but brings nothing more: no events, no bookmarks.
    cluster.server.stallWatches();
    await cluster.admin.create(ACCOUNTS, account("late-arrival"));
    await eventually("the new account in the cache", () => reflector.get("photo-ns/late-arrival"), 6000);
    assert.equal(reflector.stats.idleWatchesAbandoned, 1);
    assert.equal(reflector.stats.lists, lists, "resumed, not listed again");
  });

  test("a dropped watch resumes from its resource version: a deletion it missed is replayed, with no list", async () => {
    const { cluster, reflector } = await watching({ bookmarkIntervalMs: 60_000 });
    await cluster.admin.create(ACCOUNTS, account("short-lived"));
    await eventually("the account in the cache", () => reflector.get("photo-ns/short-lived"));
    const lists = reflector.stats.lists;
    const resumes = reflector.stats.resumes;
    // The deletion never reaches this watch; a resume from "now" would never learn of it.
    cluster.server.stallWatches();
    await cluster.admin.delete(`${ACCOUNTS}/short-lived`);
    assert.ok(cluster.server.dropWatches() > 0);
    await eventually("the deletion", () => reflector.get("photo-ns/short-lived") ? undefined : true);
    assert.ok(reflector.stats.resumes > resumes);
    assert.equal(reflector.stats.lists, lists, "resumed, not listed again");
    assert.equal(reflector.stats.relistsAfterGone, 0);
  });

  test("a 410 Gone HTTP answer to a resuming watch leads to a list that catches up", async () => {
    const { cluster, reflector } = await watching({ bookmarkIntervalMs: 60_000, goneAsHttpStatus: true });
    await cluster.admin.create(ACCOUNTS, account("doomed"));
    await eventually("the account in the cache", () => reflector.get("photo-ns/doomed"));
    cluster.server.stallWatches();
    await cluster.admin.delete(`${ACCOUNTS}/doomed`);
    await cluster.admin.create(ACCOUNTS, account("newcomer"));
    cluster.server.compact();
    cluster.server.dropWatches();
    await eventually("the newcomer", () => reflector.get("photo-ns/newcomer"));
    assert.equal(reflector.get("photo-ns/doomed"), undefined);
    assert.equal(reflector.stats.relistsAfterGone, 1);
  });
});
