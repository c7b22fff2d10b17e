/**
 * SnapshotConsumer: a self-healing JetStream consumer, exposed the way nats.js exposes its own —
 * an async iterable of messages, a typed `status()` iterable and `restart(reason)`. It starts at
 * the newest stored message and starts there again whenever it has to be recreated.
 */
import type { NatsConnection } from "@nats-io/transport-deno";
import {
  AckPolicy,
  type Consumer,
  type ConsumerMessages,
  DeliverPolicy,
  jetstream,
  type JetStreamManager,
  jetstreamManager,
} from "@nats-io/jetstream";
import type { Logger } from "../log.ts";
import { delay, errorMessage } from "../util.ts";
import { ask, isNotFound, NatsRequestError, newestSequence } from "./streams.ts";

/** Pause before a consumer is recreated, so a delete in progress is not raced. */
const RESTART_DELAY_MS = 100;
/** Pause after a failed (re)creation before the next try. */
const RETRY_DELAY_MS = 250;
/**
 * The server sends a heartbeat this often while a pull waits; two missed ones (about 2 s)
 * replace the consumer, so one bound to a dead node is noticed fast.
 */
export const IDLE_HEARTBEAT_MS = 1_000;
/** A pull request lives this long before the client renews it (nats.js minimum: 1 s). */
const PULL_EXPIRES_MS = 5_000;
/**
 * Requests that (re)create a consumer give up after this, not the client's default 5 s: on a
 * cluster that just lost a node the meta leader may place the new consumer on the dead node
 * (until it is marked offline, ~10 s+) and never answer; another try picks a live one.
 */
const CREATE_TIMEOUT_MS = 1_500;

/** A message as the relay sees it. */
export interface BusMessage {
  readonly data: Uint8Array;
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
}

/** What the consumer is doing, as `status()` reports it. */
export type ConsumerStatus =
  /** A consumer exists and delivers; `restarts` counts the recreations before it. */
  | { readonly type: "consuming"; readonly newestAtStart: number; readonly restarts: number }
  /** The current consumer stopped delivering (or could not be created) and is being replaced. */
  | { readonly type: "interrupted"; readonly reason: string }
  /** A replacement is about to be created. */
  | { readonly type: "restarting"; readonly reason: string; readonly restarts: number };

export interface ConsumerOptions {
  readonly stream: string;
  readonly subject: string;
  /** Empty: an ordered (ephemeral) consumer per gateway; else this durable consumer. */
  readonly durableName: string;
  readonly logger: Logger;
  /**
   * The subject's newest stream sequence when the caller has just read it (the gateway seeds
   * its cache from it): the first consumer starts there instead of asking the stream again.
   */
  readonly knownNewest?: number;
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
    const js = jetstream(nc, { timeout: CREATE_TIMEOUT_MS });
    const jsm = await jetstreamManager(nc, { timeout: CREATE_TIMEOUT_MS });
    const connectionEvents = nc.status();
    void (async () => {
      for await (const s of connectionEvents) {
        if (s.type === "reconnect") this.#restartCurrent("nats reconnected");
      }
    })();
    const stopOnAbort = () => this.#restartCurrent("shutdown");
    signal.addEventListener("abort", stopOnAbort, { once: true });
    try {
      while (!signal.aborted) {
        const reason = yield* this.#consumeOnce(js, jsm);
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

  /** Creates one consumer and yields its messages until it must be replaced; returns why. */
  async *#consumeOnce(
    js: ReturnType<typeof jetstream>,
    jsm: JetStreamManager,
  ): AsyncGenerator<BusMessage, string> {
    const { options, signal } = this;
    let messages: ConsumerMessages | undefined;
    let consumer: Consumer | undefined;
    let reason = "";
    this.#restartCurrent = (why) => {
      if (reason !== "") return;
      reason = why;
      this.#emit({ type: "interrupted", reason: why });
      messages?.stop();
    };
    try {
      // The first start follows the gateway's own stream setup; later ones may follow a
      // deleted stream.
      if (this.#restarts > 0) await options.beforeRestart?.(jsm);
      const newestAtStart = this.#restarts === 0 && options.knownNewest !== undefined
        ? options.knownNewest
        : await newestSequence(jsm, options);
      consumer = await ask(
        `consumer create on ${options.stream} for ${options.subject}`,
        () => openConsumer(js, jsm, options, newestAtStart),
      );
      const { created } = await ask(
        `stream info ${options.stream}`,
        () => jsm.streams.info(options.stream),
      );
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
      });
      if (reason === "") {
        this.#emit({ type: "consuming", newestAtStart, restarts: this.#restarts });
      }
      const durable = options.durableName !== "";
      for await (const m of messages) {
        yield {
          data: m.data,
          streamSequence: m.seq,
          newestAtStart,
          streamCreated: created,
          timestampMs: Math.floor(m.info.timestampNanos / 1_000_000),
        };
        // Acked once handled: a durable redelivers what a crash interrupted.
        if (durable) m.ack();
      }
      this.#restartCurrent("consumer ended");
    } catch (err) {
      if (signal.aborted) return "shutdown";
      this.#restartCurrent(`consumer failed: ${errorMessage(err)}`);
      options.logger.warn("nats consumer failed; retrying", {
        request: err instanceof NatsRequestError ? err.request : undefined,
        error: errorMessage(err),
      });
      await delay(RETRY_DELAY_MS, signal);
    } finally {
      messages?.stop();
      if (consumer !== undefined && options.durableName === "") void this.#delete(consumer);
    }
    return reason;
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

/** A push-driven async iterable with one reader; `onEnd` runs when its reader stops. */
class EventQueue<T> implements AsyncIterable<T> {
  #items: T[] = [];
  #wake: (() => void) | undefined;
  #ended = false;

  constructor(private readonly onEnd: () => void) {}

  push(item: T): void {
    if (this.#ended) return;
    this.#items.push(item);
    this.#wake?.();
  }

  end(): void {
    this.#ended = true;
    this.#wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<T> {
    try {
      while (true) {
        const item = this.#items.shift();
        if (item !== undefined) {
          yield item;
          continue;
        }
        if (this.#ended) return;
        await new Promise<void>((resolve) => (this.#wake = resolve));
        this.#wake = undefined;
      }
    } finally {
      this.#ended = true;
      this.onEnd();
    }
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
  // Binding an existing durable needs only consumer info rights (least privilege).
  try {
    return await js.consumers.get(options.stream, options.durableName);
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
  try {
    await jsm.consumers.add(options.stream, {
      durable_name: options.durableName,
      ack_policy: AckPolicy.Explicit,
      filter_subject: options.subject,
      deliver_policy: DeliverPolicy.LastPerSubject,
    });
  } catch (err) {
    // Another replica may have created it meanwhile; anything else is the user's to fix.
    if (!/already in use|already exists/i.test(errorMessage(err))) {
      throw new Error(
        `durable consumer ${options.durableName} (GATEWAY_DURABLE) does not exist on stream ${options.stream} and cannot be created (${
          errorMessage(err)
        }): create it with a NATS user allowed to, or unset GATEWAY_DURABLE`,
        { cause: err },
      );
    }
  }
  return await js.consumers.get(options.stream, options.durableName);
}
