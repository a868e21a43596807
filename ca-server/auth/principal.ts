/**
 * Who a request comes from, as an authenticator established it. The CA never trusts the
 * identity a CSR claims: it issues only the identities a {@link Principal} may obtain.
 *
 * @module
 */

/** How the caller proved who it is. */
export type AuthenticationMethod = "join-token" | "kubernetes" | "mtls";

/** An authenticated caller. */
export interface Principal {
  /** How the caller authenticated. */
  method: AuthenticationMethod;
  /** The caller's own identity for audit and rate limits: a SPIFFE ID, or `token:<id>`. */
  requester: string;
  /** SPIFFE IDs the caller may obtain certificates for. */
  allowedIds: readonly string[];
  /** Whether the caller may use the administrative API (revocation, tokens). */
  isAdmin: boolean;
  /** For a node agent, its node name. */
  node?: string;
  /**
   * A second, authoritative look for an identity not in `allowedIds` (a node's pod that the
   * CA's cache has not seen yet): true allows it. Bounded and rate-limited by its provider.
   */
  confirmId?: (id: string) => Promise<boolean>;
  /**
   * Called once the request is authorized, just before signing: a single-use token is spent
   * here (atomically, across replicas), so a request refused for a bad CSR does not burn it.
   */
  consume?: () => Promise<void>;
}

/** The credentials a request carries, extracted by the app from its headers and TLS session. */
export interface Credentials {
  /** From `Authorization: Bearer <token>`. */
  bearerToken?: string;
  /** The TLS client's certificate chain (leaf first), as PEM. */
  clientCertificateChainPem?: string;
}

/**
 * Authenticates one kind of credential. Returns `undefined` when the request does not carry
 * that kind (so the next authenticator is tried) and throws a `Problem` when it carries one
 * that is invalid, expired, forged or revoked.
 */
export interface Authenticator {
  /** The kind of credentials it checks, recorded on the principals it answers. */
  readonly method: AuthenticationMethod;
  /** The caller's principal; undefined when `credentials` are not of this kind; a Problem when they are but are bad. */
  authenticate(credentials: Credentials): Promise<Principal | undefined>;
}

/** Where node agents' workloads are: the SPIFFE IDs a node may request besides its own. */
export type NodeWorkloads = (node: string) => Promise<readonly string[]> | readonly string[];

/** Whether `id` runs on `node` right now, asked of the source of truth past any cache. */
export type NodeWorkloadCheck = (node: string, id: string) => Promise<boolean>;

/** Node workloads from a static table (the `nodes` section of the configuration). */
export function staticNodeWorkloads(table: Record<string, readonly string[]>): NodeWorkloads {
  return (node) => Object.hasOwn(table, node) ? table[node] : [];
}
