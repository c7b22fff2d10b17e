/**
 * JavaScript cost of one client's session, from upgrade to close, without the network:
 * `Sessions.track` + `startSession` + `open` (joins the Broadcaster, is sent the cached
 * snapshot) + `close`, for 5,000 recording sockets, median of 15 rounds. This is the gateway's
 * own per-connection work on the connect → first snapshot path (Deno's upgrade not included).
 * Run: `deno run --allow-env --allow-read bench/session_cost.ts`.
 */
import { Broadcaster } from "../lib/relay/broadcaster.ts";
import { GatewayMetrics } from "../lib/observe/metrics.ts";
import { Sessions, startSession } from "../lib/http/session.ts";
import { FakeSocket } from "../tests/helpers/fake_socket.ts";

const N = 5000;
const ROUNDS = 15;

function round(): number {
  const broadcaster = new Broadcaster({ clientBufferBytes: 1 << 18, slowClientTimeoutMs: 1000 });
  broadcaster.seed("x".repeat(8000));
  const metrics = new GatewayMetrics(() => broadcaster.size);
  const sessions = new Sessions({ metrics });
  const sockets = Array.from({ length: N }, () => new FakeSocket());
  const t0 = performance.now();
  for (const socket of sockets) {
    sessions.track(socket);
    startSession(socket, {
      broadcaster,
      metrics,
      sessions,
      clientMaxFrameBytes: 4096,
      clientMaxFramesPerSecond: 10,
      now: Date.now,
    });
  }
  for (const socket of sockets) socket.dispatchEvent(new Event("open"));
  for (const socket of sockets) socket.dispatchEvent(new CloseEvent("close"));
  const ms = performance.now() - t0;
  if (sessions.held !== 0 || broadcaster.size !== 0) throw new Error("sessions left behind");
  return ms;
}

const times = Array.from({ length: ROUNDS }, round).sort((a, b) => a - b);
const median = times[ROUNDS >> 1];
console.log(
  `${N} sessions (track, start, open + snapshot, close): median ${median.toFixed(1)} ms, ` +
    `${((median / N) * 1000).toFixed(1)} µs each (min ${times[0].toFixed(1)}, max ${
      times.at(-1)!.toFixed(1)
    } ms)`,
);
