/**
 * SnapshotConsumer: a self-healing JetStream consumer, exposed the way nats.js exposes its own —
 * an async iterable of messages, a typed `status()` iterable and `restart(reason)`. It starts at
 * the newest stored message and starts there again whenever it has to be recreated; how one is
 * created, and retried, is ./consumer_create.ts.
 */
import type { NatsConnection } from "@nats-io/nats-core";
import {
  type Consumer,
  type ConsumerMessages,
  jetstream,
  type JetStreamManager,
  jetstreamManager,
} from "@nats-io/jetstream";
import type { Logger } from "../observe/log.ts";
import { delay, errorMessage } from "../util.ts";
import {
  type ConsumerTarget,
  FAST_ATTEMPTS,
  isTimeout,
  openConsumer,
  retrySchedule,
  watchStatus,
} from "./consumer_create.ts";
import { EventQueue } from "./event_queue.ts";
import { ask, isNotFound, NatsRequestError, newestSequence } from "./requests.ts";

/** Pause before a consumer is recreated, so a delete in progress is not raced. */
const RESTART_DELAY_MS = 100;
/**
 * The server sends a heartbeat this often while a pull waits; two missed ones (about 2 s)
 * replace the consumer, so one bound to a dead node is noticed fast.
 */
export const IDLE_HEARTBEAT_MS = 1_000;
/** A pull request lives this long before the client renews it (nats.js minimum: 1 s). */
const PULL_EXPIRES_MS = 5_000;

export interface BusMessage {
  readonly data: Uint8Array;
  /** The message's own subject (one of a templated route's wildcard filter). */
  readonly subject: string;
  readonly streamSequence: number;
  /**
   * Stream sequence of the newest message of the subject when the consumer was last
   * (re)created, or 0 if there was none: anything older is a superseded snapshot.
   */
  readonly newestAtStart: number;
  /** When the stream was created (from its info): a different value means a new stream. */
  readonly streamCreated: string;
  /** Stream time of the message, in ms since the epoch. */
  readonly timestampMs: number;
  /**
   * Newer messages of the consumer's filter known when this one is handed over: stored and not
   * yet sent by the server, plus received and not yet handed over by the client. 0: the newest.
   */
  readonly newer: number;
}

/** What the consumer is doing, as `status()` reports it. */
export type ConsumerStatus =
  /** A consumer exists and delivers; `restarts` counts the recreations before it. */
  | { readonly type: "consuming"; readonly newestAtStart: number; readonly restarts: number }
  /**
   * Not delivering: NATS disconnected (the consumer may be kept after the reconnect), or the
   * current consumer stopped (or could not be created) and is being replaced.
   */
  | { readonly type: "interrupted"; readonly reason: string }
  /** A replacement is about to be created. */
  | { readonly type: "restarting"; readonly reason: string; readonly restarts: number };

export interface ConsumerOptions extends ConsumerTarget {
  readonly logger: Logger;
  /**
   * The subject's newest stream sequence when the caller has just read it (the gateway seeds
   * its cache from it): the first consumer starts there instead of asking the stream again.
   */
  readonly knownNewest?: number;
  /**
   * Start each (re)created consumer at the newest message of every subject the filter matches
   * (a templated route's wildcard) instead of the newest message overall; `newestAtStart` is 0.
   */
  readonly lastPerSubject?: boolean;
  /**
   * Whether a missing durable consumer may be created (GATEWAY_CREATE_STREAMS); default true.
   * With false, one deleted while running is waited for (retried, logged), never recreated.
   */
  readonly createDurable?: boolean;
  /** Run before each recreation (e.g. recreate a deleted stream); never before the first. */
  readonly beforeRestart?: (jsm: JetStreamManager) => Promise<void>;
}

/**
 * Yields every message of `subject` until `signal` aborts. The consumer starts at the newest
 * stored message (so the caller can seed its cache), and whenever it has to be recreated
 * (NATS reconnect, consumer deleted, stream recreated, missed heartbeats, `restart()`) it starts
 * again at the newest message, never replaying what was superseded meanwhile. Iterate it once.
 */
