// isLoopbackHost: the one loopback test behind plain HTTP to and from the CA and the proxy's
// plain-text outbound listeners.
import assert from "node:assert/strict";
import { test } from "node:test";
import { isLoopbackHost } from "../../internal/mod.ts";
import { isLoopback } from "../../ca-server/config.ts";

const LOOPBACK = [
  "localhost",
  "LocalHost",
  "127.0.0.1",
  "127.255.255.254",
  "127.1.2.3",
  "::1",
  "[::1]",
  "0:0:0:0:0:0:0:1",
  "0000:0000:0000:0000:0000:0000:0000:0001",
  "::0:1",
  "::ffff:127.0.0.1",
  "[::ffff:127.9.8.7]",
];
const NOT_LOOPBACK = [
  "127.300.0.1",
  "127.0.0.01",
  "127.0.0",
  "127.0.0.1.5",
  "128.0.0.1",
  "10.0.0.1",
  "0.0.0.0",
  "::",
  "::2",
  "1::1",
  "::ffff:10.0.0.1",
  "::ffff:127.0.0.256",
  "[::1",
  "localhost.example",
  "127.0.0.1.nip.io",
  "",
];

test("isLoopbackHost accepts 127.0.0.0/8, ::1 in any spelling and localhost, and nothing else", () => {
  for (const host of LOOPBACK) assert.equal(isLoopbackHost(host), true, host);
  for (const host of NOT_LOOPBACK) assert.equal(isLoopbackHost(host), false, host);
});

test("the CA server's isLoopback is the same test", () => {
  for (const host of [...LOOPBACK, ...NOT_LOOPBACK]) {
    assert.equal(isLoopback(host), isLoopbackHost(host), host);
  }
});
