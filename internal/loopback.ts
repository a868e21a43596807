/**
 * The one test of "is this host loopback", for every place that allows something on loopback
 * only: plain HTTP to or from the CA, and the proxy's plain-text outbound listeners. It reads
 * literal addresses only (no name resolution, apart from `localhost`): `127.0.0.0/8` in dotted
 * decimal with every octet 0 to 255, `::1` in any IPv6 spelling, and an IPv4-mapped IPv6 address
 * of `127.0.0.0/8`. Brackets around an IPv6 address (a URL's hostname) are allowed.
 *
 * @module
 */

const OCTET = "(25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)";
const LOOPBACK_V4 = new RegExp(`^127\\.${OCTET}\\.${OCTET}\\.${OCTET}$`);

/** True for `localhost`, `127.0.0.0/8` and `::1` (see the module). */
export function isLoopbackHost(host: string): boolean {
  const name = host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
  const lower = name.toLowerCase();
  if (lower === "localhost") return true;
  if (LOOPBACK_V4.test(lower)) return true;
  return isLoopbackV6(lower);
}

function isLoopbackV6(address: string): boolean {
  if (!address.includes(":") || !/^[0-9a-f:.]+$/.test(address)) return false;
  const halves = address.split("::");
  if (halves.length > 2) return false;
  const groups = (part: string | undefined) => (part ? part.split(":") : []);
  const head = groups(halves[0]);
  const tail = groups(halves[1]);
  // An IPv4-mapped tail (::ffff:127.0.0.1) stands for two groups.
  const last = (halves.length === 2 ? tail : head).at(-1) ?? "";
  const mappedV4 = last.includes(".") ? last : undefined;
  if (mappedV4 !== undefined) (halves.length === 2 ? tail : head).pop();
  const width = 8 - (mappedV4 !== undefined ? 2 : 0);
  if (halves.length === 1 && head.length !== width) return false;
  if (head.length + tail.length > width - (halves.length === 2 ? 1 : 0)) return false;
  const all = [...head, ...Array(width - head.length - tail.length).fill("0"), ...tail];
  if (all.some((g) => !/^[0-9a-f]{1,4}$/.test(g))) return false;
  const values = all.map((g) => parseInt(g, 16));
  if (mappedV4 !== undefined) {
    return values.slice(0, 5).every((v) => v === 0) && values[5] === 0xffff && LOOPBACK_V4.test(mappedV4);
  }
  return values.slice(0, 7).every((v) => v === 0) && values[7] === 1;
}
