/**
 * The relayed subject's progress by stream sequence: which message may reach clients (never an
 * older or repeated one), which invalid one is dead-lettered (once), and whether the consumer is
 * keeping up with the stream. Plain state, no I/O: the gateway feeds it.
 */

/** What becomes of a received valid message. */
export type Verdict = "relay" | "duplicate" | "superseded";

/** A message as far as ordering is concerned (a BusMessage fits). */
export interface Sequenced {
  readonly streamSequence: number;
  /** Newest sequence of the subject when its consumer was created (0: none). */
  readonly newestAtStart: number;
  /** The stream's creation time: a different value means the stream was recreated. */
  readonly streamCreated: string;
}

export class RelayProgress {
  /** Newest sequence the consumer delivered (or the seeded one). */
  lastReceived = 0;
  /** Sequence of what clients hold as the latest snapshot. */
  lastRelayed = 0;
  /** Highest sequence published to the dead-letter subject. */
  lastDeadLettered = 0;
  #streamCreated = "";

  /** The cache was seeded with stored message `seq` of the stream created at `streamCreated`. */
  seeded(seq: number, streamCreated: string): void {
    this.lastReceived = this.lastRelayed = seq;
    this.#streamCreated = streamCreated;
  }

  /**
   * Notes a delivered message before it is judged. Returns true when it comes from a different
   * stream than the last one (recreated: its sequences restart at 1), after forgetting the old one's.
   */
  received(message: Sequenced): boolean {
    const changed = this.#streamCreated !== "" && message.streamCreated !== this.#streamCreated;
    if (changed) this.rebase();
    this.#streamCreated = message.streamCreated;
    this.lastReceived = Math.max(this.lastReceived, message.streamSequence);
    return changed;
  }

  /**
   * Whether a valid message reaches clients: never one at or below what they hold. A durable
   * redelivers a message whose ack was lost after newer ones were relayed: that is superseded.
   */
  judge(message: Sequenced): Verdict {
    const seq = message.streamSequence;
    if (seq === this.lastRelayed) return "duplicate";
    if (seq < this.lastRelayed || seq < message.newestAtStart) return "superseded";
    return "relay";
  }

  relayed(seq: number): void {
    this.lastRelayed = seq;
  }

  /** True the first time an invalid message is seen; a recreated consumer may deliver it again. */
  shouldDeadLetter(seq: number): boolean {
    if (seq <= this.lastDeadLettered) return false;
    this.lastDeadLettered = seq;
    return true;
  }

  /**
   * The subject's newest stored sequence, read from the stream: true (after forgetting the
   * old stream's sequences) when it is below what was received, i.e. the stream was recreated
   * or purged, so lag and the stall watch measure against the new stream at once.
   */
  observeNewest(newest: number): boolean {
    if (newest >= this.lastReceived) return false;
    this.rebase();
    return true;
  }

  /** The stream's sequences went back (recreated or purged): the old stream's mean nothing. */
  rebase(): void {
    this.lastReceived = this.lastRelayed = this.lastDeadLettered = 0;
  }
}

/**
 * Is the consumer receiving what the stream holds? Fed the subject's newest stored sequence
 * and the last one received at each check; reports how long the oldest message seen stored but
 * not yet received has waited. A message in flight is received within milliseconds, so one
 * that waits a whole check interval means the consumer is not delivering.
 */
export class FreshnessWatch {
  #behind: { seq: number; since: number } | undefined;

  /** Milliseconds a stored message has waited unreceived (0: nothing is waiting). */
  observe(newest: number, received: number, now: number): number {
    if (this.#behind !== undefined && received >= this.#behind.seq) this.#behind = undefined;
    if (this.#behind === undefined && newest > received) this.#behind = { seq: newest, since: now };
    return this.#behind === undefined ? 0 : now - this.#behind.since;
  }

  /** Forgets what was waiting (a new consumer starts, or the stream was recreated). */
  reset(): void {
    this.#behind = undefined;
  }
}

/**
 * Whether a message is worth sending or only caching. A route sheds a message only when it is
 * behind and shedding helps: the message is older than `maxAgeMs`, newer ones are already known
 * (stored, or buffered by the client), and sending all of those too would take longer than
 * `maxDrainMs` more, at the rate the route has been sending since this backlog began (the
 * time since its first message was handled, per message sent since: a moment the gateway spent on
 * something else before the backlog does not count). A burst the gateway clears quickly reaches clients whole, however late it came
 * (the proxy test: six snapshots held up while the gateway parsed 72 MB of hostile frames);
 * under overload messages age in a backlog that takes long to send, and clients skip to the
 * newest, which is always sent.
 *
 * A message's age is its relay delay (receipt time less its stream time) less two things that
 * are not the gateway falling behind: the clocks' offset, taken as the smallest delay seen over
 * the last `floorWindowMs` (the NATS server's clock and ours may differ by more than a message
 * takes), and the time the process was stalled meanwhile (lib/relay/loop_lag.ts).
 */
export class BehindWatch {
  #floor = Infinity;
  #floorBefore = Infinity;
  #floorSince = -Infinity;
  #shedding = false;
  /** When the first message of the current backlog was handled (-1: no backlog). */
  #backlogSince = -1;
  /** Messages sent (not shed) since then. */
  #sentInBacklog = 0;

  constructor(
    readonly maxAgeMs: number,
    readonly maxDrainMs: number,
    readonly floorWindowMs = 30_000,
  ) {}

  /**
   * One message, `newer` ones known after it, stored at `storedAtMs` by the stream's clock and
   * handled at `now` by ours; `stalledSince(t)`: how long the process was stalled since our time
   * t. True: cache it, do not send it.
   */
  shed(
    newer: number,
    storedAtMs: number,
    now: number,
    stalledSince: (wallMs: number) => number = () => 0,
  ): boolean {
    const age = this.#age(storedAtMs, now, stalledSince);
    if (newer === 0) {
      this.#backlogSince = -1;
      this.#shedding = false;
      return false;
    }
    if (this.#backlogSince < 0) {
      this.#backlogSince = now;
      this.#sentInBacklog = 0;
    }
    const msPerMessage = this.#sentInBacklog > 0
      ? (now - this.#backlogSince) / this.#sentInBacklog
      : 0;
    this.#shedding = age > this.maxAgeMs && newer * msPerMessage > this.maxDrainMs;
    if (!this.#shedding) this.#sentInBacklog++;
    return this.#shedding;
  }

  /** Whether the last message handled was shed. */
  get shedding(): boolean {
    return this.#shedding;
  }

  #age(storedAtMs: number, now: number, stalledSince: (wallMs: number) => number): number {
    if (now - this.#floorSince >= this.floorWindowMs) {
      this.#floorBefore = this.#floor;
      this.#floor = Infinity;
      this.#floorSince = now;
    }
    const delay = now - storedAtMs;
    this.#floor = Math.min(this.#floor, delay);
    const waited = delay - Math.min(this.#floor, this.#floorBefore);
    return waited - (waited > this.maxAgeMs ? stalledSince(now - waited) : 0);
  }
}
