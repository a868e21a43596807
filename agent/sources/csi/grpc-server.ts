/**
 * The CSI plugin's gRPC server on a Unix socket, on `@grpc/grpc-js`: an optional peer
 * dependency, loaded on first use (only an agent that serves CSI volumes needs it), like
 * `@kubernetes/client-node`. The Identity and Node services are built from the schemas of
 * `messages.ts`; a handler answers a message or throws {@link CsiRpcError} with the gRPC
 * status the CSI specification names for the case. Only the RPCs registered are served: the
 * others answer `UNIMPLEMENTED`, as the specification asks of a plugin without them.
 *
 * @module
 */

import { promises as fs } from "node:fs";
import { dirname } from "node:path";
import type { Server, ServiceDefinition } from "@grpc/grpc-js";
import { MeshAuthError } from "../../../mod.ts";
import type { Logger } from "../../../internal/mod.ts";
import { CSI_METHODS } from "./messages.ts";
import { decodeMessage, encodeMessage, type Message } from "./protobuf.ts";

/** `@grpc/grpc-js` is missing: it is an optional peer dependency, for the CSI node plugin only. */
export class GrpcMissing extends MeshAuthError {
  /** Stable code of this class: `ERR_GRPC_MISSING`. */
  static override code: string = "ERR_GRPC_MISSING";
  /** `options.cause` keeps the import's error. */
  constructor(options?: ErrorOptions) {
    super(
      "kubernetes.csi needs the package @grpc/grpc-js 1.14, an optional peer dependency of meshauth: " +
        "npm install @grpc/grpc-js@~1.14.7",
      options,
    );
    this.name = "GrpcMissing";
  }
}

let grpcModule: Promise<typeof import("@grpc/grpc-js")> | undefined;

/**
 * Loads `@grpc/grpc-js` on first use. Not exported: its type names the package, which a user
 * without it could not resolve in meshauth's declarations.
 */
function loadGrpc(): Promise<typeof import("@grpc/grpc-js")> {
  grpcModule ??= import("@grpc/grpc-js").catch((cause) => {
    grpcModule = undefined;
    throw new GrpcMissing({ cause });
  });
  return grpcModule;
}

/** gRPC status codes the CSI specification uses (grpc/status.proto). */
export const GrpcStatus = {
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  INTERNAL: 13,
  UNAVAILABLE: 14,
} as const;

/** A refusal of one RPC, answered to the kubelet as the gRPC status `status` with this message. */
export class CsiRpcError extends MeshAuthError {
  /** Stable code of this class: `ERR_CSI_RPC`. */
  static override code: string = "ERR_CSI_RPC";
  override code: string = CsiRpcError.code;
  /** `status` is the gRPC status code (`GrpcStatus`); the message says what did not match. */
  constructor(readonly status: number, message: string) {
    super(message);
    this.name = "CsiRpcError";
  }
}

type Service = keyof typeof CSI_METHODS;
type Method<S extends Service> = keyof typeof CSI_METHODS[S];

/** What each RPC does with its decoded request. */
export type CsiHandlers = {
  [S in Service]: { [M in Method<S>]: (request: Message) => Promise<Message> };
};

/** The server, listening. */
export interface CsiServer {
  socket: string;
  close(): Promise<void>;
}

/** Largest request accepted: CSI limits each map to 4 KiB and a string to 128 bytes. */
const MAX_MESSAGE_BYTES = 256 * 1024;

function definitionOf(service: Service): ServiceDefinition {
  const methods = CSI_METHODS[service] as Record<
    string,
    readonly [typeof CSI_METHODS.Node.NodeGetInfo[0], typeof CSI_METHODS.Node.NodeGetInfo[1]]
  >;
  const definition: Record<string, unknown> = {};
  for (const [name, [request, response]] of Object.entries(methods)) {
    definition[name] = {
      path: `/csi.v1.${service}/${name}`,
      requestStream: false,
      responseStream: false,
      requestSerialize: (message: Message) => Buffer.from(encodeMessage(request, message)),
      requestDeserialize: (bytes: Buffer) => decodeMessage(request, bytes),
      responseSerialize: (message: Message) => Buffer.from(encodeMessage(response, message)),
      responseDeserialize: (bytes: Buffer) => decodeMessage(response, bytes),
      originalName: name[0].toLowerCase() + name.slice(1),
    };
  }
  return definition as ServiceDefinition;
}

/**
 * Serves `handlers` on the Unix socket `socket` (made 0600: only root, the kubelet and the
 * registrar, may call it). A stale socket of an earlier run is replaced; any other file there
 * is refused.
 */
export async function startCsiServer(
  socket: string,
  handlers: CsiHandlers,
  logger: Logger,
): Promise<CsiServer> {
  const grpc = await loadGrpc();
  await fs.mkdir(dirname(socket), { recursive: true, mode: 0o750 });
  const existing = await fs.lstat(socket).catch(() => undefined);
  if (existing) {
    if (!existing.isSocket()) throw new Error(`${socket} exists and is not a socket; refusing to replace it`);
    await fs.unlink(socket);
  }
  const server: Server = new grpc.Server({
    "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
    "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
    "grpc.max_concurrent_streams": 64,
  });
  for (const service of Object.keys(CSI_METHODS) as Service[]) {
    const implementation: Record<string, unknown> = {};
    for (
      const [name, handle] of Object.entries(
        handlers[service] as Record<string, (r: Message) => Promise<Message>>,
      )
    ) {
      implementation[name] = (
        call: { request: Message },
        callback: (error: { code: number; details: string } | null, value?: Message) => void,
      ) => {
        const started = performance.now();
        handle(call.request).then(
          (answer) => callback(null, answer),
          (err) => {
            const status = err instanceof CsiRpcError ? err.status : GrpcStatus.INTERNAL;
            const details = String((err as Error)?.message ?? err).split("\n")[0];
            if (!(err instanceof CsiRpcError)) {
              logger.error("CSI call failed", { method: name, error: details });
            }
            callback({ code: status, details });
          },
        ).finally(() => {
          logger.debug("CSI call", { method: name, seconds: (performance.now() - started) / 1000 });
        });
      };
    }
    server.addService(definitionOf(service), implementation as never);
  }
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(
      `unix://${socket}`,
      grpc.ServerCredentials.createInsecure(),
      (err) => err ? reject(err) : resolve(),
    )
  );
  await fs.chmod(socket, 0o600);
  return {
    socket,
    close: () =>
      new Promise<void>((resolve) => {
        const timer = setTimeout(() => server.forceShutdown(), 5000);
        server.tryShutdown(() => {
          clearTimeout(timer);
          void fs.unlink(socket).catch(() => {}).then(() => resolve());
        });
      }),
  };
}
