/** Wires config, NATS, the Broadcaster and the HTTP server into one running gateway. */
import { headers, type NatsConnection } from "@nats-io/transport-deno";
import {
  jetstream,
  type JetStreamClient,
  type JetStreamManager,
  jetstreamManager,
  type PubAck,
} from "@nats-io/jetstream";
import { Broadcaster, CloseCode } from "./broadcaster.ts";
import { connectNats, NatsUnavailableError } from "./nats/connection.ts";
import { type BusMessage, SnapshotConsumer } from "./nats/consumer.ts";
import { ask, ensureRelayedStream, newestSequence, setUpStreams } from "./nats/streams.ts";
import { FreshnessWatch, RelayProgress } from "./relay.ts";
import { redactUrl } from "./redact.ts";
import { delay, errorMessage } from "./util.ts";
import type { Config } from "./config.ts";
import { createLogger, type Logger, rateLimited } from "./log.ts";
import { GatewayMetrics, type MetricSnapshot } from "./metrics.ts";
import { checkPayload } from "./payload.ts";
import { checkPermissions } from "./permissions.ts";
import { createHandler } from "./server.ts";
import { Authenticator } from "./auth.ts";
import { connectionCap, readFdLimit, type ResilientServer, serveResilient } from "./fd_limit.ts";
import { Sessions } from "./session.ts";
import type { HealthReport, LocalState, ProcessView } from "./health.ts";
import { VERSION } from "./version.ts";

/**
 * How often the stream's newest sequence is compared with the last one received: lag, and
 * whether the consumer is receiving at all (/health turns unhealthy about one check after a
 * stored message is not received).
 */
const LAG_POLL_MS = 1_000;
/** A consumer that has not received a stored message for this many checks is replaced. */
const STALLED_CHECKS_BEFORE_RESTART = 3;
/** How long the answer "does a stream capture the dead-letter subject?" is kept. */
const DEAD_LETTER_STREAM_RECHECK_MS = 60_000;
/** A dead letter lost to a NATS restart is sent again: attempts, each waiting this long. */
const DEAD_LETTER_ATTEMPTS = 5;
const DEAD_LETTER_TIMEOUT_MS = 2_000;

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
  /** How often consumer lag is measured (and a stalled consumer detected). Default 1 s. */
  readonly lagPollMs?: number;
  /** Share the port with other isolates (SO_REUSEPORT); set by lib/cluster.ts. */
  readonly reusePort?: boolean;
  /**
   * Set by lib/worker.ts: /health and /metrics for the whole process whichever worker answers,
   * from state the workers publish (lib/health.ts), given this isolate's live state.
   */
  readonly processView?: (local: LocalState) => ProcessView;
}

/** Raised when the configuration names what this process may not reach, bind or read. */
export { PermissionScopeError } from "./permissions.ts";

