/**
 * GATEWAY_DEAD_LETTER_SUBJECT: invalid payloads published there unchanged, with headers saying
 * why and where they came from. Through JetStream with `Nats-Msg-Id: <stream>:<seq>`, so a
 * stream capturing the subject keeps one copy however many replicas (or retries) publish it; a
 * plain publish when no stream captures it.
 */
import { headers, type NatsConnection } from "@nats-io/transport-deno";
import { jetstream, type JetStreamClient, type PubAck } from "@nats-io/jetstream";
import { type Logger, rateLimited } from "./log.ts";
import { ask } from "./nats/streams.ts";
import { delay } from "./util.ts";

/** How long the answer "does a stream capture the dead-letter subject?" is kept. */
const STREAM_RECHECK_MS = 60_000;
/** A dead letter lost to a NATS restart is sent again: attempts, each waiting this long. */
const ATTEMPTS = 5;
const TIMEOUT_MS = 2_000;

/** Where an invalid payload came from. */
export interface DeadLetterOrigin {
  readonly reason: string;
  readonly subject: string;
  readonly stream: string;
  readonly streamSequence: number;
}

export class DeadLetters {
  readonly #js: JetStreamClient;
  readonly #logFailure: (msg: string, fields?: Record<string, unknown>) => void;
  #streamKnown: { exists: boolean; checkedAt: number } | undefined;

  constructor(
    readonly nc: NatsConnection,
    readonly subject: string,
    readonly logger: Logger,
    readonly signal: AbortSignal,
  ) {
    this.#js = jetstream(nc);
    this.#logFailure = rateLimited(logger.warn, 10_000);
  }

  /** Publishes; resolves true when a new copy was stored or sent (false: duplicate or failed). */
  async publish(data: Uint8Array, origin: DeadLetterOrigin): Promise<boolean> {
    const h = headers();
    h.set("Gateway-Reason", origin.reason);
    h.set("Gateway-Subject", origin.subject);
    h.set("Gateway-Stream", origin.stream);
    h.set("Gateway-Stream-Sequence", String(origin.streamSequence));
    try {
      if (!(await this.#streamExists())) {
        this.nc.publish(this.subject, data, { headers: h });
        return true;
      }
      const ack = await this.#publishStored(data, h, `${origin.stream}:${origin.streamSequence}`);
      if (ack?.duplicate) {
        this.logger.debug("dead letter already stored by another replica", {
          stream_seq: origin.streamSequence,
        });
      }
      return ack !== undefined && !ack.duplicate;
    } catch (err) {
      // Too large for the server, or the connection is closing: it stays counted as invalid.
      this.#logFailure("dead-letter publish failed", {
        error: err,
        stream_seq: origin.streamSequence,
      });
      return false;
    }
  }

  /**
   * A stored dead letter, retried: each message is dead-lettered once per gateway, so a publish
   * lost to a NATS restart must be sent again (the message id keeps retries to one copy).
   */
  async #publishStored(
    data: Uint8Array,
    h: ReturnType<typeof headers>,
    msgID: string,
  ): Promise<PubAck | undefined> {
    for (let attempt = 1; attempt <= ATTEMPTS && !this.signal.aborted; attempt++) {
      try {
        return await this.#js.publish(this.subject, data, {
          headers: h,
          msgID,
          timeout: TIMEOUT_MS,
        });
      } catch (err) {
        if (attempt === ATTEMPTS) {
          this.#logFailure("dead-letter publish failed", { error: err, msg_id: msgID });
        } else await delay(500 * attempt, this.signal);
      }
    }
    return undefined;
  }

  /** Whether a stream captures the dead-letter subject; asked at most once a minute. */
  async #streamExists(): Promise<boolean> {
    const now = Date.now();
    const known = this.#streamKnown;
    if (known && now - known.checkedAt < STREAM_RECHECK_MS) return known.exists;
    const jsm = await this.#js.jetstreamManager();
    const exists = await ask(
      `stream names for subject ${this.subject}`,
      () => jsm.streams.find(this.subject),
    ).then(() => true, (err) => {
      if ((err as Error).cause instanceof Error && err.cause.name === "StreamNotFoundError") {
        return false;
      }
      throw err;
    });
    if (!exists && known?.exists !== false) {
      this.logger.info(
        "no stream captures GATEWAY_DEAD_LETTER_SUBJECT; dead letters are published without deduplication",
        { subject: this.subject },
      );
    }
    this.#streamKnown = { exists, checkedAt: now };
    return exists;
  }
}
