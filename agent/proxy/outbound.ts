/**
 * An outbound listener: a local port (or Unix socket) that stands for one upstream service. A
 * local client connects in plain text; the proxy opens mutual TLS to the upstream's proxy with
 * the workload's SVID and, before one byte of the client's data leaves, verifies the server's
 * SVID (`verifySvid`, against the bundle and CRLs) and checks secure naming: the server's
 * SPIFFE ID must be one allowed to serve this service. Anything else closes both sides, and
 * is audited and counted.
 *
 * The newest session ticket is kept with the chain that was verified when it was issued, and
 * offered by every new connection (as HAProxy's and Envoy's clients reuse theirs: single use
 * protects 0-RTT data and privacy between unlinked sessions, neither of which a mesh has); a
 * resumed session is verified again from that chain against the bundle, CRLs and naming map of
 * now. A new SVID of the workload drops the ticket, so new connections present the new SVID, and
 * a ticket of a connection opened with an earlier SVID is never kept (it arrives after the
 * handshake, possibly after the change); a resumed session that fails verification drops it too,
 * and so does an open connection to the ticket's server that fails when it is verified again
 * (revoked, no longer allowed).
 *
 * @module
 */

import { createServer, type Server, type Socket } from "node:net";
import { connect as tlsConnect, type ConnectionOptions, type TLSSocket } from "node:tls";
import type { SecureNaming } from "../../mod.ts";
import { bytesEqual } from "../../internal/mod.ts";
import { formatAddress, type SocketAddress } from "./address.ts";
import type { OutboundConfig } from "./config.ts";
import { type CloseReason, ProxyConnection } from "./connection.ts";
import { type ListenerContext, listenOn, recordDecision } from "./listener-context.ts";
import { canPoolReads, PooledReads } from "./pooled-reads.ts";
import { peerChain, type VerifiedPeer } from "./peer-verifier.ts";
import type { ProxyWorkload, WorkloadObserver } from "./workload.ts";

/** A session ticket and the chain the server proved it held when the ticket was issued. */
interface HeldSession {
  ticket: Buffer;
  chain: readonly Uint8Array[];
}

/** Tickets that arrive before the connection's server is verified are held this many at most. */
const MAX_PENDING_TICKETS = 4;

/** One outbound listener. */
export class OutboundListener implements WorkloadObserver {
  readonly #server: Server;
  readonly #connections = new Set<ProxyConnection>();
  #session?: HeldSession;
  /** Counts the workload's SVIDs put in service: a ticket is kept only from the current one's connections. */
  #credentialGeneration = 0;
  #address?: SocketAddress;
  #stopObserving?: () => void;
  #revalidation?: Promise<void>;
  #revalidateAgain = false;

