/** The NATS connection: connect with retries, permission errors told apart. */
import { connect, type NatsConnection } from "@nats-io/transport-deno";
import type { Logger } from "../log.ts";
import { delay, errorMessage } from "../util.ts";

/** Raised when NATS cannot be used at startup; the message says what to do. */
export class NatsUnavailableError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "NatsUnavailableError";
  }
}

export interface BusOptions {
  /** Seed servers, `host:port` or `nats://host:port`. */
  readonly servers: readonly string[];
  /** How long startup keeps retrying an unreachable server. */
  readonly connectTimeoutMs: number;
  /** Name shown by the NATS server for this connection. */
  readonly name: string;
  readonly logger: Logger;
}

/**
 * Connects to NATS, retrying until `connectTimeoutMs` has passed. Host names are not resolved
 * by the client so that Deno's `--allow-net` host scoping applies to the names configured.
 */
export async function connectNats(options: BusOptions): Promise<NatsConnection> {
  const deadline = Date.now() + options.connectTimeoutMs;
  let attempt = 0;
  while (true) {
    attempt++;
    try {
      return await connect({
        servers: [...options.servers],
        name: options.name,
        // Connect to the configured names, so permission scoping by host holds.
        resolve: false,
        // Members a cluster advertises are outside a scoped binary's allow list; the
        // configured seed list is the whole cluster we use (README "Clusters").
        ignoreClusterUpdates: true,
        maxReconnectAttempts: -1,
        reconnectTimeWait: 250,
        reconnectJitter: 250,
        timeout: Math.min(2_000, Math.max(100, deadline - Date.now())),
      });
    } catch (err) {
      if (isPermissionError(err)) throw err;
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new NatsUnavailableError(
          `Cannot connect to NATS at ${
            options.servers.join(",")
          } after ${attempt} attempts in ${options.connectTimeoutMs} ms (GATEWAY_NATS_CONNECT_TIMEOUT_MS): ${
            errorMessage(err)
          }`,
          { cause: err },
        );
      }
      if (attempt === 1) {
        options.logger.warn("nats not reachable yet, retrying", {
          servers: options.servers.join(","),
          error: errorMessage(err),
          retry_for_ms: left,
        });
      }
      await delay(Math.min(250, left));
    }
  }
}

/** Whether an error comes from Deno's permission checks. */
export function isPermissionError(err: unknown): boolean {
  return err instanceof Deno.errors.NotCapable || err instanceof Deno.errors.PermissionDenied;
}
