/**
 * Name constraints (RFC 5280 4.2.1.10 and 6.1.3(b)-(c)): every name a certificate carries
 * must lie inside every permitted subtree of its type and outside every excluded subtree,
 * for each CA above it on the path. DNS, IP, URI, email and directory names are processed;
 * a constraint on any other name form fails a certificate that carries such a name.
 * @module
 */

import { OID } from "../asn1/oids.ts";
import type { Certificate, GeneralSubtree } from "../x509/certificate.ts";
import { formatIp, type GeneralName } from "../x509/general-name.ts";
import { attributeValues, formatName, type Name, unpreparableValue } from "../x509/name.ts";
import { type VerificationDetails, VerificationError } from "../errors.ts";
import { certificateLabel, certificateSummary } from "./certificate-label.ts";
import { isDnsName } from "./peer-name.ts";

/**
 * Bound on name-by-subtree comparisons for one verification, over every path it tries (Go's
 * crypto/x509 uses the same order of magnitude per certificate): past it the certificate is
 * refused rather than risk quadratic work. A directoryName subtree costs one comparison per
 * RDN it holds, the work comparing a name to it takes.
 */
const MAX_COMPARISONS = 1 << 18;

/** The name constraint comparisons one verifyChain call may still spend, over all its paths. */
export class ComparisonBudget {
  remaining = MAX_COMPARISONS;
}

type NameForm = "dns" | "ip" | "uri" | "email" | "directory" | "other";

/** A subtree base with its text lowercased once, and an email mailbox split at its "@". */
interface Subtree {
  base: GeneralName;
  /** DNS name, URI host or email host or domain, lowercased. */
  host: string;
  /** The local part of an email mailbox constraint (unquoted), compared exactly. */
  local?: string;
}

/** The subtrees of one name form, and the comparisons a name of that form costs against them. */
interface SubtreeGroup {
  permitted: Subtree[];
  excluded: Subtree[];
  cost: number;
}

/** The constraints of one CA, as they apply to the certificates below it, grouped by name form. */
export interface ConstraintSet {
  issuer: Certificate;
  byForm: Map<NameForm, SubtreeGroup>;
}

/** A name of a certificate, validated and lowercased once for all the subtrees it meets. */
interface CheckedName {
  name: GeneralName;
  form: NameForm;
  /** DNS name, URI host or email domain, lowercased. */
  host: string;
  /** The local part of an email address. */
  local?: string;
  /** Why the name cannot be checked against a constraint of its form. */
  problem?: string;
}

/**
 * Checks the names of `cert` (at `index` on the path) against each constraint set of the
 * CAs above it, spending comparisons from `budget`. `isLeaf` marks the end-entity, whose
 * subject common names count as DNS names when it has no DNS SAN.
 */
export function checkNameConstraints(
  cert: Certificate,
  index: number,
  constraints: readonly ConstraintSet[],
  isLeaf: boolean,
  budget: ComparisonBudget = new ComparisonBudget(),
): void {
  if (constraints.length === 0) return;
  const names = namesOf(cert, isLeaf).map(checkName);
  let comparisons = 0;
  for (const set of constraints) {
    for (const name of names) {
      comparisons += set.byForm.get(name.form)?.cost ?? 0;
    }
  }
  if (comparisons > budget.remaining) {
    throw refuse(
      cert,
      index,
      `${comparisons} name constraint comparisons exceed the ${budget.remaining} left of the ` +
        `limit of ${MAX_COMPARISONS} per verification`,
      { limit: budget.remaining, count: comparisons },
    );
  }
  budget.remaining -= comparisons;
  for (const set of constraints) {
    for (const name of names) {
      const subtrees = set.byForm.get(name.form);
      if (!subtrees) continue;
      if (name.form === "other") {
        throw refuse(
          cert,
          index,
          `${certificateLabel(set.issuer)} constrains a name form the validator does not process`,
          { issuer: certificateSummary(set.issuer), constrainedName: nameText(name.name) },
        );
      }
      const compared = (constraint: string) => ({
        issuer: certificateSummary(set.issuer),
        constrainedName: nameText(name.name),
        constraint,
      });
      const listed = (kind: "permitted" | "excluded") =>
        subtrees[kind].length ? [`${kind} ${subtrees[kind].map((t) => nameText(t.base)).join(", ")}`] : [];
      // A name that cannot be compared fails against every subtree of its form.
      if (name.problem) {
        throw refuse(
          cert,
          index,
          name.problem,
          compared([...listed("permitted"), ...listed("excluded")].join("; ")),
        );
      }
      for (const subtree of subtrees.excluded) {
        if (within(name, subtree, "excluded")) {
          throw refuse(
            cert,
            index,
            `${show(name.name)} is excluded by ${certificateLabel(set.issuer)}`,
            compared(`excluded ${nameText(subtree.base)}`),
          );
        }
      }
      if (subtrees.permitted.length && !permittedBy(name, subtrees.permitted)) {
        throw refuse(
          cert,
          index,
          `${show(name.name)} is outside the names permitted by ${certificateLabel(set.issuer)}`,
          compared(listed("permitted")[0]),
        );
      }
    }
  }
}