/** Starts the gateway; rejects (NATS unreachable, permission refused, port taken) before serving. */
export async function startGateway(
  config: Config,
  options: GatewayOptions = {},
): Promise<Gateway> {
  const logger = options.logger ?? createLogger(config.logLevel);
  const startedAt = Date.now();
  await checkPermissions(config);

  let lastMessageTs: number | null = null;
  let consumerLag: number | null = null;
  let natsConnected = false;
  /** True while a JetStream consumer is delivering; false while it is being (re)created. */
  let consumerActive = false;
  /** True while a message the stream holds has gone unreceived for a whole check. */
  let receivingStalled = false;
  let failWith: (error: Error) => void = () => {};
  const failed = new Promise<Error>((resolve) => (failWith = resolve));

  const metrics = new GatewayMetrics(() => broadcaster.size);
  const logSendError = rateLimited(logger.warn, 10_000);
  const logDeadLetterFailure = rateLimited(logger.warn, 10_000);
  const broadcaster = new Broadcaster(
    {
      clientBufferBytes: config.clientBufferBytes,
      slowClientTimeoutMs: config.slowClientTimeoutMs,
      clientMaxQueueMs: config.clientMaxQueueMs,
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
    credentials: config,
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
  const progress = new RelayProgress();
  const freshness = new FreshnessWatch();
  const lagPollMs = options.lagPollMs ?? LAG_POLL_MS;
  let consumer: SnapshotConsumer | undefined;
  let server: ResilientServer | undefined;
  // Every socket from upgrade to close event; the cap keeps them below the fd limit.
  const sessions = new Sessions({ metrics });
  const fdLimit = config.fdLimit > 0 ? config.fdLimit : readFdLimit();
  const maxConnections = connectionCap(config.maxConnections, fdLimit, config.workers);
  let relaying: Promise<void> = Promise.resolve();
  let lagTimer: ReturnType<typeof setInterval> | undefined;
  const consuming = Promise.withResolvers<void>();
  try {
    const jsm = await jetstreamManager(nc);
    await setUpStreams(jsm, config, logger);
    const seededSequence = await seedLatest(jsm);
    watchNats(nc);
    consumer = new SnapshotConsumer(nc, {
      stream: config.stream,
      subject: config.subject,
      durableName: config.durableName,
      // Least privilege: with GATEWAY_CREATE_STREAMS=false a deleted durable is not recreated.
      createDurable: config.createStreams,
      logger,
      // A restart touches only the relayed stream: another stream's node may be down.
      beforeRestart: (jsm) => ensureRelayedStream(jsm, config, logger),
      ...(seededSequence > 0 ? { knownNewest: seededSequence } : {}),
    }, abort.signal);
    watchConsumer(consumer);
    relaying = relay(nc, consumer);
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
    // Its own manager: a check must fail fast, not wait out the default 5 s request timeout.
    const checkJsm = await jetstreamManager(nc, { timeout: Math.max(500, lagPollMs) });
    lagTimer = setInterval(() => updateLag(checkJsm), lagPollMs);
    server = serveResilient(
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
        ...(options.processView?.({ health, metrics: () => metrics.snapshot() }) ?? { health }),
        maxConnections,
        sessions,
        auth: await Authenticator.fromConfig(config),
        authReject: config.authReject,
        allowedOrigins: config.allowedOrigins,
        idleTimeoutSeconds: config.idleTimeoutSeconds,
        clientMaxFrameBytes: config.clientMaxFrameBytes,
        clientMaxFramesPerSecond: config.clientMaxFramesPerSecond,
      }),
      { logger, onListenerLost: () => metrics.listenerRestarts.inc() },
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
    fd_limit: fdLimit,
    max_connections: maxConnections,
  });

  function health(): HealthReport {
    const healthy = natsConnected && consumerActive && !receivingStalled && !abort.signal.aborted;
    const report: HealthReport & { readonly nats_server: string } = {
      service: "gateway",
      status: healthy ? "healthy" : "unhealthy",
      version: VERSION,
      nats_url: config.natsUrlRedacted,
      // The server of the seed list this connection uses now (one node of a cluster).
      nats_server: redactUrl(nc.getServer()),
      nats_connected: natsConnected,
      connections: broadcaster.size,
      last_message_ts: lastMessageTs,
      messages_relayed: metrics.messagesRelayed.get(),
      consumer_lag: consumerLag,
      uptime_s: Math.floor((Date.now() - startedAt) / 1000),
    };
    return report;
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

  /** Follows the consumer's state: "consumer active" only while a consumer is delivering. */
  function watchConsumer(consumer: SnapshotConsumer): void {
    (async () => {
      for await (const status of consumer.status()) {
        if (status.type === "consuming") {
          consumerActive = true;
          // A new consumer starts at the newest message: what the old one missed is not waited for.
          freshness.reset();
          receivingStalled = false;
          consuming.resolve();
        } else if (status.type === "interrupted") {
          consumerActive = false;
        } else {
          metrics.consumerRestarts.inc();
        }
      }
    })();
  }

  /** Consumes the subject and fans every valid payload out. */
  async function relay(nc: NatsConnection, consumer: SnapshotConsumer): Promise<void> {
    const handle = messageHandler(nc);
    try {
      for await (const message of consumer) handle(message);
    } catch (err) {
      if (!abort.signal.aborted) {
        logger.error("relay stopped", { error: err });
        failWith(new Error(`relay stopped: ${errorMessage(err)}`, { cause: err }));
      }
    }
  }

  /** What happens to one delivered message: checked, deduplicated, relayed or dead-lettered. */
  function messageHandler(nc: NatsConnection): (message: BusMessage) => void {
    const logInvalid = rateLimited(logger.warn, 10_000);
    const js = jetstream(nc);
    return (message) => {
      metrics.messagesReceived.inc();
      if (progress.received(message)) {
        freshness.reset();
        logger.info("relayed stream was recreated; sequences counted afresh", {
          stream: config.stream,
          stream_seq: message.streamSequence,
        });
      }
      const checked = checkPayload(message.data, config.maxPayloadBytes);
      if (!checked.ok) {
        metrics.invalidPayloads.inc({ reason: checked.reason });
        logInvalid("invalid payload skipped", {
          reason: checked.reason,
          bytes: message.data.byteLength,
          stream_seq: message.streamSequence,
        });
        // Once per message, across consumer restarts (a new consumer redelivers the newest).
        if (config.deadLetterSubject && progress.shouldDeadLetter(message.streamSequence)) {
          void deadLetter(nc, js, message.data, checked.reason, message.streamSequence);
        }
        return;
      }
      // Never an older snapshot after a newer one: superseded while the gateway was away, or
      // redelivered by a durable after its ack was lost. Skipping means no stale burst.
      const verdict = progress.judge(message);
      if (verdict !== "relay") {
        metrics.messagesSkipped.inc({ reason: verdict });
        return;
      }
      progress.relayed(message.streamSequence);
      broadcaster.broadcast(checked.text, message.data.byteLength);
      metrics.messagesRelayed.inc();
      lastMessageTs = Date.now();
      metrics.lastMessageTimestamp.set(lastMessageTs / 1000);
    };
  }

  /**
   * Publishes an invalid payload, unchanged, to GATEWAY_DEAD_LETTER_SUBJECT with its story.
   * Through JetStream with `Nats-Msg-Id: <stream>:<seq>`, so a stream capturing the subject keeps
   * one copy however many replicas publish it; a plain publish when no stream captures it.
   */
  async function deadLetter(
    nc: NatsConnection,
    js: JetStreamClient,
    data: Uint8Array,
    reason: string,
    seq: number,
  ): Promise<void> {
    const h = headers();
    h.set("Gateway-Reason", reason);
    h.set("Gateway-Subject", config.subject);
    h.set("Gateway-Stream", config.stream);
    h.set("Gateway-Stream-Sequence", String(seq));
    try {
      if (!(await deadLetterStreamExists(js))) {
        nc.publish(config.deadLetterSubject, data, { headers: h });
        metrics.deadLetters.inc();
        return;
      }
      const ack = await publishDeadLetter(js, data, h, seq);
      if (ack === undefined) return;
      if (ack.duplicate) {
        logger.debug("dead letter already stored by another replica", { stream_seq: seq });
        return;
      }
      metrics.deadLetters.inc();
    } catch (err) {
      // Too large for the server, or the connection is closing: it stays counted as invalid.
      logDeadLetterFailure("dead-letter publish failed", { error: err, stream_seq: seq });
    }
  }

  /**
   * A stored dead letter, retried: the message is dead-lettered once per gateway, so a publish
   * lost to a NATS restart must be sent again (the message id keeps retries to one copy).
   * Undefined when every attempt failed or the gateway is stopping.
   */
  async function publishDeadLetter(
    js: JetStreamClient,
    data: Uint8Array,
    h: ReturnType<typeof headers>,
    seq: number,
  ): Promise<PubAck | undefined> {
    for (let attempt = 1; attempt <= DEAD_LETTER_ATTEMPTS && !abort.signal.aborted; attempt++) {
      try {
        return await js.publish(config.deadLetterSubject, data, {
          headers: h,
          msgID: `${config.stream}:${seq}`,
          timeout: DEAD_LETTER_TIMEOUT_MS,
        });
      } catch (err) {
        if (attempt === DEAD_LETTER_ATTEMPTS) {
          logDeadLetterFailure("dead-letter publish failed", { error: err, stream_seq: seq });
        } else await delay(500 * attempt, abort.signal);
      }
    }
    return undefined;
  }

  /** Whether a stream captures the dead-letter subject; asked at most once a minute. */
  let deadLetterStream: { exists: boolean; checkedAt: number } | undefined;
  async function deadLetterStreamExists(js: JetStreamClient): Promise<boolean> {
    const now = Date.now();
    if (deadLetterStream && now - deadLetterStream.checkedAt < DEAD_LETTER_STREAM_RECHECK_MS) {
      return deadLetterStream.exists;
    }
    const jsm = await js.jetstreamManager();
    const exists = await ask(
      `stream names for subject ${config.deadLetterSubject}`,
      () => jsm.streams.find(config.deadLetterSubject),
    ).then(() => true, (err) => {
      if ((err as Error).cause instanceof Error && err.cause.name === "StreamNotFoundError") {
        return false;
      }
      throw err;
    });
    if (!exists && deadLetterStream?.exists !== false) {
      logger.info(
        "no stream captures GATEWAY_DEAD_LETTER_SUBJECT; dead letters are published without deduplication",
        { subject: config.deadLetterSubject },
      );
    }
    deadLetterStream = { exists, checkedAt: now };
    return exists;
  }

  /**
   * Every check: lag (stream sequences between the newest stored message of the subject and
   * the last one received), and whether the consumer receives at all. A stored message not
   * received for a whole check makes /health unhealthy; for STALLED_CHECKS_BEFORE_RESTART checks,
   * the consumer is replaced (seen with nats-server 2.9 after a stream was recreated, and when a
   * consumer's node dies: a pull request waiting on a consumer that delivers nothing).
   */
  let checking = false;
  async function updateLag(jsm: JetStreamManager): Promise<void> {
    if (!natsConnected || checking) return;
    checking = true;
    try {
      const newest = await newestSequence(jsm, config);
      const lastReceived = progress.lastReceived;
      if (progress.observeNewest(newest)) {
        // The stream was recreated (or purged): its sequences restarted below ours.
        logger.info("relayed stream's sequences went back; counted afresh", {
          stream: config.stream,
          newest,
          last_received: lastReceived,
        });
        freshness.reset();
      }
      consumerLag = Math.max(0, newest - progress.lastReceived);
      metrics.consumerPending.set(consumerLag);
      judgeFreshness(newest);
    } catch (err) {
      logger.debug("consumer lag unknown", { error: err });
    } finally {
      checking = false;
    }
  }

  function judgeFreshness(newest: number): void {
    const waitedMs = freshness.observe(newest, progress.lastReceived, Date.now());
    const stalled = waitedMs >= lagPollMs / 2;
    if (stalled !== receivingStalled) {
      logger[stalled ? "warn" : "info"](
        stalled ? "stored messages not received" : "receiving again",
        { lag: consumerLag, waited_ms: waitedMs },
      );
    }
    receivingStalled = stalled;
    if (consumerActive && waitedMs >= (STALLED_CHECKS_BEFORE_RESTART - 0.5) * lagPollMs) {
      logger.warn("nats consumer stalled; recreating it", { lag: consumerLag });
      freshness.reset();
      consumer?.restart("stalled");
    }
  }

  /** Seeds the cache with the newest stored message so the first client sees it at once. */
  async function seedLatest(jsm: JetStreamManager): Promise<number> {
    try {
      const { created } = await jsm.streams.info(config.stream);
      progress.seeded(0, created);
      const stored = await jsm.streams.getMessage(config.stream, { last_by_subj: config.subject });
      if (stored === null) return -1;
      const checked = checkPayload(stored.data, config.maxPayloadBytes);
      if (!checked.ok) return -1;
      broadcaster.seed(checked.text, stored.data.byteLength);
      progress.seeded(stored.seq, created);
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
      const timeUp = new AbortController();
      const bound = delay(config.shutdownTimeoutMs, timeUp.signal);
      // Our close handshakes finish first: Deno's server shutdown would overtake them, and
      // browsers would see 1001 with wasClean=false. Opening and unauthorized sockets too.
      const clientsGone = sessions.closeAll(CloseCode.goingAway, "gateway shutting down");
      await Promise.race([
        Promise.allSettled([
          clientsGone.then(() => server!.shutdown()),
          nc.isClosed() ? Promise.resolve() : nc.drain(),
          relaying,
        ]),
        bound,
      ]);
      if (sessions.held > 0) {
        // Peers that never finished their close (they do not read): Deno's shutdown cuts them.
        logger.warn("clients still closing at the shutdown bound", { sockets: sessions.held });
        await Promise.race([server!.shutdown().catch(() => {}), delay(1000, timeUp.signal)]);
      }
      timeUp.abort();
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
