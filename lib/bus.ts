/**
 * The NATS side of the gateway: connection, idempotent stream setup and a self-healing
 * JetStream consumer exposed as an async iterable of messages. Knows nothing of WebSockets.
 */
import { connect, type NatsConnection } from "@nats-io/transport-deno";
import {
  AckPolicy,
  type Consumer,
  type ConsumerMessages,
  DeliverPolicy,
  DiscardPolicy,
  jetstream,
  type JetStreamManager,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
  type StreamConfig,
} from "@nats-io/jetstream";
import type { Logger } from "./log.ts";

/** Raised when NATS cannot be used at startup; the message says what to do. */
export class NatsUnavailableError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "NatsUnavailableError";
  }
}

const DAY_NS = 24 * 60 * 60 * 1_000_000_000;

/** The streams every service of the platform expects (spec: "JetStream Streams"). */
export const PLATFORM_STREAMS: readonly Pick<
  StreamConfig,
  "name" | "subjects" | "retention" | "max_age" | "storage"
>[] = [
  {
    name: "MARKET_DATA",
    subjects: ["market.*"],
    retention: RetentionPolicy.Limits,
    max_age: DAY_NS,
    storage: StorageType.File,
  },
  {
    name: "LEVEL_SIGNALS",
    subjects: ["levels.*"],
    retention: RetentionPolicy.Limits,
    max_age: DAY_NS,
    storage: StorageType.File,
  },
];

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

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}

/**
 * Creates each platform stream that is missing; an existing stream is left as it is and each
 * field that differs from the platform's config is logged. Safe to run any number of times.
 */
