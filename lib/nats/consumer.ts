/**
 * A self-healing JetStream consumer exposed as an async iterable of messages: it starts at the
 * newest stored message and restarts there whenever it has to be recreated.
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
import { ensureStreams, isNotFound, newestSequence } from "./streams.ts";

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
