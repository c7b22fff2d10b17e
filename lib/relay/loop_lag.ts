/**
 * How late the gateway's event loop runs: a timer due every `intervalMs` notes how late each
 * tick fires. Two uses:
 * - `worstLateMs`, the gauge gateway_event_loop_late_seconds;
 * - `stalledMs()`, the time the process has spent stalled so far: lateness while it was not
 *   running (wall time less its CPU time), as when a busy machine deschedules it. The
 *   broadcasters subtract it from how long a payload waited in a client's queue, so a client is
 *   conflated for its own slowness, never for a stall that held every client's writes alike.
 *   Lateness while the gateway was busy with its own work is not a stall: under overload the
 *   clients' queues age as they should.
 */
import process from "node:process";

/** The process's CPU time (user + system), in ms. */
function cpuTimeMs(): number {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1000;
}

export interface LoopLagOptions {
  /** How often the loop is sampled (ms). Default 50. */
  readonly intervalMs?: number;
  /** Monotonic clock (ms). Default performance.now. */
  readonly now?: () => number;
  /** The process's CPU time (ms). Default cpuTimeMs. */
  readonly cpuNow?: () => number;
  /** Wall clock (ms since the epoch) for stalledSince. Default Date.now. */
  readonly wallNow?: () => number;
}

/** Ticks remembered for stalledSince: 200 × 50 ms = 10 s. */
const SAMPLES = 200;

export class LoopLag {
  readonly #intervalMs: number;
  readonly #now: () => number;
  readonly #cpuNow: () => number;
  readonly #wallNow: () => number;
  #timer: ReturnType<typeof setInterval> | undefined;
  #lastTick = 0;
  #cpuAtLastTick = 0;
  /** Time stalled at every tick so far, summed (ms). */
  #stalled = 0;
  /** [Date.now() at a tick, #stalled then], the last SAMPLES ticks: for stalledSince. */
  readonly #samples: number[] = [];
  /** Worst lateness (ms) in the current and the previous window of one second. */
  #worst = 0;
  #worstBefore = 0;
  #windowStart = 0;

  constructor(options: LoopLagOptions = {}) {
    this.#intervalMs = options.intervalMs ?? 50;
    this.#now = options.now ?? (() => performance.now());
    this.#cpuNow = options.cpuNow ?? cpuTimeMs;
    this.#wallNow = options.wallNow ?? Date.now;
    this.#samples.push(this.#wallNow(), 0);
    this.#lastTick = this.#windowStart = this.#now();
    this.#cpuAtLastTick = this.#cpuNow();
  }

  /** Starts sampling; the timer does not keep the process alive. */
  start(): void {
    if (this.#timer !== undefined) return;
    this.#lastTick = this.#windowStart = this.#now();
    this.#cpuAtLastTick = this.#cpuNow();
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
    const cpu = this.#cpuNow();
    const late = this.#lateAt(now);
    this.#stalled += this.#stallAt(now, cpu);
    this.#lastTick = now;
    this.#cpuAtLastTick = cpu;
    this.#samples.push(this.#wallNow(), this.#stalled);
    if (this.#samples.length > 2 * SAMPLES) this.#samples.splice(0, 2);
    if (now - this.#windowStart >= 1000) {
      this.#worstBefore = this.#worst;
      this.#worst = 0;
      this.#windowStart = now;
    }
    this.#worst = Math.max(this.#worst, late);
  }

  /**
   * Milliseconds the process has been stalled since it was made, including the tick overdue now
   * (a stall just ended is counted before its tick runs).
   */
  stalledMs(): number {
    return this.#stalled + this.#stallAt(this.#now(), this.#cpuNow());
  }

  /**
   * Milliseconds stalled since `wallMs` (a Date.now() time within the last ~10 s; an earlier one
   * counts from the oldest tick kept).
   */
  stalledSince(wallMs: number): number {
    const samples = this.#samples;
    let before = samples.length > 0 ? samples[1] : 0;
    for (let i = samples.length - 2; i >= 0; i -= 2) {
      if (samples[i] <= wallMs) {
        before = samples[i + 1];
        break;
      }
    }
    return this.stalledMs() - before;
  }

  /** Worst lateness of a tick over the last one to two seconds, in ms. */
  get worstLateMs(): number {
    return Math.max(this.#worst, this.#worstBefore);
  }

  #lateAt(now: number): number {
    return Math.max(0, now - this.#lastTick - this.#intervalMs);
  }

  /** The lateness of a tick at `now` that the process spent not running. */
  #stallAt(now: number, cpu: number): number {
    const notRunning = now - this.#lastTick - (cpu - this.#cpuAtLastTick);
    return Math.max(0, Math.min(this.#lateAt(now), notRunning));
  }
}
