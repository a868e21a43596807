/**
 * Structured JSON logs: one object per line with `time`, `level`, `msg` and fields. Secrets
 * never reach a log line: fields whose names look like secrets are replaced before writing.
 *
 * @example
 * ```ts
 * import { jsonLogger } from "meshauth/ca-server";
 * const log = jsonLogger({ level: "info" });
 * log.info("listening", { port: 8443 });
 * ```
 * @module
 */

/** Log levels, most verbose first. */
export type LogLevel = "debug" | "info" | "warn" | "error";

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/** What the server logs through. */
export interface Logger {
  /** Logs detail useful while debugging. */
  debug(msg: string, fields?: Record<string, unknown>): void;
  /** Logs a normal event. */
  info(msg: string, fields?: Record<string, unknown>): void;
  /** Logs something wrong that the process survives. */
  warn(msg: string, fields?: Record<string, unknown>): void;
  /** Logs a failure. */
  error(msg: string, fields?: Record<string, unknown>): void;
}

// Defence in depth: a field named like a credential is never written, whatever its value.
const SECRET_FIELD = /(token|secret|password|private|key_?pem|authorization)/i;

/**
 * The stable code `err` carries, if any: a meshauth error's (`ERR_PROXY_POLICY`, listed in
 * docs/errors.md), Node's (`ERR_INVALID_ARG_TYPE`) or a system error's (`EROFS`).
 */
export function codeOf(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | undefined)?.code;
  return typeof code === "string" && /^E[A-Z0-9_]{1,63}$/.test(code) ? code : undefined;
}

/**
 * An error's message with its code in front (`ERR_PROXY_POLICY: /etc/p.yaml: ...`), so that what a
 * user sees can be looked up in docs/errors.md; a system error's message starts with its code already.
 */
export function errorLine(err: unknown): string {
  const message = String((err as Error | undefined)?.message ?? err);
  const code = codeOf(err);
  return code && !message.startsWith(`${code}:`) ? `${code}: ${message}` : message;
}

function messageOfThrown(v: object): string {
  const message = (v as { message?: unknown }).message;
  return typeof message === "string" ? message : "[object without a message]";
}

function redact(fields: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(fields)) {
    if (SECRET_FIELD.test(k) && !/^(tokenId|tokenKind)$/.test(k)) out[k] = "[redacted]";
    else if (v instanceof Error || (k === "error" && typeof v === "object" && v !== null)) {
      // An error is its message, and its code beside it (`code` for the field `error`, else
      // `<field>Code`) where a log query can select it; a field of that name given is kept.
      // Something else thrown is too (`error: err` in a catch), never the whole object: it may
      // hold what must not be written, or refer to itself.
      out[k] = messageOfThrown(v);
      const code = codeOf(v);
      const codeField = k === "error" ? "code" : `${k}Code`;
      if (code && !(codeField in fields)) out[codeField] = code;
    } else out[k] = v;
  }
  return out;
}

/** A logger writing JSON lines through `write` (console.log by default) at or above `level`. */
export function jsonLogger(options: { level?: LogLevel; write?: (line: string) => void } = {}): Logger {
  const min = RANK[options.level ?? "info"];
  const write = options.write ?? ((line: string) => console.log(line));
  const at = (level: LogLevel) => (msg: string, fields: Record<string, unknown> = {}) => {
    if (RANK[level] < min) return;
    write(JSON.stringify({ time: new Date().toISOString(), level, msg, ...redact(fields) }));
  };
  return { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
}

/** A logger that drops everything. */
export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} };
