/** The configured ports, checked free before anything else starts. */
import type { Config } from "../config/config.ts";

/**
 * Binds and releases each configured port, so a taken one is reported with its address before
 * anything else happens (port 0, any free port, cannot be taken). The bind is without
 * SO_REUSEPORT, so it fails on a port another gateway's workers share too: workers listen with
 * it, and would otherwise join that gateway's without a word.
 */
export function checkPortsFree(config: Config): void {
  const ports: [string, string, number][] = [[
    "GATEWAY_HOST/GATEWAY_PORT",
    config.host,
    config.port,
  ]];
  if (config.adminPort > 0) {
    ports.push(["GATEWAY_ADMIN_PORT", config.adminHost, config.adminPort]);
  }
  for (const [names, hostname, port] of ports) {
    if (port === 0) continue;
    try {
      Deno.listen({ hostname, port }).close();
    } catch (err) {
      if (!(err instanceof Deno.errors.AddrInUse)) throw err;
      throw new AddressInUseError(
        `${hostname}:${port} (${names}) is already in use: stop what listens there or choose another port`,
        { cause: err },
      );
    }
  }
}

/** The listen address is taken by another process. */
export class AddressInUseError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "AddressInUseError";
  }
}