  constructor(
    readonly config: OutboundConfig,
    readonly workload: ProxyWorkload,
    readonly naming: SecureNaming,
    readonly context: ListenerContext,
  ) {
    this.#server = createServer(
      { allowHalfOpen: true, pauseOnConnect: true },
      (socket) => this.#accept(socket),
    );
  }

  get name(): string {
    return this.config.name;
  }

  get address(): SocketAddress | undefined {
    return this.#address;
  }

  get connectionCount(): number {
    return this.#connections.size;
  }

  /** Bytes held for open connections now. */
  get bufferedBytes(): number {
    let total = 0;
    for (const connection of this.#connections) total += connection.bufferedBytes;
    return total;
  }

  async listen(): Promise<SocketAddress> {
    this.#stopObserving = this.workload.observe(this);
    this.#address = await listenOn(
      this.#server,
      this.config.listen,
      `the proxy's outbound listener "${this.config.name}"`,
    );
    return this.#address;
  }

  /** Tickets were issued to the old SVID: new connections must present the new one. */
  credentialChanged(): void {
    this.#session = undefined;
    this.#credentialGeneration++;
  }

  trustChanged(): void {
    void this.revalidate();
  }

  /** Verifies every open connection's server again (SVID and secure naming); closes those that fail. */
  revalidate(): Promise<void> {
    if (this.#revalidation) {
      this.#revalidateAgain = true;
      return this.#revalidation;
    }
    this.#revalidation = (async () => {
      do {
        this.#revalidateAgain = false;
        await Promise.all([...this.#connections].map((c) => this.#recheck(c)));
      } while (this.#revalidateAgain);
    })().finally(() => this.#revalidation = undefined);
    return this.#revalidation;
  }

  async close(): Promise<void> {
    this.#stopObserving?.();
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    for (const connection of this.#connections) this.#closeConnection(connection, "shutdown");
    await closed;
  }

  #accept(app: Socket): void {
    app.setNoDelay(true);
    const limits = this.context.limits;
    const context = this.workload.clientContext;
    if (this.#connections.size >= limits.maxConnections || !context) {
      this.#count(context ? "over_limit" : "no_credential");
      app.destroy();
      return;
    }
    const connection = new ProxyConnection(this.context.nextConnectionId(), "mtls", app);
    this.#connections.add(connection);
    connection.onClosed(() => this.#connections.delete(connection));
    connection.add(app);
    connection.setDeadline(limits.handshakeTimeoutSeconds * 1000, () => {
      this.#count("handshake_failed");
      this.#closeConnection(connection, "handshake_timeout");
    });
    const offered = this.context.sessionResumption ? this.#session : undefined;
    const generation = this.#credentialGeneration;
    const upstream = this.config.upstream;
    const reads = canPoolReads ? PooledReads.forTls() : undefined;
    const tls = tlsConnect({
      host: upstream.host,
      port: upstream.port,
      secureContext: context,
      ...(this.config.serverName ? { servername: this.config.serverName } : {}),
      // No chain validation in OpenSSL: the core's verifySvid is the one validator.
      rejectUnauthorized: false,
      checkServerIdentity: () => undefined,
      session: offered?.ticket,
      // From the first byte: Nagle's algorithm would hold handshake flights for a delayed ACK.
      noDelay: true,
      // A FIN from the upstream ends only its direction (node:tls has the option; its types lag).
      allowHalfOpen: true,
      onread: reads?.onread,
    } as ConnectionOptions);
    reads?.attach(tls);
    // Before connection.add: its own error handler closes the connection, and this one reports why.
    tls.once("error", (err: NodeJS.ErrnoException) => {
      if (connection.peer || connection.isClosed) return;
      this.#count(tls.connecting ? "upstream_failed" : "handshake_failed");
      this.context.logger.warn("cannot open mutual TLS to the upstream", {
        listener: this.name,
        upstream: formatAddress(upstream),
        error: err,
      });
    });
    connection.add(tls);
    tls.setTimeout(limits.connectTimeoutSeconds * 1000, () => {
      if (tls.connecting) tls.destroy(new Error("connect timed out"));
    });
    const tickets: Buffer[] = [];
    let verifiedChain: readonly Uint8Array[] | undefined;
    tls.on("session", (ticket: Buffer) => {
      if (!this.context.sessionResumption) return;
      if (verifiedChain) this.#keep(ticket, verifiedChain, generation);
      else if (tickets.length < MAX_PENDING_TICKETS) tickets.push(ticket);
    });
    tls.once("secureConnect", () => {
      tls.setTimeout(0);
      void this.#secured(connection, app, tls, offered, reads).then((chain) => {
        if (!chain) return;
        verifiedChain = chain;
        for (const ticket of tickets.splice(0)) this.#keep(ticket, chain, generation);
      });
    });
  }

  /** Verifies the server; answers the chain it verified, or undefined after closing the connection. */
  async #secured(
    connection: ProxyConnection,
    app: Socket,
    tls: TLSSocket,
    offered: HeldSession | undefined,
    reads: PooledReads | undefined,
  ): Promise<readonly Uint8Array[] | undefined> {
    if (connection.isClosed) return undefined;
    connection.isResumed = tls.isSessionReused();
    // node:tls has no certificate for a resumed session on the client side: the chain verified
    // when the ticket was issued stands for it, and is verified again now.
    const chain = connection.isResumed && offered ? offered.chain : peerChain(tls);
    let peer: VerifiedPeer;
    try {
      peer = await this.workload.verifyPeer(chain, "serverAuth");
    } catch (err) {
      this.#forget(offered);
      this.#refuse(connection, "unverified", err as Error);
      return undefined;
    }
    if (connection.isClosed) return undefined;
    connection.peer = peer;
    if (!this.naming.allows(this.config.service, peer.id)) {
      this.#forget(offered);
      this.#refuse(connection, "secure_naming");
      return undefined;
    }
    if (connection.isResumed) {
      this.context.metrics.resumed.inc({ listener: this.name, direction: "outbound" });
    }
    const group = tls.getEphemeralKeyInfo?.() as { name?: string } | null | undefined;
    this.context.metrics.tlsGroups.inc({ group: group?.name ?? "unknown" });
    recordDecision(this.context, {
      listener: this.name,
      direction: "outbound",
      decision: "allow",
      reason: "secure-naming",
      ...this.#auditFields(connection),
    });
    this.#count("allowed");
    this.context.metrics.establishSeconds.observe({ direction: "outbound" }, connection.established());
    connection.relay(
      tls,
      app,
      this.context.limits.idleTimeoutSeconds * 1000,
      () => this.#closeConnection(connection, "idle"),
      { peer: reads },
    );
    connection.onClosed(() => {
      this.context.metrics.bytes.inc({ listener: this.name, direction: "to_peer" }, app.bytesRead);
      this.context.metrics.bytes.inc({ listener: this.name, direction: "from_peer" }, app.bytesWritten);
    });
    return chain;
  }

  /**
   * Keeps the newest ticket, unless its connection presented an SVID that is no longer in
   * service: resuming it would present that SVID again (revoked, perhaps), and the server would
   * refuse the connection for it.
   */
  #keep(ticket: Buffer, chain: readonly Uint8Array[], generation: number): void {
    if (generation !== this.#credentialGeneration) return;
    this.#session = { ticket, chain };
  }

  /** A ticket whose server no longer verifies is not offered again. */
  #forget(session: HeldSession | undefined): void {
    if (session && this.#session === session) this.#session = undefined;
  }

  #auditFields(connection: ProxyConnection) {
    return {
      peerId: connection.peer?.id.toString(),
      peerSerial: connection.peer?.serialNumber,
      revocation: connection.peer?.revocation,
      source: connection.remoteAddress,
      destination: formatAddress(this.config.upstream),
      transport: "mtls" as const,
      connection: connection.id,
      ...(connection.isResumed ? { resumed: true } : {}),
    };
  }

  #refuse(connection: ProxyConnection, outcome: "unverified" | "secure_naming", err?: Error): void {
    recordDecision(this.context, {
      listener: this.name,
      direction: "outbound",
      decision: "deny",
      reason: outcome === "secure_naming" ? "secure-naming" : "unverified-peer",
      ...(err
        ? { error: { code: (err as { code?: string }).code ?? "ERR_UNKNOWN", message: err.message } }
        : {}),
      ...this.#auditFields(connection),
    });
    this.#count(outcome);
    connection.close(outcome);
  }

  async #recheck(connection: ProxyConnection): Promise<void> {
    const peer = connection.peer;
    if (!peer || connection.isClosed) return;
    let reason: CloseReason | undefined;
    let error: Error | undefined;
    try {
      await this.workload.verifyPeer(peer.chain, "serverAuth");
      if (!this.naming.allows(this.config.service, peer.id)) reason = "secure_naming";
    } catch (err) {
      error = err as Error;
      reason = (err as { code?: string }).code === "ERR_CERT_REVOKED" ? "revoked" : "unverified";
    }
    if (!reason) return;
    // Its ticket would resume a session whose server chain is this one, failing once more.
    if (this.#session && bytesEqual(this.#session.chain[0], peer.chain[0])) this.#session = undefined;
    if (connection.isClosed) return;
    recordDecision(this.context, {
      listener: this.name,
      direction: "outbound",
      decision: "deny",
      reason: reason === "revoked"
        ? "revoked-while-open"
        : reason === "secure_naming"
        ? "secure-naming"
        : "unverified-peer",
      ...(error
        ? { error: { code: (error as { code?: string }).code ?? "ERR_UNKNOWN", message: error.message } }
        : {}),
      ...this.#auditFields(connection),
    });
    this.#closeConnection(connection, reason);
  }

  #closeConnection(connection: ProxyConnection, reason: CloseReason): void {
    if (connection.isClosed) return;
    this.context.metrics.closed.inc({ listener: this.name, reason });
    connection.close(reason);
  }

  #count(outcome: string): void {
    this.context.metrics.connections.inc({
      listener: this.name,
      direction: "outbound",
      transport: "mtls",
      outcome,
    });
  }
}
