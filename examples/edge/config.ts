/**
 * The edge app's settings from environment variables (or a Worker's `env`), shared by the
 * entries for Deno, Bun and Workers:
 *
 * - `MESHAUTH_TRUST_DOMAIN` (required): the trust domain whose callers are accepted.
 * - `MESHAUTH_BUNDLE_URL` (required): the CA's bundle endpoint, e.g. `https://ca.example.org:8443/v1/bundle`.
 * - `MESHAUTH_POLICIES`: JSON array of authorization policies. Default: members of the trust
 *   domain may `GET /whoami`, nothing else.
 * - `MESHAUTH_CLIENT_CERT_HEADER`: `x-forwarded-client-cert` (default, Envoy's format) or
 *   another header name, which is then read as nginx's `$ssl_client_escaped_cert`.
 * @module
 */

import { authorizeMemberOf, TrustDomain } from "../../mod.ts";
import type { EdgeAppOptions } from "./app.ts";
import { BundleCache, bundleEndpoint, type FetchLike } from "./bundle-cache.ts";
import { ENVOY_XFCC } from "./client-cert.ts";

/** Environment variables as the runtimes give them. */
export type EdgeEnvironment = Record<string, string | undefined>;

/** Builds {@link EdgeAppOptions} from the environment; `fetch` reaches the CA (a service binding on Workers). */
export function edgeOptionsFromEnv(env: EdgeEnvironment, fetch?: FetchLike): EdgeAppOptions {
  const trustDomainName = env.MESHAUTH_TRUST_DOMAIN;
  const bundleUrl = env.MESHAUTH_BUNDLE_URL;
  if (!trustDomainName || !bundleUrl) {
    throw new Error("set MESHAUTH_TRUST_DOMAIN and MESHAUTH_BUNDLE_URL");
  }
  const trustDomain = TrustDomain.parse(trustDomainName);
  const policies = env.MESHAUTH_POLICIES ? JSON.parse(env.MESHAUTH_POLICIES) : [{
    name: "members-may-ask-who-they-are",
    action: "ALLOW",
    rules: [{
      from: [{ source: { principals: [`spiffe://${trustDomain.name}/*`] } }],
      to: [{ operation: { methods: ["GET"], paths: ["/whoami"] } }],
    }],
  }];
  const headerName = env.MESHAUTH_CLIENT_CERT_HEADER?.toLowerCase();
  return {
    bundles: new BundleCache(bundleEndpoint({ trustDomain, url: bundleUrl, fetch })),
    authorize: authorizeMemberOf(trustDomain),
    policies,
    clientCertHeader: !headerName || headerName === ENVOY_XFCC.name
      ? ENVOY_XFCC
      : { name: headerName, format: "escaped-pem" },
  };
}
