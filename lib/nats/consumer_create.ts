/**
 * Creating a consumer and retrying: the ordered consumer (hedged: sent again when a node loss
 * leaves the first request unanswered), or binding and creating the durable; the timeouts and
 * pauses between tries; which status events mean a consumer must be replaced.
 */
import {
  AckPolicy,
  type Consumer,
  type ConsumerMessages,
  DeliverPolicy,
  type jetstream,
  type JetStreamManager,
} from "@nats-io/jetstream";
import { errorMessage } from "../util.ts";
import { ask, isNotFound } from "./requests.ts";

/** What to consume: the stream, the filter, and the consumer kind. */
export interface ConsumerTarget {
  readonly stream: string;
  readonly subject: string;
  /** Empty: an ordered (ephemeral) consumer per gateway; else this durable consumer. */
  readonly durableName: string;
  /** Start at the newest message of every subject the filter matches (templated routes). */
  readonly lastPerSubject?: boolean;
  /** Whether a missing durable consumer may be created (GATEWAY_CREATE_STREAMS); default true. */
  readonly createDurable?: boolean;
}

/** Pause after a failed (re)creation before the next try (the first FAST_ATTEMPTS tries). */
const RETRY_DELAY_MS = 250;
/** Longest pause between tries once they keep failing (e.g. a durable that may not be created). */
const MAX_RETRY_DELAY_MS = 5_000;
/**
 * Per-attempt timeout of the requests that (re)create a consumer, not the client's default 5 s:
 * after a node loss a request may reach a stream with no leader yet (raft election, 4-9 s on
 * nats-server 2.9) or a consumer placed on the dead node, and is never answered; a short
 * timeout retries soon after the election ends. A sound cluster answers them in milliseconds;
 * after FAST_ATTEMPTS failures the timeout grows, so a merely slow server still gets through.
 */
const FAST_REQUEST_TIMEOUT_MS = 750;
/**
 * About 20 s of fast tries: a 2.9 election has been seen to leave JetStream "temporarily
 * unavailable" for 18 s on a loaded machine, and a try that has grown to a 5 s timeout just
 * before it ends adds those seconds to the gap clients see.
 */
export const FAST_ATTEMPTS = 24;
/** An ordered consumer create not answered this soon is sent again in parallel (see hedged). */
const HEDGE_AFTER_MS = 300;
const MAX_REQUEST_TIMEOUT_MS = 5_000;
/** Request timeout and pause before the next try after `failures` consecutive failed tries. */
export function retrySchedule(failures: number): { timeoutMs: number; retryDelayMs: number } {
  if (failures < FAST_ATTEMPTS) {
    return { timeoutMs: FAST_REQUEST_TIMEOUT_MS, retryDelayMs: RETRY_DELAY_MS };
  }
  const growth = 2 ** (failures - FAST_ATTEMPTS + 1);
  return {
    timeoutMs: Math.min(MAX_REQUEST_TIMEOUT_MS, FAST_REQUEST_TIMEOUT_MS * growth),
    retryDelayMs: Math.min(MAX_RETRY_DELAY_MS, RETRY_DELAY_MS * growth),
  };
}

/**
 * Sends a second create when the first is not answered within HEDGE_AFTER_MS: after a node loss
 * the meta leader may place an R1 consumer on the dead node (until it is marked offline) and
 * never answer, while the other try usually lands on a live one. The first answer wins; a late
 * one is deleted. Both unanswered: the first's error.
 */
async function hedged(create: () => Promise<Consumer>): Promise<Consumer> {
  const first = create();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const answeredInTime = await Promise.race([
    first.then(() => true, () => true),
    new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), HEDGE_AFTER_MS))),
  ]);
  clearTimeout(timer);
  if (answeredInTime) return await first;
  const tries = [first, create()];
  const winner = await Promise.any(tries.map((p, i) => p.then((consumer) => ({ consumer, i }))))
    .catch(() => undefined);
  if (winner === undefined) return await first; // rethrows the first's error
  // A late one on a dead node cannot be deleted now; it expires (inactive_threshold, 5 min).
  void tries[1 - winner.i].then((late) => late.delete()).catch(() => {});
  return winner.consumer;
}

export function isTimeout(err: unknown): boolean {
  for (let e: unknown = err; e instanceof Error; e = e.cause) {
    if (e.name === "TimeoutError" || /^timeout$/i.test(e.message)) return true;
  }
  return false;
}

export function watchStatus(
  messages: ConsumerMessages,
  restart: (reason: string) => void,
): Promise<void> {
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

export async function openConsumer(
  js: ReturnType<typeof jetstream>,
  jsm: JetStreamManager,
  options: ConsumerTarget,
  newestAtStart: number,
): Promise<Consumer> {
  const { stream, subject, durableName } = options;
  if (durableName === "") {
    return await ask(
      `ordered consumer create on ${stream} for ${subject}`,
      () =>
        hedged(() =>
          js.consumers.get(stream, {
            // A single string: nats-server 2.9 rejects the array form.
            filter_subjects: subject,
            ...(options.lastPerSubject
              ? { deliver_policy: DeliverPolicy.LastPerSubject }
              : newestAtStart > 0
              ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: newestAtStart }
              : { deliver_policy: DeliverPolicy.All }),
          })
        ),
    );
  }
  // Binding an existing durable needs only consumer info rights (least privilege).
  try {
    return await ask(
      `consumer info ${stream} ${durableName}`,
      () => js.consumers.get(stream, durableName),
    );
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
  if (options.createDurable === false) {
    throw new Error(
      `durable consumer ${durableName} (GATEWAY_DURABLE) does not exist on stream ${stream} and GATEWAY_CREATE_STREAMS=false forbids creating it: create it with a NATS user allowed to (the gateway binds it once it exists), or set GATEWAY_CREATE_STREAMS=true`,
    );
  }
  try {
    await jsm.consumers.add(stream, {
      durable_name: durableName,
      ack_policy: AckPolicy.Explicit,
      filter_subject: subject,
      deliver_policy: DeliverPolicy.LastPerSubject,
    });
  } catch (err) {
    // Another replica may have created it meanwhile; anything else is the user's to fix.
    if (!/already in use|already exists/i.test(errorMessage(err))) {
      throw new Error(
        `durable consumer ${durableName} (GATEWAY_DURABLE) does not exist on stream ${stream} and cannot be created (${
          errorMessage(err)
        }): create it with a NATS user allowed to, or unset GATEWAY_DURABLE`,
        { cause: err },
      );
    }
  }
  return await ask(
    `consumer info ${stream} ${durableName}`,
    () => js.consumers.get(stream, durableName),
  );
}
