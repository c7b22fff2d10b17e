/**
 * Figures about the whole OS process for /metrics (Prometheus' `process_*` names), read from
 * sources that need no permission, so they work under the scoped `deno task start` flags and in
 * the compiled binary. With GATEWAY_WORKERS > 1 every isolate reads the same process-wide value.
 */
import process from "node:process";

/**
 * `read`, called at most once per synchronous run of code: one rendering of /metrics shows one
 * reading of each figure, however many snapshots it takes, and the next scrape reads again.
 */
export function oncePerTurn<T>(read: () => T): () => T {
  let held: { value: T } | undefined;
  return () => {
    if (held) return held.value;
    held = { value: read() };
    queueMicrotask(() => held = undefined);
    return held.value;
  };
}

/** Resident set size in bytes (the whole process, every isolate). */
export const residentMemoryBytes: () => number = oncePerTurn(() => Deno.memoryUsage().rss);

/** User + system CPU time in seconds (getrusage: the whole process, every thread). */
export const cpuSeconds: () => number = oncePerTurn(() => {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1e6;
});

/** Unix time in seconds at which this isolate started (the main one's: the process's). */
export function isolateStartTimeSeconds(): number {
  return Math.floor(performance.timeOrigin / 1000);
}

/** Re-reading the fd directory costs a syscall per fd; a scrape every second is plenty. */
const FD_COUNT_MAX_AGE_MS = 1_000;

/**
 * Counts this process's open file descriptors from /proc/self/fd. Deno lets a process list it
 * only under --allow-all (an --allow-read grant is not enough), so under the gateway's scoped
 * permissions it is unreadable: `count()` then returns null for good and the metric is left out.
 */
export class OpenFdCounter {
  #readable: boolean;
  #cached: { at: number; count: number } | undefined;
  readonly count: () => number | null = oncePerTurn(() => this.#read(Date.now()));

  constructor(readonly path = "/proc/self/fd") {
    // Query first: reading without a grant could prompt on a terminal.
    this.#readable = Deno.permissions.querySync({ name: "read", path }).state === "granted";
  }

  #read(now: number): number | null {
    if (!this.#readable) return null;
    if (this.#cached && now - this.#cached.at < FD_COUNT_MAX_AGE_MS) return this.#cached.count;
    try {
      let count = 0;
      for (const _ of Deno.readDirSync(this.path)) count++;
      // The listing's own directory handle is open while it runs.
      this.#cached = { at: now, count: Math.max(0, count - 1) };
      return this.#cached.count;
    } catch {
      // NotCapable (granted read, but not --allow-all) or not Linux: stop trying.
      this.#readable = false;
      return null;
    }
  }
}