/** The constraints a CA certificate adds, after checking each subtree is well-formed. */
export function constraintSetOf(cert: Certificate, index: number): ConstraintSet | undefined {
  const nc = cert.nameConstraints;
  if (!nc) return undefined;
  for (const subtree of [...(nc.permitted ?? []), ...(nc.excluded ?? [])]) {
    // RFC 5280 4.2.1.10: minimum MUST be zero and maximum MUST be absent.
    if (subtree.minimum !== 0 || subtree.maximum !== undefined) {
      throw refuse(cert, index, "a GeneralSubtree with minimum or maximum set", {
        constraint: nameText(subtree.base),
      });
    }
    const why = malformedConstraint(subtree.base);
    if (why) {
      throw refuse(cert, index, `malformed ${subtree.base.type} constraint: ${why}`, {
        constraint: nameText(subtree.base),
      });
    }
  }
  const byForm: ConstraintSet["byForm"] = new Map();
  const add = (list: GeneralSubtree[] | undefined, kind: "permitted" | "excluded") => {
    for (const { base } of list ?? []) {
      const form = formOf(base);
      let group = byForm.get(form);
      if (!group) byForm.set(form, group = { permitted: [], excluded: [], cost: 0 });
      group[kind].push(subtreeOf(base));
      group.cost += base.type === "directory" ? Math.max(1, base.value.rdns.length) : 1;
    }
  };
  add(nc.permitted, "permitted");
  add(nc.excluded, "excluded");
  return { issuer: cert, byForm };
}

function subtreeOf(base: GeneralName): Subtree {
  if (base.type === "email" && base.value.includes("@")) {
    const mailbox = parseMailbox(base.value)!;
    return { base, local: mailbox.local, host: mailbox.domain.toLowerCase() };
  }
  const text = base.type === "dns" || base.type === "uri" || base.type === "email" ? base.value : "";
  return { base, host: text.toLowerCase() };
}

function malformedConstraint(base: GeneralName): string | undefined {
  switch (base.type) {
    case "dns":
      // RFC 5280: "host.example.com"; no wildcards, no leading period (that form is URI-only).
      if (base.value !== "" && !isDnsName(base.value)) return JSON.stringify(base.value);
      return undefined;
    case "ip": {
      if (base.value.length !== 8 && base.value.length !== 32) return `${base.value.length} octets`;
      const mask = base.value.subarray(base.value.length / 2);
      let seenZero = false;
      for (const byte of mask) {
        for (let bit = 7; bit >= 0; bit--) {
          const one = (byte >> bit) & 1;
          if (one && seenZero) return "mask is not a CIDR prefix";
          if (!one) seenZero = true;
        }
      }
      return undefined;
    }
    case "uri": {
      const host = base.value.startsWith(".") ? base.value.slice(1) : base.value;
      return isDnsName(host) ? undefined : JSON.stringify(base.value);
    }
    case "email": {
      // A mailbox ("user@host"), a host, or a domain below which any host matches (".host").
      if (base.value === "") return undefined;
      if (base.value.includes("@")) return parseMailbox(base.value) ? undefined : JSON.stringify(base.value);
      return isDnsName(base.value.replace(/^\./, "")) ? undefined : JSON.stringify(base.value);
    }
    case "directory": {
      const unpreparable = unpreparableValue(base.value);
      return unpreparable && `a value holds ${unpreparable.codePoint}, which RFC 4518 prohibits`;
    }
    default:
      return undefined;
  }
}

function formOf(name: GeneralName): NameForm {
  return name.type === "other" ? "other" : name.type;
}

/** The names constraints apply to: SANs, the subject DN, subject email addresses. */
function namesOf(cert: Certificate, isLeaf: boolean): GeneralName[] {
  const sans = cert.subjectAltName ?? [];
  const names: GeneralName[] = [...sans];
  if (cert.subject.rdns.length > 0) names.push({ type: "directory", value: cert.subject });
  // RFC 5280 4.2.1.10: emailAddress attributes in the subject are checked as rfc822Names.
  for (const email of attributeValues(cert.subject, OID.emailAddress)) {
    names.push({ type: "email", value: email });
  }
  if (isLeaf && !sans.some((n) => n.type === "dns")) {
    for (const cn of attributeValues(cert.subject, OID.commonName)) {
      if (isDnsName(cn, true)) names.push({ type: "dns", value: cn });
    }
  }
  return names;
}

