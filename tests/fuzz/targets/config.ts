import { rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { ConfigError, ENV_OVERRIDES, loadConfig } from "../../../ca-server/config.ts";
import { type FuzzTarget, refusalOnly, text } from "../harness.ts";

const isConfigError = (err: unknown) => err instanceof ConfigError;
const ENV_NAMES = Object.keys(ENV_OVERRIDES);

/**
 * The CA server's configuration reader: the first byte picks YAML or JSON and how many
 * `MESHAUTH_*` variables take their values from the input's last lines; the rest is the file.
 * A refusal is a ConfigError.
 */
export const config: FuzzTarget = {
  description: "ca-server loadConfig on arbitrary YAML / JSON files and environment values",
  sync: false,
  maxLength: 16 * 1024,
  async check(data) {
    const mode = data[0] ?? 0;
    const lines = text(data.subarray(1)).split("\n");
    const envCount = Math.min(mode >> 4, lines.length - 1, ENV_NAMES.length);
    const env: Record<string, string> = {};
    for (let i = 0; i < envCount; i++) env[ENV_NAMES[(mode + i) % ENV_NAMES.length]] = lines.pop()!;
    const path = `${tmpdir()}/meshauth-fuzz-config-${process.pid}.${mode & 1 ? "json" : "yaml"}`;
    writeFileSync(path, lines.join("\n"));
    try {
      await loadConfig({ path, env, cwd: "/" });
    } catch (err) {
      refusalOnly(err, isConfigError);
    } finally {
      rmSync(path, { force: true });
    }
  },
};
