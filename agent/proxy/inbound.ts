/**
 * An inbound listener: mutual TLS in front of one local service. A caller must present an
 * X509-SVID that verifies against the workload's bundle and CRLs; its SPIFFE ID is then put to
 * the listener's policies, and an allowed connection is piped to the local TCP port or Unix
 * socket (TCP mode), or handed to the HTTP layer, which decides each request (HTTP mode).
 *
 * In PERMISSIVE mode the first byte tells TLS (a handshake record, 0x16) from plain text, which
 * is served too, without identity, and counted apart. In STRICT mode plain text is refused and
 * counted. Open connections are verified again whenever the bundle, CRLs or policies change and
 * every `revalidateIntervalSeconds`; one that no longer passes is closed.
 *
 * @module
 */

import { connect, createServer as createNetServer, type Server, type Socket } from "node:net";
import {
  createServer as createTlsServer,
  type SecureContextOptions,
  type Server as TlsServer,
  type TLSSocket,
} from "node:tls";
import { constants as cryptoConstants, createHash } from "node:crypto";
import type { PolicyRequest } from "../../mod.ts";
import { formatAddress, type SocketAddress } from "./address.ts";
import type { InboundConfig } from "./config.ts";
import { type CloseReason, ProxyConnection } from "./connection.ts";
import { HttpInbound } from "./http-inbound.ts";
import { canPoolReads, PooledReads } from "./pooled-reads.ts";
import { type ListenerContext, listenOn, recordDecision, verdictFields } from "./listener-context.ts";
import { peerChain, type VerifiedPeer } from "./peer-verifier.ts";
import type { ListenerPolicy } from "./policy-files.ts";
import type { ProxyWorkload, WorkloadObserver } from "./workload.ts";

/** The first byte of a TLS handshake record (RFC 8446 5.1, ContentType handshake). */
const TLS_HANDSHAKE = 0x16;
/** OpenSSL's reasons for a first record that is not TLS: plain text sent to a TLS port. */
const PLAINTEXT_ERRORS = new Set([
  "ERR_SSL_HTTP_REQUEST",
  "ERR_SSL_WRONG_VERSION_NUMBER",
  "ERR_SSL_RECORD_LAYER_FAILURE",
]);

/** One inbound listener. */
export class InboundListener implements WorkloadObserver {
  readonly #server: Server;
  #tlsServer?: TlsServer;
  #http?: HttpInbound;
  readonly #connections = new Set<ProxyConnection>();
  readonly #byRawSocket = new WeakMap<Socket, ProxyConnection>();
  #address?: SocketAddress;
  #stopObserving?: () => void;
  #revalidation?: Promise<void>;
  #revalidateAgain = false;
  readonly #sessionIdContext: string;

