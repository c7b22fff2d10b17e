/**
 * The NATS connection: credentials and TLS files read once at startup (./credentials.ts),
 * connect with retries, and refusals (login, TLS, permissions) told apart from an unreachable
 * server (./refusal.ts).
 */
import type { ConnectionOptions, NatsConnection } from "@nats-io/nats-core";
import type { Logger } from "../observe/log.ts";
import { redactUrl } from "../config/redact.ts";
import { delay, errorMessage } from "../util.ts";
import { loadLogin, loadTls, type Login, type NatsCredentials, type Tls } from "./credentials.ts";
import { isPermissionError, NatsUnavailableError } from "./errors.ts";
import { describeRefusal } from "./refusal.ts";
import { type AttemptTrace, connectOnce } from "./transport.ts";

export interface BusOptions {
  /** Seed servers, `host:port`, `nats://host:port` or `tls://host:port`, without credentials. */
  readonly servers: readonly string[];
  /** How long startup keeps retrying an unreachable server. */
  readonly connectTimeoutMs: number;
  /** Name shown by the NATS server for this connection. */
  readonly name: string;
  readonly logger: Logger;
  /** Login and TLS; files are read once, before the first attempt. Default: none. */
  readonly credentials?: Partial<NatsCredentials>;
}

/**
 * Connects to NATS, retrying an unreachable server until `connectTimeoutMs` has passed; a
 * refused login or failed TLS handshake fails at once. Host names are not resolved by the
 * client so that Deno's `--allow-net` host scoping applies to the names configured.
 */
export async function connectNats(options: BusOptions): Promise<NatsConnection> {
  const credentials = options.credentials ?? {};
  const login = await loadLogin(credentials);
  const tls = await loadTls(credentials, options.servers);
  const where = displayServers(options.servers);
  const deadline = Date.now() + options.connectTimeoutMs;
  let attempt = 0;
  while (true) {
    attempt++;
    const trace: AttemptTrace = { socketErrors: [], verifiesClients: false };
    try {
      return await connectOnce(clientOptions(options, login, tls, deadline), trace);
    } catch (err) {
      if (isPermissionError(err)) throw err;
      const refusal = describeRefusal(err, trace, { login, where, credentials });
      if (refusal) throw refusal;
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new NatsUnavailableError(
          `Cannot connect to NATS at ${where} after ${attempt} attempts in ${options.connectTimeoutMs} ms (GATEWAY_NATS_CONNECT_TIMEOUT_MS): ${
            errorMessage(err)
          }`,
        );
      }
      if (attempt === 1) {
        options.logger.warn("nats not reachable yet, retrying", {
          servers: where,
          error: errorMessage(err),
          retry_for_ms: left,
        });
      }
      await delay(Math.min(250, left));
    }
  }
}

function clientOptions(
  options: BusOptions,
  login: Login,
  tls: Tls | undefined,
  deadline: number,
): ConnectionOptions {
  return {
    servers: [...options.servers],
    name: options.name,
    // Connect to the configured names, so permission scoping by host holds.
    resolve: false,
    // Members a cluster advertises are outside a scoped binary's allow list; the
    // configured seed list is the whole cluster we use (docs/nats.md "Clusters").
    ignoreClusterUpdates: true,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    reconnectJitter: 250,
    timeout: Math.min(2_000, Math.max(100, deadline - Date.now())),
    ...(login.authenticator ? { authenticator: login.authenticator } : {}),
    // An object (even empty) makes TLS required; undefined lets the server decide.
    ...(tls ? { tls } : {}),
  };
}

/** The server list as shown to people: credentials redacted, the default scheme left out. */
function displayServers(servers: readonly string[]): string {
  return redactUrl(servers.join(",")).replaceAll("nats://", "");
}
