/** Wires config, NATS, the Broadcaster and the HTTP server into one running gateway. */
import { headers, type NatsConnection } from "@nats-io/transport-deno";
import { type JetStreamManager, jetstreamManager } from "@nats-io/jetstream";
import { Broadcaster, CloseCode } from "./broadcaster.ts";
import { connectNats, NatsUnavailableError } from "./nats/connection.ts";
import { consumeSubject } from "./nats/consumer.ts";
import { ensureStreams, newestSequence } from "./nats/streams.ts";
import { delay, errorMessage } from "./util.ts";
import type { Config } from "./config.ts";
import { createLogger, type Logger, rateLimited } from "./log.ts";
import { GatewayMetrics, type MetricSnapshot, renderMetrics } from "./metrics.ts";
import { checkPayload } from "./payload.ts";
import { combineHealth, createHandler, type HealthReport } from "./server.ts";
import { VERSION } from "./version.ts";

/** How often consumer lag is measured. */
const LAG_POLL_MS = 5_000;

/** A running gateway as main.ts sees it: one isolate, or several (lib/cluster.ts). */
export interface RunningGateway extends AsyncDisposable {
  /** Where the HTTP/WebSocket server listens. */
  readonly addr: Deno.NetAddr;
  /** Resolves with the reason when the gateway cannot go on (e.g. NATS gone too long). */
  readonly failed: Promise<Error>;
  /** Closes every client with 1001, stops consuming, drains NATS. Idempotent. */
  shutdown(): Promise<void>;
}

/** One isolate's state, plain data: what /health and /metrics combine across workers. */
export interface InstanceReport {
  readonly health: HealthReport;
  readonly metrics: MetricSnapshot[];
}

export interface Gateway extends RunningGateway {
  readonly metrics: GatewayMetrics;
  report(): InstanceReport;
}

export interface GatewayOptions {
  readonly logger?: Logger;
  /** How often consumer lag is measured (and a stalled consumer detected). Default 5 s. */
  readonly lagPollMs?: number;
  /** Share the port with other isolates (SO_REUSEPORT); set by lib/cluster.ts. */
  readonly reusePort?: boolean;
  /**
   * The reports of every isolate serving the port, this one's included; set by lib/cluster.ts
   * so /health and /metrics describe the whole process whichever worker answers.
   */
  readonly allReports?: () => Promise<readonly InstanceReport[]>;
}

/** Raised when the listen address is outside what this build may bind. */
export class PermissionScopeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "PermissionScopeError";
  }
}