/** Validates and lowercases a name once; a name that cannot be compared carries its problem. */
function checkName(name: GeneralName): CheckedName {
  const form = formOf(name);
  switch (name.type) {
    case "dns":
      return isDnsName(name.value, true)
        ? { name, form, host: name.value.toLowerCase() }
        : { name, form, host: "", problem: `malformed DNS name ${JSON.stringify(name.value)}` };
    case "uri": {
      const host = uriHost(name.value);
      if (host !== undefined) return { name, form, host };
      const problem = `URI ${JSON.stringify(name.value)} has no DNS host to check against URI constraints`;
      return { name, form, host: "", problem };
    }
    case "email": {
      const mailbox = parseMailbox(name.value);
      if (!mailbox) {
        const problem = `email ${JSON.stringify(name.value)} is not a mailbox (RFC 5321 4.1.2)`;
        return { name, form, host: "", problem };
      }
      return { name, form, host: mailbox.domain.toLowerCase(), local: mailbox.local };
    }
    case "directory": {
      // A value RFC 4518 cannot prepare cannot be compared with a constraint's values.
      const unpreparable = unpreparableValue(name.value);
      if (!unpreparable) return { name, form, host: "" };
      const problem = `subject distinguished name holds ${unpreparable.codePoint}, which RFC 4518 ` +
        "prohibits in a value compared with directoryName constraints";
      return { name, form, host: "", problem };
    }
    default:
      return { name, form, host: "" };
  }
}

function permittedBy(name: CheckedName, permitted: readonly Subtree[]): boolean {
  for (const subtree of permitted) {
    if (within(name, subtree, "permitted")) return true;
  }
  return false;
}

function within(checked: CheckedName, subtree: Subtree, kind: "permitted" | "excluded"): boolean {
  const { name } = checked;
  const { base } = subtree;
  if (base.type === "other") return false;
  switch (name.type) {
    case "dns":
      return dnsWithin(checked.host, subtree.host, kind);
    case "ip": {
      const net = base.value as Uint8Array;
      if (net.length !== name.value.length * 2) return false;
      const half = name.value.length;
      for (let i = 0; i < half; i++) {
        if ((name.value[i] & net[half + i]) !== (net[i] & net[half + i])) return false;
      }
      return true;
    }
    case "email":
      // A whole mailbox: local part compared exactly (asterisks are literal), host case-folded.
      if (subtree.local !== undefined) {
        return subtree.local === checked.local && subtree.host === checked.host;
      }
      return subtree.host.startsWith(".")
        ? checked.host.endsWith(subtree.host)
        : checked.host === subtree.host;
    case "uri":
      return subtree.host.startsWith(".")
        ? checked.host.endsWith(subtree.host)
        : checked.host === subtree.host;
    case "directory":
      return directoryWithin(name.value, base.value as Name);
    default:
      return false;
  }
}

/**
 * DNS subtree membership. A wildcard SAN `*.S` stands for every name one label below S
 * (CVE-2025-61727): it is permitted only when all of them are, and excluded when any is.
 */
function dnsWithin(name: string, constraint: string, kind: "permitted" | "excluded"): boolean {
  if (!name.startsWith("*.")) return dnsInside(name, constraint);
  const base = name.slice(2);
  if (dnsInside(base, constraint)) return true;
  if (kind === "permitted") return false;
  // Excluded: does the wildcard produce the constraint itself (one label above S)?
  if (!constraint.endsWith(`.${base}`)) return false;
  const label = constraint.slice(0, -(base.length + 1));
  return label.length > 0 && !label.includes(".");
}

/** `name` is `constraint` or below it; the empty constraint holds every name. */
function dnsInside(name: string, constraint: string): boolean {
  if (constraint === "" || name === constraint) return true;
  const dot = name.length - constraint.length - 1;
  return dot > 0 && name.charCodeAt(dot) === 0x2e && name.endsWith(constraint);
}

/**
 * The host of a URI's authority (RFC 3986 3.2), lowercased, when it is a DNS name, else
 * undefined so the URI is refused rather than compared. Anything URL parsers read in
 * different ways fails: WHATWG URL takes "https://good.com\@evil.com/" as host good.com,
 * and "good%2ecom" as good.com. IP literals never match a domain constraint (Go refuses
 * them as well).
 */
