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

function redact(fields: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(fields)) {
    if (SECRET_FIELD.test(k) && !/^(tokenId|tokenKind)$/.test(k)) out[k] = "[redacted]";
    else if (v instanceof Error) {
      out[k] = { name: v.name, message: v.message, code: (v as { code?: string }).code };
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
