// Leader election on a Lease, against the API test server with only the RBAC of ca-rbac.yaml:
// one leader at a time, also while the leader's requests hang (a partition); a leader that stops
// hands over at once; and a leader whose work cannot start neither restarts it every retry
// period nor keeps the Lease from the other replicas.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  type KubernetesApi,
  type LeaderElectionOptions,
  LeaderElector,
  silentLogger,
} from "../../ca-server/mod.ts";
import { eventually, startCluster, type TestCluster } from "./helpers.ts";

interface Lease {
  spec: { holderIdentity?: string; leaseTransitions?: number };
}

let cluster: TestCluster;
const running: LeaderElector[] = [];

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A candidate for a Lease of its own test (`name`), as the CA's service account. */
async function candidate(
  name: string,
  identity: string,
  options: Partial<LeaderElectionOptions> = {},
): Promise<LeaderElector> {
  const elector = new LeaderElector({
    api: await cluster.clientFor("meshauth-system", "meshauth-ca"),
    namespace: "meshauth-system",
    name,
    identity,
    leaseDurationSeconds: 4,
    renewDeadlineSeconds: 3,
    retryPeriodSeconds: 1,
    logger: silentLogger,
    onStartedLeading: () => {},
    ...options,
  });
  running.push(elector);
  return elector;
}

const holderOf = async (name: string) =>
  (await cluster.admin.get<Lease>(`/apis/coordination.k8s.io/v1/namespaces/meshauth-system/leases/${name}`))
    .spec.holderIdentity;

/**
 * `api` whose requests, while `isPartitioned()`, hang for `hangMs` and then fail; with
 * `honoursAbort`, a request whose signal aborts fails at once instead (counted in `aborted`).
 */
function partitionable(
  api: KubernetesApi,
  isPartitioned: () => boolean,
  hangMs: number,
  honoursAbort: boolean,
) {
  const counts = { aborted: 0 };
  const proxy = new Proxy(api, {
    get(target, property) {
      const value = Reflect.get(target, property);
      if (typeof value !== "function") return value;
      return async (...args: unknown[]) => {
        if (isPartitioned()) {
          const signal = args.find((a): a is { signal?: AbortSignal } =>
            typeof a === "object" && a !== null && "signal" in a
          )?.signal;
          await new Promise<never>((_, reject) => {
            const timer = setTimeout(() => reject(new Error(`no answer within ${hangMs} ms`)), hangMs);
            if (honoursAbort) {
              signal?.addEventListener("abort", () => {
                counts.aborted++;
                clearTimeout(timer);
                reject(new Error("aborted"));
              });
            }
          });
        }
        return await value.apply(target, args);
      };
    },
  });
  return { api: proxy, counts };
}

describe("LeaderElector", () => {
  before(async () => {
    // The Role grants get and update on the Lease named meshauth-ca alone: each test uses it in turn.
    cluster = await startCluster();
  });
  after(async () => {
    await Promise.all(running.map((e) => e.stop()));
    await cluster?.stop();
  });

  const nextLease = async () => {
    await Promise.all(running.splice(0).map((e) => e.stop()));
    // Each test starts from no Lease (a test's own deletion, as an administrator).
    await cluster.admin.delete("/apis/coordination.k8s.io/v1/namespaces/meshauth-system/leases/meshauth-ca")
      .catch(() => undefined);
    return "meshauth-ca";
  };

  test("of two candidates one leads; when it stops it releases the Lease and the other leads at once", async () => {
    const name = await nextLease();
    const a = await candidate(name, "a", { leaseDurationSeconds: 30, renewDeadlineSeconds: 20 });
    const b = await candidate(name, "b", { leaseDurationSeconds: 30, renewDeadlineSeconds: 20 });
    a.start();
    await eventually("a to lead", () => a.isLeader || undefined);
    b.start();
    for (let i = 0; i < 15; i++) {
      await sleep(100);
      assert.ok(!(a.isLeader && b.isLeader), "two leaders");
    }
    assert.equal(b.isLeader, false);
    assert.equal(await holderOf(name), "a");
    await a.stop();
    // Far sooner than the 30 s lease duration: the Lease was released.
    await eventually("b to lead", () => b.isLeader || undefined, 5000);
    assert.equal(await holderOf(name), "b");
  });

  test("a leader whose requests hang steps down by its renew deadline, before another takes over", async () => {
    const name = await nextLease();
    let isPartitioned = false;
    // A's requests hang for 6 s (longer than the lease) once partitioned, deaf to aborts.
    const { api } = partitionable(
      await cluster.clientFor("meshauth-system", "meshauth-ca"),
      () => isPartitioned,
      6000,
      false,
    );
    const a = await candidate(name, "a", { api });
    a.start();
    await eventually("a to lead", () => a.isLeader || undefined);
    const b = await candidate(name, "b");
    b.start();
    isPartitioned = true;
    let overlaps = 0;
    for (let i = 0; i < 80; i++) {
      await sleep(100);
      if (a.isLeader && b.isLeader) overlaps++;
    }
    isPartitioned = false;
    assert.equal(overlaps, 0);
    assert.equal(a.isLeader, false);
    assert.equal(b.isLeader, true);
  });

  test("an attempt's requests are aborted at the renew deadline, and campaigning goes on", async () => {
    const name = await nextLease();
    let isPartitioned = false;
    const { api, counts } = partitionable(
      await cluster.clientFor("meshauth-system", "meshauth-ca"),
      () => isPartitioned,
      60_000,
      true,
    );
    const a = await candidate(name, "a", { api });
    a.start();
    await eventually("a to lead", () => a.isLeader || undefined);
    isPartitioned = true;
    await eventually("a to step down", () => a.isLeader ? undefined : true, 6000);
    assert.ok(counts.aborted >= 1, "the hanging request was aborted");
    isPartitioned = false;
    // The loop did not wait out the 60 s hang: it leads again once the API answers.
    await eventually("a to lead again", () => a.isLeader || undefined, 8000);
  });

  test("a leader whose work fails to start releases the Lease and does not restart it every retry period", async () => {
    const name = await nextLease();
    let starts = 0;
    const a = await candidate(name, "a", {
      leaseDurationSeconds: 6,
      renewDeadlineSeconds: 4,
      onStartedLeading: () => {
        starts++;
        throw new Error("the API server serves PodCertificateRequests in none of v1beta1, v1");
      },
    });
    a.start();
    await eventually("a's first start", () => starts > 0 || undefined);
    await eventually("the Lease released", async () => (await holderOf(name)) ? undefined : true, 3000);
    // Another replica whose work starts takes over well within the lease duration.
    const b = await candidate(name, "b", { leaseDurationSeconds: 6, renewDeadlineSeconds: 4 });
    b.start();
    await eventually("b to lead", () => b.isLeader || undefined, 4000);
    await b.stop();
    await sleep(4500);
    assert.ok(starts <= 2, `${starts} starts in about 5.5 s`);
  });
});