function uriHost(uri: string): string | undefined {
  const scheme = /^[a-z][a-z0-9+.-]*:\/\//i.exec(uri);
  // Printable ASCII only: no whitespace, control characters or backslashes anywhere.
  if (!scheme || !/^[\x21-\x7e]*$/.test(uri) || uri.includes("\\")) return undefined;
  const rest = uri.slice(scheme[0].length);
  const end = rest.search(/[/?#]/);
  const authority = end === -1 ? rest : rest.slice(0, end);
  const at = authority.indexOf("@");
  if (at !== authority.lastIndexOf("@")) return undefined;
  const userinfo = authority.slice(0, Math.max(at, 0));
  if (!/^(?:[a-z0-9._~!$&'()*+,;=:-]|%[0-9a-f]{2})*$/i.test(userinfo)) return undefined;
  const hostAndPort = authority.slice(at + 1);
  const colon = hostAndPort.indexOf(":");
  const host = colon === -1 ? hostAndPort : hostAndPort.slice(0, colon);
  const port = colon === -1 ? "" : hostAndPort.slice(colon + 1);
  if (!/^[0-9]*$/.test(port) || !isDnsName(host)) return undefined;
  return host.toLowerCase();
}

/** RFC 5280 7.1: the constraint's RDNs are a prefix of the name's, compared RDN by RDN. */
function directoryWithin(name: Name, constraint: Name): boolean {
  if (constraint.rdnKeys.length > name.rdnKeys.length) return false;
  return constraint.rdnKeys.every((key, i) => key === name.rdnKeys[i]);
}

/** RFC 5322 3.2.3 atext, the characters of an unquoted local part's atoms. */
const ATOM = "[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+";
const DOT_STRING = new RegExp(`^${ATOM}(?:\\.${ATOM})*$`);
/** RFC 5321 4.1.2 Quoted-string: qtextSMTP and quoted pairs, between double quotes. */
const QUOTED_STRING = /^"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"$/;

/**
 * An rfc822Name as RFC 5280 4.2.1.6 defines it, a Mailbox of RFC 5321 4.1.2: a Dot-string or
 * Quoted-string local part (returned unquoted, so `"x"@host` and `x@host` are one mailbox),
 * "@", and a DNS domain. Anything else is undefined: `x@evil.com@good.com`, spaces, control
 * characters and empty parts read one way by a suffix comparison and another by mail systems.
 * An absolute ("good.com.") or empty-label ("good..com") domain is refused too; Go refuses
 * these as well. Address literals are not DNS names and are refused.
 */
function parseMailbox(value: string): { local: string; domain: string } | undefined {
  const at = value.lastIndexOf("@");
  if (at <= 0) return undefined;
  const local = value.slice(0, at);
  const domain = value.slice(at + 1);
  if (!isDnsName(domain)) return undefined;
  if (DOT_STRING.test(local)) return { local, domain };
  if (QUOTED_STRING.test(local)) return { local: local.slice(1, -1).replace(/\\(.)/g, "$1"), domain };
  return undefined;
}

function show(name: GeneralName): string {
  switch (name.type) {
    case "directory":
      return "subject distinguished name";
    case "ip":
      return `IP address ${formatIp(name.value)}`;
    case "other":
      return "an otherName";
    default:
      return `${name.type} name ${JSON.stringify(name.value)}`;
  }
}

/**
 * A name or subtree base as the error's `constrainedName` and `constraint` give it, in
 * OpenSSL's notation: `DNS:a.example`, `IP:10.0.0.0/8`, `URI:...`, `email:...`, `DirName:...`.
 */
function nameText(name: GeneralName): string {
  switch (name.type) {
    case "dns":
      return `DNS:${name.value}`;
    case "uri":
      return `URI:${name.value}`;
    case "email":
      return `email:${name.value}`;
    case "directory":
      return `DirName:${formatName(name.value)}`;
    case "ip": {
      // A constraint holds an address and a mask of the same length; a name only an address.
      if (name.value.length !== 8 && name.value.length !== 32) return `IP:${formatIp(name.value)}`;
      const half = name.value.length / 2;
      const prefix = name.value.subarray(half).reduce((bits, byte) => bits + popCount(byte), 0);
      return `IP:${formatIp(name.value.subarray(0, half))}/${prefix}`;
    }
    default:
      return `othername:${name.oid ?? `[${name.tag}]`}`;
  }
}

function popCount(byte: number): number {
  let count = 0;
  for (let b = byte; b; b >>= 1) count += b & 1;
  return count;
}

function refuse(
  cert: Certificate,
  index: number,
  why: string,
  details: VerificationDetails = {},
): VerificationError {
  return new VerificationError("ERR_NAME_CONSTRAINTS", `${certificateLabel(cert)}: ${why}`, index, {
    rule: "name-constraints",
    certificate: certificateSummary(cert),
    ...details,
  });
}
