/**
 * Whether the gateway itself is behind: its event loop runs late.
 *
 * Deno writes the frames JavaScript queued only while JavaScript yields. When the gateway cannot
 * keep up (more messages × clients than one core writes), the loop runs in long cycles: messages
 * wait in the NATS socket while Deno writes, then come in one burst, and with only a byte bound
 * each burst queues up to ~31 snapshots per client, so every client sees data as old as the
 * cycle. That is when the broadcaster's count bound (GATEWAY_CLIENT_MAX_QUEUED_SNAPSHOTS) must
 * hold: each client gets at most that many unwritten snapshots, and the newest when it has room.
 *
 * A burst alone is not that: a publisher's burst, or what a kept consumer delivers at once after
 * a reconnect, arrives in one read too, and a loop that keeps up writes it within milliseconds.
 * Conflating it would cost clients that keep up a message for nothing. So the count bound holds
 * only while this says the loop is behind: a tick was more than `lateMs` late within the last
 * `holdMs`, or the bound itself had to hold within it (`sustain`), which keeps it on while the
 * overload lasts even though the bound shortens the cycles that first tripped it.
 */

export interface LoopLagOptions {
  /** A tick this much later than due (ms) means the loop is behind. */
  readonly lateMs: number;
  /** How long (ms) the loop counts as behind after a late tick or a `sustain()`. */
  readonly holdMs?: number;
  /** How often the loop is sampled (ms). */
  readonly intervalMs?: number;
  readonly now?: () => number;
  /** Told when the state changes (for logs and metrics). */
  readonly changed?: (behind: boolean, lateMs: number) => void;
}

export class LoopLag {
  readonly #lateMs: number;
  readonly #holdMs: number;
  readonly #intervalMs: number;
  readonly #now: () => number;
  readonly #changed: (behind: boolean, lateMs: number) => void;
  #timer: ReturnType<typeof setInterval> | undefined;
  #lastTick = 0;
  #behindUntil = -Infinity;
  #reported = false;
  /** Worst lateness (ms) in the current and the previous window of one second. */
  #worst = 0;
  #worstBefore = 0;
  #windowStart = 0;

  constructor(options: LoopLagOptions) {
    this.#lateMs = options.lateMs;
    this.#holdMs = options.holdMs ?? 1000;
    this.#intervalMs = options.intervalMs ?? 50;
    this.#now = options.now ?? Date.now;
    this.#changed = options.changed ?? (() => {});
  }

  /** Starts sampling; the timer does not keep the process alive. */
  start(): void {
    if (this.#timer !== undefined) return;
    this.#lastTick = this.#windowStart = this.#now();
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
    this.#report(now, late);
  }

  /**
   * Whether the loop counts as behind, as of its last tick: asked for every client a payload
   * would overfill, so it reads no clock (a stalled loop's next tick is late, and says so).
   */
  get behind(): boolean {
    return this.#lastTick < this.#behindUntil;
  }

  /** The count bound had to hold while behind: the overload goes on, stay behind. */
  sustain(): void {
    this.#behindUntil = this.#lastTick + this.#holdMs;
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
