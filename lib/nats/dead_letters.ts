/**
 * GATEWAY_DEAD_LETTER_SUBJECT: invalid payloads published there unchanged, with headers saying
 * why and where they came from. Through JetStream with `Nats-Msg-Id: <stream>:<seq>`, so a
 * stream capturing the subject keeps one copy however many replicas (or retries) publish it; a
 * plain publish when no stream captures it.
 */
import { headers, type NatsConnection } from "@nats-io/nats-core";
import { jetstream, type JetStreamClient } from "@nats-io/jetstream";
import { type Logger, rateLimited } from "../observe/log.ts";
import { ask } from "./requests.ts";
import { delay } from "../util.ts";

/** How long the answer "does a stream capture the dead-letter subject?" is kept. */
const STREAM_RECHECK_MS = 60_000;
/**
 * A dead letter lost to a NATS restart is sent again, for this long (JetStream can take a while
 * to take writes after a restart), each attempt waiting TIMEOUT_MS, pauses growing to 5 s.
 */
const RETRY_FOR_MS = 60_000;
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

  /**
   * Publishes; resolves true when a new copy was stored or sent (false: duplicate or failed).
   * Retried (lookup included) for RETRY_FOR_MS: each message is dead-lettered once per gateway,
   * so one lost to a NATS restart must be sent again; the message id keeps retries to one copy.
   */
  async publish(data: Uint8Array, origin: DeadLetterOrigin): Promise<boolean> {
    const h = headers();
    h.set("Gateway-Reason", origin.reason);
    h.set("Gateway-Subject", origin.subject);
    h.set("Gateway-Stream", origin.stream);
    h.set("Gateway-Stream-Sequence", String(origin.streamSequence));
    const msgID = `${origin.stream}:${origin.streamSequence}`;
    const deadline = Date.now() + RETRY_FOR_MS;
    for (let attempt = 1; !this.signal.aborted; attempt++) {
      try {
        if (!(await this.#streamExists())) {
          this.nc.publish(this.subject, data, { headers: h });
          return true;
        }
        const ack = await this.#js.publish(this.subject, data, {
          headers: h,
          msgID,
          timeout: TIMEOUT_MS,
        });
        if (ack.duplicate) {
          this.logger.debug("dead letter already stored by another replica", { msg_id: msgID });
        }
        return !ack.duplicate;
      } catch (err) {
        // A timeout or a restart in progress is retried; too large for the server is not.
        if (Date.now() >= deadline || /max.?payload|too large/i.test(String(err))) {
          // It stays counted as invalid.
          this.#logFailure("dead-letter publish failed", { error: err, msg_id: msgID });
          return false;
        }
        await delay(Math.min(500 * attempt, 5_000), this.signal);
      }
    }
    return false;
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