export class SnapshotConsumer implements AsyncIterable<BusMessage> {
  readonly #statusQueues = new Set<EventQueue<ConsumerStatus>>();
  #restartCurrent: (reason: string) => void = () => {};
  #restarts = 0;
  /** Consecutive failed (re)creations: they set the next try's timeout and pause. */
  #failures = 0;
  /** The last failed try's request and error, so a repeat is not warned about again. */
  #lastFailure = "";
  /** The consumer delivering now, with what `consuming` said of it; undefined while replaced. */
  #current: { consumer: Consumer; consuming: ConsumerStatus } | undefined;

  constructor(
    readonly nc: NatsConnection,
    readonly options: ConsumerOptions,
    readonly signal: AbortSignal,
  ) {}

  /** Status events from now until the consumer ends. */
  status(): AsyncIterable<ConsumerStatus> {
    const queue = new EventQueue<ConsumerStatus>(() => this.#statusQueues.delete(queue));
    this.#statusQueues.add(queue);
    return queue;
  }

  /** Replaces the current consumer (e.g. the caller judges it stalled); no-op while replacing. */
  restart(reason: string): void {
    this.#restartCurrent(reason);
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<BusMessage> {
    const { nc, signal } = this;
    const connectionEvents = nc.status();
    void (async () => {
      for await (const s of connectionEvents) {
        // Not delivering until the reconnect shows the consumer kept (or replaced): until then
        // nobody may count on it, so status says interrupted.
        if (s.type === "disconnect" && this.#current !== undefined) {
          this.#emit({ type: "interrupted", reason: "nats disconnected" });
        }
        if (s.type === "reconnect") void this.#keepIfAlive();
      }
    })();
    const stopOnAbort = () => this.#restartCurrent("shutdown");
    signal.addEventListener("abort", stopOnAbort, { once: true });
    try {
      while (!signal.aborted) {
        const reason = yield* this.#consumeOnce();
        if (signal.aborted) break;
        // Let a deleted stream or consumer settle before binding again.
        await delay(RESTART_DELAY_MS, signal);
        if (signal.aborted) break;
        this.#restarts++;
        this.options.logger.info("nats consumer restarting", {
          reason,
          restarts: this.#restarts,
        });
        this.#emit({ type: "restarting", reason, restarts: this.#restarts });
      }
    } finally {
      signal.removeEventListener("abort", stopOnAbort);
      // Ends the status iterator so its loop finishes.
      (connectionEvents as unknown as { stop?: () => void }).stop?.();
      for (const queue of this.#statusQueues) queue.end();
    }
  }

  /**
   * After a NATS reconnect: the consumer lives on a server of its own, often not the one the
   * connection lost, so it is kept when it still answers (nats.js then renews its pull) and
   * replaced only when it is gone or its node does not answer. A creation under way goes on.
   */
  async #keepIfAlive(): Promise<void> {
    const current = this.#current;
    if (current === undefined) return;
    try {
      // Uses the creating client's short timeout (retrySchedule): a dead node is not waited for.
      await current.consumer.info();
      if (this.#current !== current) return;
      this.options.logger.info("nats reconnected; consumer kept", {
        stream: this.options.stream,
        consumer: this.options.durableName || "ordered",
      });
      this.#emit(current.consuming);
    } catch (err) {
      if (this.#current !== current) return;
      this.#restartCurrent(
        `nats reconnected; consumer ${isNotFound(err) ? "gone" : "not answering"}`,
      );
    }
  }

  /** Creates one consumer and yields its messages until it must be replaced; returns why. */
  async *#consumeOnce(): AsyncGenerator<BusMessage, string> {
    const { nc, options, signal } = this;
    const { timeoutMs, retryDelayMs } = retrySchedule(this.#failures);
    let messages: ConsumerMessages | undefined;
    let consumer: Consumer | undefined;
    let reason = "";
    this.#restartCurrent = (why) => {
      if (reason !== "") return;
      reason = why;
      this.#current = undefined;
      this.#emit({ type: "interrupted", reason: why });
      messages?.stop();
    };
    try {
      const js = jetstream(nc, { timeout: timeoutMs });
      const jsm = await jetstreamManager(nc, { timeout: timeoutMs, checkAPI: false });
      // The first start follows the gateway's own stream setup; later ones may follow a
      // deleted stream.
      if (this.#restarts > 0) await options.beforeRestart?.(jsm);
      // Both are answered by the stream leader: asked together, one election is waited once.
      const [newestAtStart, { created }] = await Promise.all([
        options.lastPerSubject
          ? 0
          : this.#restarts === 0 && options.knownNewest !== undefined
          ? options.knownNewest
          : newestSequence(jsm, options),
        ask(`stream info ${options.stream}`, () => jsm.streams.info(options.stream)),
      ]);
      consumer = await openConsumer(js, jsm, options, newestAtStart);
      messages = await consumer.consume({
        max_messages: 256,
        expires: PULL_EXPIRES_MS,
        idle_heartbeat: IDLE_HEARTBEAT_MS,
      });
      if (reason !== "" || signal.aborted) messages.stop();
      void watchStatus(messages, this.#restartCurrent);
      options.logger.info("nats consumer started", {
        stream: options.stream,
        subject: options.subject,
        consumer: options.durableName || "ordered",
        newest_at_start: newestAtStart,
        ...(this.#failures > 0 ? { failed_tries: this.#failures } : {}),
      });
      this.#failures = 0;
      if (reason === "") {
        const consuming = { type: "consuming", newestAtStart, restarts: this.#restarts } as const;
        this.#current = { consumer, consuming };
        this.#emit(consuming);
      }
      yield* this.#deliver(messages, newestAtStart, created);
      this.#restartCurrent("consumer ended");
    } catch (err) {
      if (signal.aborted) return "shutdown";
      this.#restartCurrent(`consumer failed: ${errorMessage(err)}`);
      this.#logFailure(err);
      // A timeout has waited already: the next try goes at once (elections end unannounced).
      if (!isTimeout(err) || this.#failures > FAST_ATTEMPTS) await delay(retryDelayMs, signal);
    } finally {
      messages?.stop();
      if (consumer !== undefined && options.durableName === "") void this.#delete(consumer);
    }
    return reason;
  }

  async *#deliver(
    messages: ConsumerMessages,
    newestAtStart: number,
    streamCreated: string,
  ): AsyncGenerator<BusMessage> {
    const durable = this.options.durableName !== "";
    for await (const m of messages) {
      yield {
        data: m.data,
        subject: m.subject,
        streamSequence: m.seq,
        newestAtStart,
        streamCreated,
        timestampMs: Math.floor(m.info.timestampNanos / 1_000_000),
        newer: m.info.pending + messages.getPending(),
      };
      // Acked once handled: a durable redelivers what a crash interrupted.
      if (durable) m.ack();
    }
  }

  /** Logs a failed try: the first of a run and any new error as warnings, repeats as debug. */
  #logFailure(err: unknown): void {
    this.#failures++;
    const request = err instanceof NatsRequestError ? err.request : undefined;
    // The request is its own field: the error says only what the server or client answered.
    const error = errorMessage(err instanceof NatsRequestError ? err.cause : err);
    const repeated = this.#failures > 1 && `${request} ${error}` === this.#lastFailure;
    this.#lastFailure = `${request} ${error}`;
    this.options.logger[repeated ? "debug" : "warn"]("nats consumer failed; retrying", {
      ...(request !== undefined ? { request } : {}),
      error,
      failed_tries: this.#failures,
    });
  }

  /** Deletes a replaced ordered consumer rather than leave it to expire on the server. */
  async #delete(consumer: Consumer): Promise<void> {
    try {
      await consumer.delete();
    } catch (err) {
      // Gone with its node or stream, or the connection is closing: it expires on its own.
      this.options.logger.debug("replaced nats consumer not deleted", {
        stream: this.options.stream,
        error: errorMessage(err),
      });
    }
  }

  #emit(status: ConsumerStatus): void {
    for (const queue of this.#statusQueues) queue.push(status);
  }
}
