/**
 * Listening on a Unix domain socket: who may connect, and what happens to a file already at the
 * path.
 *
 * - **Who may connect** is the socket file's mode and owner: connecting needs write permission
 *   on it. The default mode is 0660 (the agent's user and group), set right after the socket is
 *   bound, before the listener accepts; `owner` and `group` (an ID or a name from /etc/passwd and
 *   /etc/group) hand it to another user or group, such as the one a workload runs as.
 * - **A file already at the path** is replaced only when it is a socket nothing listens on (one
 *   a crashed process left); a socket something listens on, or anything that is not a socket (a
 *   regular file, a directory, a symbolic link), refuses the start and is left alone.
 *
 * @module
 */

import { chmodSync, chownSync, lstatSync, readFileSync, unlinkSync } from "node:fs";
import { connect } from "node:net";
import { MeshAuthError } from "../../mod.ts";
import type { UnixAddress } from "./address.ts";

/** The mode of a listener's socket file when the configuration gives none. */
export const DEFAULT_SOCKET_MODE = 0o660;

/** A listener cannot listen where it is configured to; `address` says where, the message why. */
export class ProxyListenError extends MeshAuthError {
  /** Stable code of this class: `ERR_PROXY_LISTEN`. */
  static override code: string = "ERR_PROXY_LISTEN";
  /** `address` as configuration writes it (`host:port`, `unix:/path`); `reason` why it cannot be used. */
  constructor(readonly address: string, reason: string, options?: ErrorOptions) {
    super(`cannot listen on ${address}: ${reason}`, options);
    this.name = "ProxyListenError";
  }
}

/** Makes `address.path` free to bind: removes a stale socket; refuses a live one or any other file. */
export async function clearSocketPath(address: UnixAddress): Promise<void> {
  const where = `unix:${address.path}`;
  let isSocket: boolean;
  try {
    isSocket = lstatSync(address.path).isSocket();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
    throw new ProxyListenError(where, (err as Error).message, { cause: err });
  }
  if (!isSocket) {
    throw new ProxyListenError(
      where,
      "a file that is not a socket is there; it is left alone (remove it, or listen elsewhere)",
    );
  }
  const answer = await probe(address.path);
  if (answer === "listening") {
    throw new ProxyListenError(where, "another process listens on this socket");
  }
  if (answer !== "refused") {
    throw new ProxyListenError(
      where,
      `cannot tell whether another process listens on this socket (${answer})`,
    );
  }
  try {
    unlinkSync(address.path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") {
      throw new ProxyListenError(where, `cannot remove the stale socket: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }
}

/** Gives the bound socket file its mode and owner. */
export function setSocketPermissions(address: UnixAddress): void {
  const where = `unix:${address.path}`;
  try {
    chmodSync(address.path, address.mode ?? DEFAULT_SOCKET_MODE);
    if (address.owner !== undefined || address.group !== undefined) {
      const uid = address.owner === undefined ? -1 : idOf(address.owner, "/etc/passwd", "user", where);
      const gid = address.group === undefined ? -1 : idOf(address.group, "/etc/group", "group", where);
      chownSync(address.path, uid, gid);
    }
  } catch (err) {
    if (err instanceof ProxyListenError) throw err;
    throw new ProxyListenError(where, `cannot set the socket's mode or owner: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

/** Connecting tells a live socket (`listening`) from a stale one (`refused`); anything else is an error code. */
function probe(path: string): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect({ path });
    const timer = setTimeout(() => {
      socket.destroy();
      resolve("no answer within 1s");
    }, 1000);
    socket.once("connect", () => {
      clearTimeout(timer);
      socket.destroy();
      resolve("listening");
    });
    socket.once("error", (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve(err.code === "ECONNREFUSED" ? "refused" : err.code ?? err.message);
    });
  });
}

/** A numeric ID as is; a name looked up in `database` (the third field of its line). */
function idOf(value: number | string, database: string, kind: string, where: string): number {
  if (typeof value === "number") return value;
  let text = "";
  try {
    text = readFileSync(database, "utf8");
  } catch {
    // An unreadable database finds no name; the error below says which.
  }
  for (const line of text.split("\n")) {
    const fields = line.split(":");
    if (fields[0] === value && /^\d+$/.test(fields[2] ?? "")) return Number(fields[2]);
  }
  throw new ProxyListenError(where, `no ${kind} named ${value} in ${database}`);
}
