/**
 * Where a proxy listener listens or a connection goes: a TCP address (`host` and `port`) or a
 * Unix domain socket (`path`). Configuration writes either form as a string (`127.0.0.1:15001`,
 * `[::1]:15001`, `unix:/run/app.sock`), as a mapping (`{ host, port }`, `{ path }`), or as a
 * bare port number, which means the default host. A Unix socket a listener creates may also say
 * who may connect to it (`{ path, mode, owner, group }`).
 *
 * @module
 */

import { isIP } from "node:net";

/** A TCP endpoint or a Unix domain socket. */
export type SocketAddress = { host: string; port: number } | UnixAddress;

/** A Unix domain socket; the permission fields apply to one a listener creates. */
export interface UnixAddress {
  /** The socket file's path; configuration resolves a relative one against the file's directory. */
  path: string;
  /** The socket file's mode (connecting needs write permission); default 0660. */
  mode?: number;
  /** The socket file's owner: a user ID, or a name in /etc/passwd. */
  owner?: number | string;
  /** The socket file's group: a group ID, or a name in /etc/group. */
  group?: number | string;
}

/** True for a Unix domain socket address. */
export function isUnixAddress(address: SocketAddress): address is UnixAddress {
  return "path" in address;
}

/** `host:port`, `[v6]:port` or `unix:/path`: the address as configuration writes it. */
export function formatAddress(address: SocketAddress): string {
  if (isUnixAddress(address)) return `unix:${address.path}`;
  return isIP(address.host) === 6 ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`;
}

const HOST_PORT = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]\s]+)):(\d{1,5})$/;

/**
 * Reads an address from configuration; answers a problem message (without the field path)
 * instead when the value is not one. `defaultHost` is used for a bare port number; `isListen`
 * allows a Unix socket's `mode`, `owner` and `group`.
 */
export function parseAddress(
  value: unknown,
  defaultHost: string,
  resolvePath: (path: string) => string = (path) => path,
  isListen = false,
): SocketAddress | string {
  const unix = (path: string): SocketAddress | string => {
    if (path === "") return "a Unix socket path must not be empty";
    const absolute = resolvePath(path);
    // Linux limits sun_path to 108 bytes with the terminating NUL.
    if (absolute.length > 107) {
      return `a Unix socket path has at most 107 characters, ${absolute} has ${absolute.length}`;
    }
    return { path: absolute };
  };
  if (typeof value === "number") return tcp(defaultHost, value);
  if (typeof value === "string") {
    if (value.startsWith("unix:")) return unix(value.slice(5));
    if (/^\d+$/.test(value)) return tcp(defaultHost, Number(value));
    const match = HOST_PORT.exec(value);
    if (!match) return `expected host:port, [ipv6]:port or unix:/path, got ${JSON.stringify(value)}`;
    return tcp(match[1] ?? match[2], Number(match[3]));
  }
  if (value && typeof value === "object" && !Array.isArray(value)) {
    const fields = value as Record<string, unknown>;
    const keys = Object.keys(fields);
    if ("path" in fields) {
      const known = isListen ? ["path", "mode", "owner", "group"] : ["path"];
      const other = keys.find((k) => !known.includes(k));
      if (other !== undefined) {
        return `unknown field ${other} (a Unix socket address has ${known.join(", ")})`;
      }
      if (typeof fields.path !== "string") return "path: expected a string";
      const address = unix(fields.path);
      if (typeof address === "string") return address;
      return withPermissions(address as UnixAddress, fields);
    }
    const unknown = keys.filter((k) => k !== "host" && k !== "port");
    if (unknown.length) return `unknown field ${unknown[0]} (known: host, port, path)`;
    const port = typeof fields.port === "string" && /^\d+$/.test(fields.port)
      ? Number(fields.port)
      : fields.port;
    if (fields.host !== undefined && typeof fields.host !== "string") return "host: expected a string";
    if (typeof port !== "number") return "port: required, a whole number from 0 to 65535";
    return tcp((fields.host as string | undefined) ?? defaultHost, port);
  }
  return `expected an address (host:port, unix:/path, or a mapping), got ${JSON.stringify(value)}`;
}

function tcp(host: string, port: number): SocketAddress | string {
  if (!Number.isSafeInteger(port) || port < 0 || port > 65535) {
    return `port: expected a whole number from 0 to 65535, got ${port}`;
  }
  if (host === "" || /\s/.test(host)) {
    return `host: expected a host name or IP address, got ${JSON.stringify(host)}`;
  }
  return { host, port };
}

/** `mode` (an octal string: `"0660"`), `owner` and `group` (an ID or a name) of a listener's socket. */
function withPermissions(address: UnixAddress, fields: Record<string, unknown>): UnixAddress | string {
  const out: UnixAddress = { ...address };
  if (fields.mode !== undefined) {
    // A string, because YAML reads 0660 as the decimal 660.
    if (typeof fields.mode !== "string" || !/^(0o?)?[0-7]{3}$/.test(fields.mode)) {
      return `mode: expected an octal mode as a string, such as "0660", got ${JSON.stringify(fields.mode)}`;
    }
    out.mode = parseInt(fields.mode.replace(/^0o?/, ""), 8);
  }
  for (const key of ["owner", "group"] as const) {
    const id = fields[key];
    if (id === undefined) continue;
    if (typeof id === "number" && Number.isSafeInteger(id) && id >= 0) out[key] = id;
    else if (typeof id === "string" && /^\d+$/.test(id)) out[key] = Number(id);
    else if (typeof id === "string" && /^[A-Za-z_][A-Za-z0-9_.-]*\$?$/.test(id)) out[key] = id;
    else return `${key}: expected a numeric ID or a name, got ${JSON.stringify(id)}`;
  }
  return out;
}