/** Starts the gateway; rejects (NATS unreachable, permission refused, port taken) before serving. */
export async function startGateway(
  config: Config,
  options: GatewayOptions = {},
): Promise<Gateway> {
  const logger = options.logger ?? createLogger(config.logLevel);
  const { allReports } = options;
  const startedAt = Date.now();
  await checkNetPermissions(config);

  let lastMessageTs: number | null = null;
  let consumerLag: number | null = null;
  let natsConnected = false;
  /** True while a JetStream consumer is delivering; false while it is being (re)created. */
  let consumerActive = false;
  let failWith: (error: Error) => void = () => {};
  const failed = new Promise<Error>((resolve) => (failWith = resolve));

  const metrics = new GatewayMetrics(() => broadcaster.size);
  const logSendError = rateLimited(logger.warn, 10_000);
  const logDeadLetterFailure = rateLimited(logger.warn, 10_000);
  const broadcaster = new Broadcaster(
    {
      clientBufferBytes: config.clientBufferBytes,
      slowClientTimeoutMs: config.slowClientTimeoutMs,
    },
    {
      delivered: (count, bytes) => {
        metrics.deliveries.inc(undefined, count);
        metrics.bytesSent.inc(undefined, bytes);
      },
      conflated: () => metrics.conflations.inc(),
      slowClientClosed: () => metrics.slowDisconnects.inc(),
      sendFailed: (error) => {
        metrics.sendErrors.inc();
        logSendError("websocket send failed; client removed", { error });
      },
    },
  );
  metrics.startTime.set(Math.floor(startedAt / 1000));

  const nc = await connectNats({
    servers: config.natsServers,
    connectTimeoutMs: config.natsConnectTimeoutMs,
    name: "gateway",
    logger,
  }).catch((err) => {
    throw err instanceof NatsUnavailableError ? err : new NatsUnavailableError(
      `Cannot connect to NATS at ${config.natsUrlRedacted}: ${errorMessage(err)}`,
      { cause: err },
    );
  });
  natsConnected = true;
  metrics.natsConnected.set(1);
  logger.info("nats connected", { nats_url: config.natsUrlRedacted, server: nc.getServer() });

  const abort = new AbortController();
  let seededSequence = -1;
  let lastReceivedSequence = 0;
  let receivedAtLastCheck = -1;
  let stalledChecks = 0;
  const consumerControl: { restart?: (reason: string) => void } = {};
  let server: Deno.HttpServer<Deno.NetAddr> | undefined;
  let relaying: Promise<void> = Promise.resolve();
  let lagTimer: ReturnType<typeof setInterval> | undefined;
  const consuming = Promise.withResolvers<void>();
  try {
    const jsm = await jetstreamManager(nc);
    await ensureStreams(jsm, logger);
    seededSequence = await seedLatest(jsm);
    watchNats(nc);
    relaying = relay(nc);
    // Serve only once the consumer exists, so nothing published after startup is missed.
    const waited = await Promise.race([
      consuming.promise.then(() => true),
      delay(config.natsConnectTimeoutMs, abort.signal).then(() => false),
    ]);
    if (!waited) {
      throw new NatsUnavailableError(
        `Cannot create a JetStream consumer on ${config.stream} for ${config.subject} within ${config.natsConnectTimeoutMs} ms (GATEWAY_NATS_CONNECT_TIMEOUT_MS)`,
      );
    }
    lagTimer = setInterval(() => updateLag(jsm), options.lagPollMs ?? LAG_POLL_MS);
    server = Deno.serve(
      {
        hostname: config.host,
        port: config.port,
        ...(options.reusePort ? { reusePort: true } : {}),
        onListen: () => {},
        onError: (err) => {
          logger.error("http handler failed", { error: err });
          return new Response("internal error\n", { status: 500 });
        },
      },
      createHandler({
        broadcaster,
        metrics,
        logger,
        ...(allReports
          ? {
            health: async () => combineHealth((await allReports()).map((r) => r.health)),
            metricsText: async () => renderMetrics((await allReports()).map((r) => r.metrics)),
          }
          : { health }),
        maxConnections: config.maxConnections,
        authTokens: config.authTokens,
        idleTimeoutSeconds: config.idleTimeoutSeconds,
        clientMaxFrameBytes: config.clientMaxFrameBytes,
        clientMaxFramesPerSecond: config.clientMaxFramesPerSecond,
      }),
    );
  } catch (err) {
    abort.abort();
    clearInterval(lagTimer);
    await nc.close().catch(() => {});
    await relaying;
    throw err;
  }
  logger.info("gateway listening", {
    addr: `${server.addr.hostname}:${server.addr.port}`,
    subject: config.subject,
    stream: config.stream,
    consumer: config.durableName || "ordered (per instance)",
    version: VERSION,
  });

  function health(): HealthReport {
    const healthy = natsConnected && consumerActive && !abort.signal.aborted;
    return {
      service: "gateway",
      status: healthy ? "healthy" : "unhealthy",
      version: VERSION,
      nats_url: config.natsUrlRedacted,
      nats_connected: natsConnected,
      connections: broadcaster.size,
      last_message_ts: lastMessageTs,
      messages_relayed: metrics.messagesRelayed.get(),
      consumer_lag: consumerLag,
      uptime_s: Math.floor((Date.now() - startedAt) / 1000),
    };
  }

  /** Tracks the connection; an outage longer than natsMaxOutageMs fails the gateway. */
  function watchNats(nc: NatsConnection): void {
    let outageTimer: ReturnType<typeof setTimeout> | undefined;
    (async () => {
      for await (const s of nc.status()) {
        if (s.type === "disconnect") {
          natsConnected = false;
          consumerActive = false;
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
          natsConnected = true;
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
      natsConnected = false;
      metrics.natsConnected.set(0);
      if (!abort.signal.aborted) {
        failWith(
          new NatsUnavailableError(
            `NATS connection closed: ${err ? errorMessage(err) : "by the server"}`,
          ),
        );
      }
    });
  }

  /** Consumes the subject and fans every valid payload out. */
  async function relay(nc: NatsConnection): Promise<void> {
    const logInvalid = rateLimited(logger.warn, 10_000);
    let lastSequence = seededSequence;
    /** A recreated consumer can deliver the newest message again; dead-letter it once. */
    let lastDeadLettered = 0;
    try {
      for await (
        const message of consumeSubject(nc, {
          stream: config.stream,
          subject: config.subject,
          durableName: config.durableName,
          logger,
          onRestart: () => metrics.consumerRestarts.inc(),
          onInterrupted: () => (consumerActive = false),
          control: consumerControl,
          ...(seededSequence > 0 ? { knownNewest: seededSequence } : {}),
          onConsuming: () => {
            consumerActive = true;
            consuming.resolve();
          },
        }, abort.signal)
      ) {
        metrics.messagesReceived.inc();
        lastReceivedSequence = message.streamSequence;
        const checked = checkPayload(message.data, config.maxPayloadBytes);
        if (!checked.ok) {
          metrics.invalidPayloads.inc({ reason: checked.reason });
          logInvalid("invalid payload skipped", {
            reason: checked.reason,
            bytes: message.data.byteLength,
            stream_seq: message.streamSequence,
          });
          if (config.deadLetterSubject && message.streamSequence > lastDeadLettered) {
            lastDeadLettered = message.streamSequence;
            deadLetter(nc, message.data, checked.reason, message.streamSequence);
          }
          continue;
        }
        // Older than the newest message at the consumer's (re)start: a superseded snapshot.
        // Skipping it means clients never get a burst of stale data after an outage.
        if (message.streamSequence < message.newestAtStart) {
          metrics.messagesSkipped.inc({ reason: "superseded" });
          continue;
        }
        if (message.streamSequence === lastSequence && checked.text === broadcaster.latest) {
          metrics.messagesSkipped.inc({ reason: "duplicate" });
          continue;
        }
        lastSequence = message.streamSequence;
        broadcaster.broadcast(checked.text, message.data.byteLength);
        metrics.messagesRelayed.inc();
        lastMessageTs = Date.now();
        metrics.lastMessageTimestamp.set(lastMessageTs / 1000);
      }
    } catch (err) {
      if (!abort.signal.aborted) {
        logger.error("relay stopped", { error: err });
        failWith(new Error(`relay stopped: ${errorMessage(err)}`, { cause: err }));
      }
    }
  }

  /** Publishes an invalid payload, unchanged, to GATEWAY_DEAD_LETTER_SUBJECT with its story. */
  function deadLetter(nc: NatsConnection, data: Uint8Array, reason: string, seq: number): void {
    const h = headers();
    h.set("Gateway-Reason", reason);
    h.set("Gateway-Subject", config.subject);
    h.set("Gateway-Stream", config.stream);
    h.set("Gateway-Stream-Sequence", String(seq));
    try {
      nc.publish(config.deadLetterSubject, data, { headers: h });
      metrics.deadLetters.inc();
    } catch (err) {
      // Too large for the server, or the connection is closing: the payload stays counted.
      logDeadLetterFailure("dead-letter publish failed", { error: err, stream_seq: seq });
    }
  }

  /**
   * Lag: stream sequences between the newest stored message and the last one received.
   * Also a watchdog: a consumer that stays behind without receiving anything over two
   * measurements is replaced (seen with nats-server 2.9 after a stream was recreated: a pull
   * request waiting on a consumer with pending messages and nothing delivered).
   */
  async function updateLag(jsm: JetStreamManager): Promise<void> {
    if (!natsConnected) return;
    try {
      const newest = await newestSequence(jsm, config);
      const received = Math.max(lastReceivedSequence, seededSequence);
      consumerLag = Math.max(0, newest - received);
      metrics.consumerPending.set(consumerLag);
      const stalled = consumerLag > 0 && consumerActive && received === receivedAtLastCheck;
      stalledChecks = stalled ? stalledChecks + 1 : 0;
      receivedAtLastCheck = received;
      if (stalledChecks >= 2) {
        stalledChecks = 0;
        logger.warn("nats consumer stalled; recreating it", { lag: consumerLag });
        consumerControl.restart?.("stalled");
      }
    } catch (err) {
      logger.debug("consumer lag unknown", { error: err });
    }
  }

  /** Seeds the cache with the newest stored message so the first client sees it at once. */
  async function seedLatest(jsm: JetStreamManager): Promise<number> {
    try {
      const stored = await jsm.streams.getMessage(config.stream, { last_by_subj: config.subject });
      if (stored === null) return -1;
      const checked = checkPayload(stored.data, config.maxPayloadBytes);
      if (!checked.ok) return -1;
      broadcaster.seed(checked.text, stored.data.byteLength);
      logger.info("cache seeded from stream", { stream_seq: stored.seq });
      return stored.seq;
    } catch (err) {
      logger.debug("no stored message to seed the cache", { error: err });
      return -1;
    }
  }

  let shuttingDown: Promise<void> | undefined;
  function shutdown(): Promise<void> {
    shuttingDown ??= (async () => {
      logger.info("gateway shutting down", { connections: broadcaster.size });
      abort.abort();
      broadcaster.closeAll(CloseCode.goingAway, "gateway shutting down");
      const bound = delay(config.shutdownTimeoutMs);
      await Promise.race([
        Promise.allSettled([
          server!.shutdown(),
          nc.isClosed() ? Promise.resolve() : nc.drain(),
          relaying,
        ]),
        bound,
      ]);
      if (!nc.isClosed()) await nc.close().catch(() => {});
      clearInterval(lagTimer);
      logger.info("gateway stopped");
    })();
    return shuttingDown;
  }

  return {
    addr: server.addr,
    metrics,
    failed,
    report: () => ({ health: health(), metrics: metrics.snapshot() }),
    shutdown,
    [Symbol.asyncDispose]: shutdown,
  };
}

/**
 * Checks up front that this process may reach every NATS server and bind its listen address,
 * so a scoped binary fails with a message that says what to rebuild, not a stack trace.
 */
async function checkNetPermissions(config: Config): Promise<void> {
  const refused: string[] = [];
  for (const server of config.natsServers) {
    const url = new URL(server.includes("://") ? server : `nats://${server}`);
    const host = `${url.hostname}:${url.port || "4222"}`;
    const { state } = await Deno.permissions.query({ name: "net", host });
    if (state !== "granted") refused.push(host);
  }
  if (refused.length > 0) {
    throw new PermissionScopeError(
      `NATS_URL names ${refused.join(", ")}, which this build may not reach. ` +
        `Rebuild with the host allowed, e.g. GATEWAY_NATS_HOSTS=${
          refused.map((h) => h.replace(/:\d+$/, "")).join(",")
        } deno task compile (README "Permissions").`,
    );
  }
  const listen = `${config.host}:${config.port}`;
  const { state } = await Deno.permissions.query({ name: "net", host: listen });
  if (state !== "granted") {
    throw new PermissionScopeError(
      `GATEWAY_HOST/GATEWAY_PORT ${listen} is outside what this build may listen on. ` +
        `Rebuild with GATEWAY_LISTEN_HOSTS=${config.host} deno task compile (README "Permissions").`,
    );
  }
}