export async function ensureStreams(
  jsm: JetStreamManager,
  logger: Logger,
  streams = PLATFORM_STREAMS,
): Promise<void> {
  for (const wanted of streams) {
    let existing: StreamConfig | undefined;
    try {
      existing = (await jsm.streams.info(wanted.name)).config;
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    if (existing === undefined) {
      try {
        await jsm.streams.add({ ...wanted, discard: DiscardPolicy.Old });
        logger.info("stream created", { stream: wanted.name, subjects: wanted.subjects });
        continue;
      } catch (err) {
        // Another gateway may have created it between our info and add.
        if (!/already in use|already exists/i.test(errorMessage(err))) throw err;
        existing = (await jsm.streams.info(wanted.name)).config;
      }
    }
    const differences = Object.entries(wanted)
      .filter(([key, value]) =>
        JSON.stringify(value) !== JSON.stringify(existing[key as keyof StreamConfig])
      )
      .map(([key, value]) => ({
        field: key,
        expected: value,
        actual: existing[key as keyof StreamConfig],
      }));
    if (differences.length > 0) {
      logger.warn("stream exists with a different config; left unchanged", {
        stream: wanted.name,
        differences,
      });
    }
  }
}

function isNotFound(err: unknown): boolean {
  return /not found/i.test(errorMessage(err));
}

/** Pause before a consumer is recreated, so a delete in progress is not raced. */
const RESTART_DELAY_MS = 100;

/** A message as the relay sees it. */
export interface BusMessage {
  readonly data: Uint8Array;
  readonly streamSequence: number;
  /**
   * Stream sequence of the newest message of the subject when the consumer was last
   * (re)created, or 0 if there was none: anything older is a superseded snapshot.
   */
  readonly newestAtStart: number;
  /** Stream time of the message, in ms since the epoch. */
  readonly timestampMs: number;
}

export interface ConsumerOptions {
  readonly stream: string;
  readonly subject: string;
  /** Empty: an ordered (ephemeral) consumer per gateway; else this durable consumer. */
  readonly durableName: string;
  readonly logger: Logger;
  /** Called each time the consumer is recreated after the first time. */
  readonly onRestart?: (reason: string) => void;
  /** Called each time a consumer is created and consuming. */
  readonly onConsuming?: () => void;
  /** Called as soon as the current consumer is to be replaced (before it has stopped). */
  readonly onInterrupted?: (reason: string) => void;
  /** Filled in by consumeSubject: lets the caller replace a consumer it judges stalled. */
  readonly control?: { restart?: (reason: string) => void };
  /**
   * The subject's newest stream sequence when the caller has just read it (the gateway seeds
   * its cache from it): the first consumer starts there instead of asking the stream again.
   */
  readonly knownNewest?: number;
}

/**
 * Yields every message of `subject` until `signal` aborts. The consumer starts at the newest
 * stored message (so the caller can seed its cache), and whenever it has to be recreated
 * (NATS reconnect, consumer deleted, stream recreated, missed heartbeats) it starts again at
 * the newest message, never replaying what was superseded meanwhile.
 */
export async function* consumeSubject(
  nc: NatsConnection,
  options: ConsumerOptions,
  signal: AbortSignal,
): AsyncGenerator<BusMessage> {
  const js = jetstream(nc);
  const jsm = await jetstreamManager(nc);
  let restarts = 0;
  let restartCurrent: (reason: string) => void = () => {};
  const connectionEvents = nc.status();
  const watchConnection = (async () => {
    for await (const s of connectionEvents) {
      if (s.type === "reconnect") restartCurrent("nats reconnected");
    }
  })();
  const stopOnAbort = () => restartCurrent("shutdown");
  if (options.control) options.control.restart = (reason) => restartCurrent(reason);
  signal.addEventListener("abort", stopOnAbort, { once: true });
  try {
    while (!signal.aborted) {
      let messages: ConsumerMessages | undefined;
      let restartReason = "";
      restartCurrent = (reason) => {
        if (restartReason !== "") return;
        restartReason = reason;
        options.onInterrupted?.(reason);
        messages?.stop();
      };
      try {
        // The first start follows the gateway's own ensureStreams; later ones may follow a
        // deleted stream, which is recreated as at startup.
        if (restarts > 0) await ensureStreams(jsm, options.logger);
        const newestAtStart = restarts === 0 && options.knownNewest !== undefined
          ? options.knownNewest
          : await newestSequence(jsm, options);
        const consumer = await openConsumer(js, jsm, options, newestAtStart);
        messages = await consumer.consume({ max_messages: 256 });
        if (restartReason !== "" || signal.aborted) messages.stop();
        void watchStatus(messages, restartCurrent);
        options.logger.info("nats consumer started", {
          stream: options.stream,
          subject: options.subject,
          consumer: options.durableName || "ordered",
          newest_at_start: newestAtStart,
        });
        options.onConsuming?.();
        for await (const m of messages) {
          yield {
            data: m.data,
            streamSequence: m.seq,
            newestAtStart,
            timestampMs: Math.floor(m.info.timestampNanos / 1_000_000),
          };
          if (options.durableName !== "") m.ack();
        }
        if (restartReason === "") restartReason = "consumer ended";
      } catch (err) {
        if (signal.aborted) break;
        restartReason = `consumer failed: ${errorMessage(err)}`;
        options.logger.warn("nats consumer failed; retrying", { error: errorMessage(err) });
        await delay(500, signal);
      } finally {
        messages?.stop();
      }
      if (signal.aborted) break;
      // Let a deleted stream or consumer settle before binding again.
      await delay(RESTART_DELAY_MS, signal);
      if (signal.aborted) break;
      restarts++;
      options.logger.info("nats consumer restarting", { reason: restartReason, restarts });
      options.onRestart?.(restartReason);
    }
  } finally {
    signal.removeEventListener("abort", stopOnAbort);
    // Ends the status iterator so its loop finishes.
    (connectionEvents as unknown as { stop?: () => void }).stop?.();
    void watchConnection;
  }
}

function watchStatus(messages: ConsumerMessages, restart: (reason: string) => void): Promise<void> {
  return (async () => {
    for await (const s of messages.status()) {
      switch (s.type) {
        case "consumer_deleted":
        case "consumer_not_found":
        case "stream_not_found":
        case "heartbeats_missed":
        case "ordered_consumer_recreated":
        case "reset":
          return restart(s.type);
      }
    }
  })();
}

/** Stream sequence of the newest stored message of the subject, or 0 if none. */
export async function newestSequence(
  jsm: JetStreamManager,
  options: Pick<ConsumerOptions, "stream" | "subject">,
): Promise<number> {
  try {
    const stored = await jsm.streams.getMessage(options.stream, { last_by_subj: options.subject });
    return stored?.seq ?? 0;
  } catch (err) {
    if (isNotFound(err)) return 0;
    throw err;
  }
}

async function openConsumer(
  js: ReturnType<typeof jetstream>,
  jsm: JetStreamManager,
  options: ConsumerOptions,
  newestAtStart: number,
): Promise<Consumer> {
  if (options.durableName === "") {
    return await js.consumers.get(options.stream, {
      // A single string: nats-server 2.9 rejects the array form.
      filter_subjects: options.subject,
      ...(newestAtStart > 0
        ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: newestAtStart }
        : { deliver_policy: DeliverPolicy.All }),
    });
  }
  try {
    await jsm.consumers.info(options.stream, options.durableName);
  } catch (err) {
    if (!isNotFound(err)) throw err;
    await jsm.consumers.add(options.stream, {
      durable_name: options.durableName,
      ack_policy: AckPolicy.Explicit,
      filter_subject: options.subject,
      deliver_policy: DeliverPolicy.LastPerSubject,
    });
  }
  return await js.consumers.get(options.stream, options.durableName);
}
