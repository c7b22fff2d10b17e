/**
 * Turns deno.json's `gateway` permission set — the one place the runtime flags live — into
 * command-line flags, optionally widened by build-time hosts for `deno compile`.
 */

export interface PermissionSet {
  readonly net: readonly string[];
  readonly env: readonly string[];
  readonly read: readonly string[];
}

export interface Widening {
  /** Extra NATS hosts the binary may reach (host names or IPs, any port). */
  readonly natsHosts?: readonly string[];
  /** Extra listen addresses the binary may bind. */
  readonly listenHosts?: readonly string[];
}

export async function readPermissionSet(
  configPath = new URL("../deno.json", import.meta.url),
): Promise<PermissionSet> {
  const config = JSON.parse(await Deno.readTextFile(configPath));
  const set = config?.permissions?.gateway;
  if (!set || !Array.isArray(set.net) || !Array.isArray(set.env) || !Array.isArray(set.read)) {
    throw new Error(`deno.json has no complete "permissions.gateway" set (net, env, read)`);
  }
  return set;
}

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
  if (raw === undefined || raw.trim() === "") return [];
  const hosts = raw.split(",").map((h) => h.trim()).filter((h) => h !== "");
  for (const host of hosts) {
    if (!/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)$/.test(host)) {
      throw new Error(
        `${name} must be a comma-separated list of host names or IPs without ports: current value is "${raw}"`,
      );
    }
  }
  return hosts;
}

/** The flags equivalent to `-P=gateway`, plus any widening. */
export function permissionFlags(set: PermissionSet, widening: Widening = {}): string[] {
  const net = [
    ...new Set([...set.net, ...(widening.natsHosts ?? []), ...(widening.listenHosts ?? [])]),
  ];
  return [
    `--allow-net=${net.join(",")}`,
    `--allow-env=${set.env.join(",")}`,
    `--allow-read=${set.read.join(",")}`,
  ];
}
