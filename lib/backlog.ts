/**
 * The public port's accept queue: how many connects the kernel holds while the gateway is busy.
 *
 * Deno.serve listens with a fixed backlog of 511 (`ss -ltn` shows it; no option changes it). In
 * a reconnect storm (every dashboard reconnecting after a deploy or a network blip) connects
 * arrive faster than one thread accepts them; past 511 waiting, Linux drops the SYN and the
 * client retries after 1 s, then 3 s, 7 s: a blank screen for seconds, whatever JavaScript does.
 * Several listeners on one port (SO_REUSEPORT) each get their own queue of 511; the kernel
 * spreads connects across them by address hash. Measured (bench/README.md): a burst of 5,000
 * connects to one core, p99 from connect start to first snapshot 3.1 s with one listener, 1.0 s
 * with 8, 0.48 s with 16. A listener costs one descriptor and an accept loop that idles.
 */

/** Deno's listen backlog per listener (ext/net; capped by net.core.somaxconn, 4096 since 5.4). */
export const DENO_LISTEN_BACKLOG = 511;

/** Most listeners one isolate opens, whatever GATEWAY_LISTEN_BACKLOG asks. */
export const MAX_LISTENERS = 64;

/**
 * Whether Deno lets this process share a port (`reusePort`): only with `--unstable-net` (the start
 * task and the compiled binary pass it, from deno.json). Without it Deno exits the process on the
 * first `reusePort` listen, so it is detected, by an API the same flag brings, not tried.
 */
export function reusePortAllowed(): boolean {
  return typeof (Deno as { listenDatagram?: unknown }).listenDatagram === "function";
}

/**
 * Listeners each isolate opens on the public port so that `workers` isolates together queue at
 * least `backlog` connects. One where SO_REUSEPORT does not spread connects (not Linux) or is not
 * allowed (no `--unstable-net`).
 */
export function listenersPerIsolate(
  backlog: number,
  workers: number,
  os: typeof Deno.build.os = Deno.build.os,
  shareable: boolean = reusePortAllowed(),
): number {
  if (os !== "linux" || !shareable) return 1;
  const total = Math.ceil(backlog / DENO_LISTEN_BACKLOG);
  return Math.min(MAX_LISTENERS, Math.max(1, Math.ceil(total / Math.max(1, workers))));
}
