/**
 * Whether the gateway itself is behind, which is when the broadcasters' count bound
 * (GATEWAY_CLIENT_MAX_QUEUED_SNAPSHOTS) holds.
 *
 * Deno writes the frames JavaScript queued only while JavaScript yields. When the gateway cannot
 * keep up (more messages × clients than one core writes), the loop runs in long cycles: messages
 * wait in the NATS socket while Deno writes, then come in one burst, and with only a byte bound
 * each burst queues up to ~31 snapshots per client, so every client sees data as old as the
 * cycle, and Deno's queues hold up to 256 KiB per client. That is when the count bound must hold:
 * each client gets at most that many unwritten snapshots, and the newest when it has room.
 *
 * A burst alone is not that: a publisher's burst, or what a kept consumer delivers at once after
 * a reconnect, arrives in one read too, and a loop that keeps up writes it within milliseconds.
 * Conflating it would cost clients that keep up a message for nothing. So the gateway is behind
 * for `holdMs` after
 * - a tick more than `lateMs` late (the loop's cycles are long), or
 * - a payload fanned out while Deno's queues held more than `maxUnwrittenBytes` in all (the
 *   start of an overload, before a tick can be late: this keeps the queues, and memory, small),
 * and stays behind while, over each 250 ms, the bound and the clients it left behind hold back at
 * least `shedRatio` of the deliveries (`record`): the bound shortens the cycles that tripped it
 * (under overload at 600 msg/s ticks are then 35-60 ms late, as at 100 msg/s on a loop that keeps
 * up), and only the share held back tells the two apart (~85% against ~20%).
 */

/** A tick this late means the gateway is behind (overload cycles run 250-350 ms). */
export const LOOP_LATE_MS = 100;

/** Bytes waiting in Deno's queues, all clients together, past which the gateway is behind. */
export const MAX_UNWRITTEN_BYTES = 64 * 1024 * 1024;

export interface LoopLagOptions {
  /** A tick this much later than due (ms) means the loop is behind. Default LOOP_LATE_MS. */
  readonly lateMs?: number;
  /** Unwritten bytes (all clients) past which a fan-out means behind. Default MAX_UNWRITTEN_BYTES. */
  readonly maxUnwrittenBytes?: number;
  /** How long (ms) the loop counts as behind after a trip or a window that shed enough. */
  readonly holdMs?: number;
  /** The share of deliveries held back over a window that keeps the loop behind. Default 0.5. */
  readonly shedRatio?: number;
  /** How often the loop is sampled (ms). */
  readonly intervalMs?: number;
  readonly now?: () => number;
  /** Told when the state changes (for logs and metrics). */
  readonly changed?: (behind: boolean, lateMs: number) => void;
}

export class LoopLag {
  readonly #lateMs: number;
  readonly #maxUnwrittenBytes: number;
  readonly #holdMs: number;
  readonly #intervalMs: number;
  readonly #shedRatio: number;
  readonly #now: () => number;
  readonly #changed: (behind: boolean, lateMs: number) => void;
  #timer: ReturnType<typeof setInterval> | undefined;
  #lastTick = 0;
  #behindUntil = -Infinity;
  #reported = false;
  /** Deliveries offered and held back since `#shedSince`: judged every 250 ms. */
  #offered = 0;
  #held = 0;
  #shedSince = 0;
  /** Worst lateness (ms) in the current and the previous window of one second. */
  #worst = 0;
  #worstBefore = 0;
  #windowStart = 0;

  constructor(options: LoopLagOptions = {}) {
    this.#lateMs = options.lateMs ?? LOOP_LATE_MS;
    this.#maxUnwrittenBytes = options.maxUnwrittenBytes ?? MAX_UNWRITTEN_BYTES;
    this.#holdMs = options.holdMs ?? 1000;
    this.#intervalMs = options.intervalMs ?? 50;
    this.#shedRatio = options.shedRatio ?? 0.5;
    this.#now = options.now ?? Date.now;
    this.#changed = options.changed ?? (() => {});
  }

  /** Starts sampling; the timer does not keep the process alive. */
  start(): void {
    if (this.#timer !== undefined) return;
    this.#lastTick = this.#windowStart = this.#shedSince = this.#now();
    this.#timer = setInterval(() => this.tick(), this.#intervalMs);
    Deno.unrefTimer(this.#timer);
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** One sample (the timer's; tests call it with their own clock). */
  tick(): void {
    const now = this.#now();
    const late = Math.max(0, now - this.#lastTick - this.#intervalMs);
    this.#lastTick = now;
    if (now - this.#windowStart >= 1000) {
      this.#worstBefore = this.#worst;
      this.#worst = 0;
      this.#windowStart = now;
    }
    this.#worst = Math.max(this.#worst, late);
    if (late > this.#lateMs) this.#behindUntil = now + this.#holdMs;
    if (now - this.#shedSince >= 250) {
      const shedding = this.#held > 0 && this.#held >= this.#shedRatio * this.#offered;
      if (shedding && now < this.#behindUntil) this.#behindUntil = now + this.#holdMs;
      this.#offered = this.#held = 0;
      this.#shedSince = now;
    }
    this.#report(now, late);
  }

  /**
   * Whether the loop counts as behind, as of its last tick: asked for every client a payload
   * would overfill, so it reads no clock (a stalled loop's next tick is late, and says so).
   */
  get behind(): boolean {
    return this.#lastTick < this.#behindUntil;
  }

  /**
   * One payload's fan-out: `offered` clients, `held` of them not sent it by the count bound (or
   * still behind because of it; a client behind by its own byte or age bound, one that stopped
   * reading, is not load the gateway sheds), `unwritten` bytes already waiting in their queues.
   */
  record(offered: number, held: number, unwritten: number): void {
    this.#offered += offered;
    this.#held += held;
    if (unwritten > this.#maxUnwrittenBytes && !this.behind) {
      this.#behindUntil = this.#lastTick + this.#holdMs;
    }
  }

  /** Worst lateness of a tick over the last one to two seconds, in ms. */
  get worstLateMs(): number {
    return Math.max(this.#worst, this.#worstBefore);
  }

  #report(now: number, late: number): void {
    const behind = now < this.#behindUntil;
    if (behind === this.#reported) return;
    this.#reported = behind;
    this.#changed(behind, late);
  }
}
