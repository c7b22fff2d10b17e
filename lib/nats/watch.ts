/** The NATS connection's state over time: connected or not, and an outage too long to wait out. */
import type { NatsConnection } from "@nats-io/nats-core";
import type { Config } from "../config/config.ts";
import type { Logger } from "../observe/log.ts";
import type { GatewayMetrics } from "../observe/metrics.ts";
import { errorMessage } from "../util.ts";
import { NatsUnavailableError } from "./errors.ts";

export interface NatsWatch {
  readonly connected: boolean;
  /** Resolves when the connection is gone for good or out for longer than allowed. */
  readonly failed: Promise<Error>;
  stop(): void;
}

/** Tracks the connection; an outage longer than natsMaxOutageMs fails the gateway. */
export function watchNats(
  nc: NatsConnection,
  config: Config,
  logger: Logger,
  metrics: GatewayMetrics,
  signal: AbortSignal,
): NatsWatch {
  let connected = true;
  let outageTimer: ReturnType<typeof setTimeout> | undefined;
  const { promise: failed, resolve: failWith } = Promise.withResolvers<Error>();
  (async () => {
    for await (const s of nc.status()) {
      if (s.type === "disconnect") {
        connected = false;
        metrics.natsConnected.set(0);
        logger.warn("nats disconnected; reconnecting", { server: s.server });
        if (config.natsMaxOutageMs > 0 && outageTimer === undefined) {
          outageTimer = setTimeout(() => {
            failWith(
              new NatsUnavailableError(
                `NATS unreachable for ${config.natsMaxOutageMs} ms (GATEWAY_NATS_MAX_OUTAGE_MS); exiting so a supervisor restarts the gateway`,
              ),
            );
          }, config.natsMaxOutageMs);
        }
      } else if (s.type === "reconnect") {
        connected = true;
        metrics.natsConnected.set(1);
        metrics.natsReconnects.inc();
        clearTimeout(outageTimer);
        outageTimer = undefined;
        logger.info("nats reconnected", { server: s.server });
      }
    }
  })();
  nc.closed().then((err) => {
    clearTimeout(outageTimer);
    connected = false;
    metrics.natsConnected.set(0);
    if (!signal.aborted) {
      failWith(
        new NatsUnavailableError(
          `NATS connection closed: ${err ? errorMessage(err) : "by the server"}`,
        ),
      );
    }
  });
  return {
    get connected() {
      return connected;
    },
    failed,
    stop: () => clearTimeout(outageTimer),
  };
}
