// PooledReads, the proxy's reads into pooled buffers of the sockets it opens: a socket that ended
// before it had a destination ends that destination once it has one.
import { test } from "node:test";
import assert from "node:assert/strict";
import { once } from "node:events";
import { type AddressInfo, connect, createServer, type Socket } from "node:net";
import { connect as tlsConnect, type ConnectionOptions, createServer as createTlsServer } from "node:tls";
import { PooledReads } from "../../agent/proxy/pooled-reads.ts";
import { IDS, TestCa, within } from "./proxy-support.ts";

test("a TLS socket that ended before it was piped ends its target (a peer that closed during verification)", {
  timeout: 30_000,
}, async () => {
  const ca = await TestCa.create();
  const svid = await ca.issue(IDS.backend);
  const peer = createTlsServer({ cert: svid.certificateChainPem, key: svid.privateKeyPem }, (socket) => {
    socket.end();
  });
  await new Promise<void>((resolve) => peer.listen(0, "127.0.0.1", resolve));
  const local = createServer({ allowHalfOpen: true });
  await new Promise<void>((resolve) => local.listen(0, "127.0.0.1", resolve));
  try {
    const reads = PooledReads.forTls();
    const source = tlsConnect({
      host: "127.0.0.1",
      port: (peer.address() as AddressInfo).port,
      rejectUnauthorized: false,
      allowHalfOpen: true,
      onread: reads.onread,
    } as ConnectionOptions);
    reads.attach(source);
    await within(once(source, "end"), 5000, "the peer's end read");
    const accepted = once(local, "connection");
    const target = connect((local.address() as AddressInfo).port, "127.0.0.1");
    const [service] = (await accepted) as [Socket];
    service.resume();
    const ended = once(service, "end");
    reads.pipeTo(target);
    await within(ended, 5000, "the target's end");
    assert.equal(service.readableEnded, true);
    source.destroy();
    target.destroy();
    service.destroy();
  } finally {
    peer.close();
    local.close();
  }
});
