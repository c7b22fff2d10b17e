/**
 * Build-time inputs of `deno task compile`: the host and path lists that widen a binary's
 * permission scope, and deno.json's `unstable` features. The rules themselves live in
 * lib/config/permissions.ts, shared with `deno task start`.
 */

/** deno.json's `unstable` features as flags (`--unstable-net` for SO_REUSEPORT with workers). */
export async function readUnstableFlags(
  configPath = new URL("../deno.json", import.meta.url),
): Promise<string[]> {
  const config = JSON.parse(await Deno.readTextFile(configPath));
  const features: unknown = config?.unstable ?? [];
  if (!Array.isArray(features)) throw new Error(`deno.json "unstable" must be a list`);
  return features.map((feature) => `--unstable-${feature}`);
}

/** Splits a comma-separated host list, refusing ports and schemes (hosts are scoped, not ports). */
export function parseHostList(name: string, raw: string | undefined): string[] {
  const hosts = splitList(raw);
  for (const host of hosts) {
    if (!/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)$/.test(host)) {
      throw new Error(
        `${name} must be a comma-separated list of host names or IPs without ports: current value is "${raw}"`,
      );
    }
  }
  return hosts;
}

/** Splits a comma-separated list of files or directories (GATEWAY_READ_PATHS). */
export function parsePathList(name: string, raw: string | undefined): string[] {
  const paths = splitList(raw);
  for (const path of paths) {
    if (/[\0\n]/.test(path)) {
      throw new Error(
        `${name} must be a comma-separated list of paths: current value is "${raw}"`,
      );
    }
  }
  return paths;
}

function splitList(raw: string | undefined): string[] {
  if (raw === undefined || raw.trim() === "") return [];
  return raw.split(",").map((entry) => entry.trim()).filter((entry) => entry !== "");
}