  constructor(
    readonly config: InboundConfig,
    readonly workload: ProxyWorkload,
    readonly policy: ListenerPolicy,
    readonly context: ListenerContext,
  ) {
    this.#server = createNetServer(
      { allowHalfOpen: true, pauseOnConnect: true },
      (socket) => this.#accept(socket),
    );
    this.#sessionIdContext = createHash("sha256").update(`meshauth-proxy:${config.name}`).digest("hex").slice(
      0,
      32,
    );
    if (config.protocol === "http") {
      this.#http = new HttpInbound(config, policy, context, {
        connectionOf: (socket) => this.#byRawSocket.get(socket),
        policyRequest: (connection, socket) => this.#policyRequest(connection, socket),
        auditFields: (connection) => this.#auditFields(connection),
        ownId: () => workload.ownId,
      });
    }
  }

  get name(): string {
    return this.config.name;
  }

  /** Where it listens, once listening. */
  get address(): SocketAddress | undefined {
    return this.#address;
  }

  /** Open connections. */
  get connectionCount(): number {
    return this.#connections.size;
  }

  /** Bytes held for open connections now. */
  get bufferedBytes(): number {
    let total = 0;
    for (const connection of this.#connections) total += connection.bufferedBytes;
    return total;
  }

  /** Starts listening; answers the bound address. */
  async listen(): Promise<SocketAddress> {
    this.#stopObserving = this.workload.observe(this);
    this.credentialChanged(this.workload.contextOptions);
    this.#address = await listenOn(
      this.#server,
      this.config.listen,
      `the proxy's inbound listener "${this.config.name}"`,
    );
    return this.#address;
  }

  /** Takes the workload's new SVID for new connections; open ones keep theirs. */
  credentialChanged(options: SecureContextOptions | undefined): void {
    if (!options) return;
    const settings = {
      ...options,
      requestCert: true,
      // No chain validation in OpenSSL: the core's verifySvid is the one validator.
      rejectUnauthorized: false,
      ticketKeys: Buffer.from(this.context.ticketKeys),
      sessionTimeout: this.context.sessionTimeoutSeconds,
      // Fixed per listener: node:tls's default is derived from process.argv, which would tie
      // sessions to how the process was started.
      sessionIdContext: this.#sessionIdContext,
      secureOptions: this.context.sessionResumption ? 0 : cryptoConstants.SSL_OP_NO_TICKET,
    };
    if (this.#tlsServer) {
      this.#tlsServer.setSecureContext(settings);
      return;
    }
    const server = createTlsServer({ ...settings, allowHalfOpen: true });
    server.on("secureConnection", (socket) => void this.#secured(socket));
    server.on("tlsClientError", (err, socket) => this.#tlsFailed(err as NodeJS.ErrnoException, socket));
    this.#tlsServer = server;
  }

  /** The bundle or CRLs changed. */
  trustChanged(): void {
    void this.revalidate();
  }

  /**
   * Verifies every open connection again (SVID, then policy) and closes those that no longer
   * pass. Calls that come while one runs are folded into one more run after it.
   */
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

  /** Stops accepting and closes every open connection. */
  async close(): Promise<void> {
    this.#stopObserving?.();
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    for (const connection of this.#connections) this.#closeConnection(connection, "shutdown");
    this.#http?.close();
    await closed;
  }

  #accept(socket: Socket): void {
    // Before the handshake: OpenSSL writes its flights and session tickets in several writes,
    // which Nagle's algorithm would hold for the peer's delayed ACK (40 ms).
    socket.setNoDelay(true);
    const limits = this.context.limits;
    // Refused at accept before anything is made for the connection: flooding costs as little as can be.
    if (this.#connections.size >= limits.maxConnections) {
      this.#count("mtls", "over_limit");
      socket.destroy();
      return;
    }
    if (!this.#tlsServer || !this.workload.contextOptions) {
      this.#count("mtls", "no_credential");
      socket.destroy();
      return;
    }
    const connection = new ProxyConnection(this.context.nextConnectionId(), "mtls", socket);
    this.#track(connection);
    connection.add(socket);
    this.#byRawSocket.set(socket, connection);
    connection.setDeadline(limits.handshakeTimeoutSeconds * 1000, () => {
      this.#count(connection.transport, "handshake_failed");
      this.#closeConnection(connection, "handshake_timeout");
    });
    if (this.config.mode === "STRICT") {
      this.#tlsServer.emit("connection", socket);
      return;
    }
    // PERMISSIVE: the first byte says whether this is TLS.
    socket.once("readable", () => {
      const first = socket.read(1) as Buffer | null;
      if (first === null) {
        connection.close();
        return;
      }
      socket.unshift(first);
      if (first[0] === TLS_HANDSHAKE) this.#tlsServer!.emit("connection", socket);
      else this.#plaintext(socket, connection);
    });
  }

  #track(connection: ProxyConnection): void {
    this.#connections.add(connection);
    connection.onClosed(() => this.#connections.delete(connection));
  }

  #plaintext(socket: Socket, connection: ProxyConnection): void {
    connection.transport = "plaintext";
    if (this.#http) {
      this.#established(connection);
      this.#http.serve(socket);
      return;
    }
    if (!this.#authorize(connection, socket)) return;
    this.#forward(socket, connection);
  }

  async #secured(socket: TLSSocket): Promise<void> {
    const raw = (socket as unknown as { _parent?: Socket })._parent;
    const connection = raw && this.#byRawSocket.get(raw);
    if (!connection || connection.isClosed) {
      socket.destroy();
      return;
    }
    // From now on the TLS socket owns the raw one: destroying both at once frees the handle under
    // TLS (a use-after-free in node:tls), so the connection closes through the TLS socket only.
    connection.replace(raw, socket);
    socket.pause();
    connection.isResumed = socket.isSessionReused();
    if (connection.isResumed) this.context.metrics.resumed.inc({ listener: this.name, direction: "inbound" });
    let peer: VerifiedPeer;
    try {
      // A resumed session carries the leaf alone; it is verified again in full all the same.
      const chain = peerChain(socket);
      peer = await this.workload.verifyPeer(
        connection.isResumed && chain.length === 1
          ? this.workload.verifier.withIntermediates(chain[0])
          : chain,
        "clientAuth",
      );
    } catch (err) {
      this.#refuseUnverified(connection, err as Error);
      return;
    }
    if (connection.isClosed) return;
    connection.peer = peer;
    this.#byRawSocket.set(socket, connection);
    if (this.#http) {
      this.#established(connection);
      this.#http.serve(socket);
      return;
    }
    if (!this.#authorize(connection, socket)) return;
    this.#forward(socket, connection);
  }

  /** TCP mode: the connection is the request. */
  #authorize(connection: ProxyConnection, socket: Socket): boolean {
    const verdict = this.policy.evaluate(this.#policyRequest(connection, socket));
    recordDecision(this.context, {
      listener: this.name,
      direction: "inbound",
      ...verdictFields(verdict),
      ...this.#auditFields(connection),
    });
    if (verdict.decision.allowed) return true;
    this.#count(connection.transport, "denied");
    connection.close("denied");
    return false;
  }

  #policyRequest(connection: ProxyConnection, socket?: Socket): PolicyRequest {
    const id = connection.peer?.id;
    const port = this.#address && "port" in this.#address ? this.#address.port : undefined;
    return {
      peerId: id,
      port,
      attributes: {
        "source.ip": connection.remoteIp,
        "source.principal": id?.toString(),
        "source.namespace": id?.serviceAccount()?.namespace,
        "destination.port": port === undefined ? undefined : String(port),
        "connection.sni": (socket as TLSSocket | undefined)?.servername || undefined,
      },
    };
  }

  #auditFields(connection: ProxyConnection) {
    return {
      peerId: connection.peer?.id.toString(),
      peerSerial: connection.peer?.serialNumber,
      revocation: connection.peer?.revocation,
      source: connection.remoteAddress,
      destination: formatAddress(this.config.forward),
      transport: connection.transport,
      connection: connection.id,
      ...(connection.isResumed ? { resumed: true } : {}),
    };
  }

  #forward(peerSocket: Socket, connection: ProxyConnection): void {
    const forward = this.config.forward;
    const reads = canPoolReads ? PooledReads.forTcp() : undefined;
    const onread = reads?.onread;
    const local = "path" in forward
      ? connect({ path: forward.path, allowHalfOpen: true, onread })
      : connect({ host: forward.host, port: forward.port, allowHalfOpen: true, noDelay: true, onread });
    reads?.attach(local);
    // Before connection.add: its own error handler closes the connection, and this one reports why.
    local.once("error", (err) => {
      if (!local.connecting) return;
      this.#count(connection.transport, "upstream_failed");
      this.context.logger.warn("cannot reach the local service", {
        listener: this.name,
        forward: formatAddress(forward),
        error: err,
      });
    });
    connection.add(local);
    local.once("connect", () => {
      this.#established(connection);
      connection.relay(
        peerSocket,
        local,
        this.context.limits.idleTimeoutSeconds * 1000,
        () => this.#closeConnection(connection, "idle"),
        { local: reads },
      );
    });
    connection.onClosed(() => {
      this.context.metrics.bytes.inc({ listener: this.name, direction: "from_peer" }, local.bytesWritten);
      this.context.metrics.bytes.inc({ listener: this.name, direction: "to_peer" }, local.bytesRead);
    });
  }

  #established(connection: ProxyConnection): void {
    this.#count(connection.transport, "allowed");
    this.context.metrics.establishSeconds.observe({ direction: "inbound" }, connection.established());
  }

  #refuseUnverified(connection: ProxyConnection, err: Error): void {
    recordDecision(this.context, {
      listener: this.name,
      direction: "inbound",
      decision: "deny",
      reason: "unverified-peer",
      error: { code: (err as { code?: string }).code ?? "ERR_UNKNOWN", message: err.message },
      ...this.#auditFields(connection),
    });
    this.#count("mtls", "unverified");
    connection.close("unverified");
  }

  #tlsFailed(err: NodeJS.ErrnoException, socket: TLSSocket): void {
    const raw = (socket as unknown as { _parent?: Socket })._parent;
    const connection = raw && this.#byRawSocket.get(raw);
    if (!connection || connection.isClosed) return;
    connection.replace(raw, socket);
    if (PLAINTEXT_ERRORS.has(err.code ?? "")) {
      recordDecision(this.context, {
        listener: this.name,
        direction: "inbound",
        decision: "deny",
        reason: "plaintext-refused",
        ...this.#auditFields(connection),
        transport: "plaintext",
      });
      this.#count("plaintext", "plaintext_refused");
    } else {
      this.#count("mtls", "handshake_failed");
    }
    connection.close();
  }

  async #recheck(connection: ProxyConnection): Promise<void> {
    if (connection.isClosed) return;
    if (connection.peer) {
      try {
        await this.workload.verifyPeer(connection.peer.chain, "clientAuth");
      } catch (err) {
        const code = (err as { code?: string }).code;
        this.#closeOpen(connection, code === "ERR_CERT_REVOKED" ? "revoked" : "unverified", err as Error);
        return;
      }
    }
    if (connection.isClosed || !connection.peer && connection.transport === "mtls") return;
    // HTTP mode decides each request as it comes, and an upgraded connection (a tunnel) again by
    // the request that opened it; TCP mode decided the connection, and decides it again.
    const tunnel = connection.tunnel;
    if (this.#http && !tunnel) return;
    const verdict = this.policy.evaluate(tunnel?.request ?? this.#policyRequest(connection));
    if (!verdict.decision.allowed) {
      recordDecision(this.context, {
        listener: this.name,
        direction: "inbound",
        ...verdictFields(verdict),
        ...this.#auditFields(connection),
        ...(tunnel ? { method: tunnel.method, path: tunnel.path } : {}),
      });
      this.#closeConnection(connection, "denied");
    }
  }

  #closeOpen(connection: ProxyConnection, reason: CloseReason, err: Error): void {
    if (connection.isClosed) return;
    recordDecision(this.context, {
      listener: this.name,
      direction: "inbound",
      decision: "deny",
      reason: reason === "revoked" ? "revoked-while-open" : "unverified-peer",
      error: { code: (err as { code?: string }).code ?? "ERR_UNKNOWN", message: err.message },
      ...this.#auditFields(connection),
    });
    this.#closeConnection(connection, reason);
  }

  #closeConnection(connection: ProxyConnection, reason: CloseReason): void {
    if (connection.isClosed) return;
    this.context.metrics.closed.inc({ listener: this.name, reason });
    connection.close(reason);
  }

  #count(transport: "mtls" | "plaintext", outcome: string): void {
    this.context.metrics.connections.inc({ listener: this.name, direction: "inbound", transport, outcome });
  }
}
