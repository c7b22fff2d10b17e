/**
 * `deno task bench`: the gateway against three reference relays (bare Deno, Node 20 + ws,
 * Bun.serve pub/sub), same clients, same run. Relays are pinned to CPU 0; this process
 * (publisher + load clients) and nats-server to CPU 1 (the task runs it under `taskset -c 1`).
 * Options are listed in bench/README.md. Results: a table, the ratios of bench/README.md's
 * targets on stdout, and JSON in bench/results/<timestamp>.json. The `encodings` scenario runs
 * text and compressed (`?encoding=deflate-raw`) clients, one after the other, on the
 * publisher's snapshots (docs/performance.md).
 */
import { connect } from "../lib/nats/transport.ts";
import { buildLoadClient, CClient, type CStats } from "../tools/load_client.ts";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { ensureStreams } from "../lib/nats/streams.ts";
import { createLogger } from "../lib/observe/log.ts";
import { NatsServer } from "../tools/nats_server.ts";
import { levelsSignal } from "../tools/signals.ts";
import { SyntheticMarket } from "../scripts/publisher.ts";

const env = Deno.env.toObject();
const quick = env.BENCH_QUICK === "1";
const N_SMALL = Number(env.BENCH_N_SMALL ?? (quick ? 200 : 1000));
const N_BIG = Number(env.BENCH_N_BIG ?? (quick ? 500 : 5000));
const FIXED_SECONDS = Number(env.BENCH_FIXED_SECONDS ?? (quick ? 3 : 10));
const STEP_SECONDS = Number(env.BENCH_STEP_SECONDS ?? (quick ? 2 : 4));
const RATES = (env.BENCH_RATES ?? "25,50,100,150,200,300,400,600,800").split(",").map(Number);
const RELAYS = (env.BENCH_RELAYS ?? "gateway,deno,node,bun").split(",");
/** Which parts run after the connect burst (always run), in this order. */
const SCENARIOS = new Set((env.BENCH_SCENARIOS ?? "fixed,steps,overload,encodings").split(","));
/** `encodings`: the gateway's client encodings compared (reference relays: text only). */
const ENCODINGS = (env.BENCH_ENCODINGS ?? "text,deflate-raw").split(",");
/** `encodings`: the fixed rate (msg/s, N_SMALL clients, BENCH_FIXED_SECONDS) well inside capacity. */
const ENCODING_RATE = Number(env.BENCH_ENCODING_RATE ?? 30);
/** `encodings`: how many times the encodings run, alternating (figures move between runs). */
const ENCODING_ROUNDS = Number(env.BENCH_ENCODING_ROUNDS ?? 1);
/** `encodings` capacity: the highest step with at least this share delivered (and p99 ≤ 250 ms). */
const CAPACITY_DELIVERED = 0.99;
/** Publish rate of the overload scenario (beyond what one core delivers to N_SMALL clients). */
const OVERLOAD_RATE = Number(env.BENCH_OVERLOAD_RATE ?? 600);
/** `c` (tools/load_client.c, the default where `cc` exists) or `js` (Deno WebSockets). */
const CLIENT = env.BENCH_CLIENT ?? "c";
const RELAY_CPUS = env.BENCH_RELAY_CPUS ?? "0";
const CLIENT_PROCS = Number(env.BENCH_CLIENT_PROCS ?? 1);
const CLIENT_CPUS = env.BENCH_CLIENT_CPUS ? expandCpuList(env.BENCH_CLIENT_CPUS) : [];

/** "0-2,5" → [0, 1, 2, 5] (taskset's list syntax). */
function expandCpuList(list: string): number[] {
  return list.split(",").flatMap((part) => {
    const [from, to = from] = part.split("-").map(Number);
    return Array.from({ length: to - from + 1 }, (_, i) => from + i);
  });
}
const P99_LIMIT_MS = 250;
const root = new URL("..", import.meta.url).pathname;
const refs = `${root}bench/refs`;

const nowUs = () => (performance.timeOrigin + performance.now()) * 1000;

// ---------- process stats from /proc ----------
const TICK_S = 0.01; // USER_HZ = 100 on Linux
function cpuSeconds(pid: number | "self"): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * TICK_S;
}
function rssMb(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  return Number(/VmRSS:\s+(\d+)/.exec(status)![1]) / 1024;
}
/** Samples the relay's RSS every 100 ms until the returned function is called (gives the peak). */
function watchRss(pid: number): () => number {
  let peak = rssMb(pid);
  const timer = setInterval(() => (peak = Math.max(peak, rssMb(pid))), 100);
  return () => {
    clearInterval(timer);
    return Math.max(peak, rssMb(pid));
  };
}

// ---------- statistics ----------
function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}
function summarize(values: number[]) {
  const sorted = Float64Array.from(values).sort();
  return {
    count: sorted.length,
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    p999: percentile(sorted, 99.9),
    max: sorted.length ? sorted[sorted.length - 1] : NaN,
  };
}

// ---------- load clients ----------
const SEQ = /^\{"seq":(\d+),"pub_us":(\d+(?:\.\d+)?)/;

class LoadClient {
  readonly socket: WebSocket;
  /** When the connect started: the first snapshot is timed from here, as a user sees it. */
  readonly startedAt = performance.now();
  openedAt = 0;
  firstAt = 0;
  lastSeq = -1;
  received = 0;
  gaps = 0;
  outOfOrder = 0;
  readonly closed: Promise<void>;
  readonly opened: Promise<void>;
  readonly first: Promise<void>;

  constructor(url: string, readonly sink: { latencies: number[]; recording: boolean }) {
    this.socket = new WebSocket(url);
    let firstResolve: () => void;
    this.first = new Promise((r) => (firstResolve = r));
    this.opened = new Promise((resolve, reject) => {
      this.socket.onopen = () => {
        this.openedAt = performance.now();
        resolve();
      };
      this.socket.onerror = () => reject(new Error("connect failed"));
    });
    this.closed = new Promise((r) => this.socket.addEventListener("close", () => r()));
    this.socket.onmessage = (event) => {
      const t = nowUs();
      if (this.firstAt === 0) {
        this.firstAt = performance.now();
        firstResolve();
      }
      const match = SEQ.exec(event.data as string);
      if (!match) return;
      const seq = Number(match[1]);
      if (this.lastSeq >= 0) {
        if (seq > this.lastSeq + 1) this.gaps += seq - this.lastSeq - 1;
        else if (seq <= this.lastSeq) this.outOfOrder++;
      }
      this.lastSeq = seq;
      this.received++;
      if (sink.recording) sink.latencies.push((t - Number(match[2])) / 1000);
    };
  }
}

// ---------- relays ----------
interface Relay {
  /** As given in BENCH_RELAYS, e.g. `gateway:2@0-1`. */
  name: string;
  kind: string;
  child: Deno.ChildProcess;
  pid: number;
  port: number;
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  return port;
}

async function startRelay(name: string, natsUrl: string): Promise<Relay> {
  const spec = /^([a-z]+)(?::(\d+))?(?:@([\d,-]+))?((?:\+\w+=[^+]*)*)$/.exec(name);
  if (!spec) {
    throw new Error(`cannot parse relay ${name}: expected name[:workers][@cpus][+VAR=value…]`);
  }
  const [, kind, workers = "1", cpus = RELAY_CPUS, extra] = spec;
  // `+VAR=value` suffixes set the relay's environment (e.g. one gateway setting against another).
  const extraEnv = Object.fromEntries(
    extra.split("+").slice(1).map((
      pair,
    ) => [pair.slice(0, pair.indexOf("=")), pair.slice(pair.indexOf("=") + 1)]),
  );
  const port = freePort();
  const commands: Record<string, string[]> = {
    gateway: [
      Deno.execPath(),
      "run",
      // Every permission: `deno task start` derives a narrower set, which costs nothing per op.
      "--allow-all",
      // BENCH_PROFILE=1 writes a V8 CPU profile of the gateway to bench/results/profile/.
      ...(env.BENCH_PROFILE ? ["--cpu-prof", `--cpu-prof-dir=${root}bench/results/profile`] : []),
      "main.ts",
    ],
    deno: [
      Deno.execPath(),
      "run",
      "-A",
      ...(env.BENCH_PROFILE ? ["--cpu-prof", `--cpu-prof-dir=${root}bench/results/profile`] : []),
      `${refs}/deno_relay.ts`,
    ],
    node: ["node", `${refs}/node_relay.mjs`],
    bun: [`${refs}/node_modules/.bin/bun`, `${refs}/bun_relay.ts`],
  };
  const command = commands[kind];
  if (!command) throw new Error(`unknown relay ${name}`);
  const child = new Deno.Command("taskset", {
    args: ["-c", cpus, ...command],
    cwd: root,
    env: {
      NATS_URL: natsUrl,
      PORT: String(port),
      GATEWAY_PORT: String(port),
      GATEWAY_HOST: "127.0.0.1",
      GATEWAY_LOG_LEVEL: "warn",
      GATEWAY_MAX_CONNECTIONS: "0",
      GATEWAY_WORKERS: workers,
      NO_COLOR: "1",
      ...extraEnv,
    },
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  const deadline = Date.now() + 20_000;
  while (true) {
    try {
      const response = await fetch(`http://127.0.0.1:${port}/health`);
      await response.body?.cancel();
      if (response.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`${name} relay did not start`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return { name, kind, child, pid: child.pid, port };
}

/**
 * BENCH_PERF=1: `perf record` of the relay during its connect burst, to
 * bench/results/profile/<relay>-burst.perf.data (Deno's Rust and the kernel, which the V8
 * profile does not show). Returns the function that stops it.
 */
async function perfBurst(relay: Relay): Promise<() => Promise<void>> {
  if (!env.BENCH_PERF) return () => Promise.resolve();
  await Deno.mkdir(`${root}bench/results/profile`, { recursive: true });
  const output = `${root}bench/results/profile/${
    relay.name.replace(/[^\w-]/g, "_")
  }-burst.perf.data`;
  const perf = new Deno.Command("perf", {
    args: ["record", "-F", "1999", "-g", "-p", String(relay.pid), "-o", output],
    stdout: "null",
    stderr: "null",
  }).spawn();
  await new Promise((r) => setTimeout(r, 300)); // attached
  return async () => {
    perf.kill("SIGINT");
    await perf.status;
  };
}

async function stopRelay(relay: Relay): Promise<void> {
  try {
    // SIGTERM lets the Deno relays exit cleanly (and write their profiles).
    relay.child.kill(relay.kind === "gateway" || relay.kind === "deno" ? "SIGTERM" : "SIGKILL");
  } catch {
    // gone
  }
  await relay.child.status;
}

// ---------- publisher ----------
class Publisher {
  seq = 0;
  inFlight = 0;
  failed = 0;
  /**
   * `levels`: tools/signals.ts's 8.3 KB snapshots (the figures of bench/README.md);
   * `market`: scripts/publisher.ts's ~6.8 KB ones (what compression is measured on), both led
   * by the `seq` and `pub_us` the load clients read.
   */
  payload: "levels" | "market" = "levels";
  readonly #market = new SyntheticMarket();
  constructor(readonly js: ReturnType<typeof jetstream>) {}

  #next(seq: number): string {
    const publishedUs = Math.round(nowUs());
    if (this.payload === "levels") return levelsSignal(seq, publishedUs);
    const snapshot = JSON.stringify(this.#market.next());
    return `{"seq":${seq},"pub_us":${publishedUs},${snapshot.slice(1)}`;
  }

  publishOne(): void {
    const seq = ++this.seq;
    this.inFlight++;
    this.js.publish("levels.signals", this.#next(seq))
      .catch(() => this.failed++)
      .finally(() => this.inFlight--);
  }

  /** Publishes at `rate` msg/s for `seconds`; returns the sequence range published. */
  async run(rate: number, seconds: number): Promise<{ first: number; last: number }> {
    const first = this.seq + 1;
    const total = Math.round(rate * seconds);
    const start = performance.now();
    for (let i = 0; i < total; i++) {
      const due = start + (i * 1000) / rate;
      const wait = due - performance.now();
      if (wait > 1) await new Promise((r) => setTimeout(r, wait));
      if (this.inFlight > 2000) await new Promise((r) => setTimeout(r, 1));
      this.publishOne();
    }
    return { first, last: this.seq };
  }
}

// ---------- scenarios ----------
async function openClients(
  port: number,
  n: number,
  sink: { latencies: number[]; recording: boolean },
): Promise<LoadClient[]> {
  const url = `ws://127.0.0.1:${port}/ws/stream`;
  const clients = Array.from({ length: n }, () => new LoadClient(url, sink));
  await Promise.all(clients.map((c) => c.opened));
  return clients;
}

async function closeClients(clients: LoadClient[]): Promise<void> {
  for (const c of clients) c.socket.close();
  await Promise.race([
    Promise.all(clients.map((c) => c.closed)),
    new Promise((r) => setTimeout(r, 5000)),
  ]);
}

async function settle(clients: LoadClient[], lastSeq: number, maxMs: number): Promise<void> {
  const deadline = performance.now() + maxMs;
  while (performance.now() < deadline) {
    if (clients.every((c) => c.lastSeq >= lastSeq)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function fixedRate(
  relay: Relay,
  publisher: Publisher,
  clients: LoadClient[],
  sink: { latencies: number[]; recording: boolean },
  rate: number,
  seconds: number,
) {
  for (const c of clients) {
    c.received = 0;
    c.gaps = 0;
    c.outOfOrder = 0;
  }
  sink.latencies = [];
  sink.recording = true;
  const relayCpu0 = cpuSeconds(relay.pid);
  const clientCpu0 = cpuSeconds("self");
  const t0 = performance.now();
  const { first, last } = await publisher.run(rate, seconds);
  await settle(clients, last, 3000);
  const elapsed = (performance.now() - t0) / 1000;
  sink.recording = false;
  const expected = (last - first + 1) * clients.length;
  const received = clients.reduce((s, c) => s + c.received, 0);
  const gaps = clients.reduce((s, c) => s + c.gaps, 0);
  const outOfOrder = clients.reduce((s, c) => s + c.outOfOrder, 0);
  return {
    rate,
    clients: clients.length,
    expected,
    received,
    gaps,
    outOfOrder,
    deliveriesPerSecond: received / seconds,
    latencyMs: summarize(sink.latencies),
    relayCpu: (cpuSeconds(relay.pid) - relayCpu0) / elapsed,
    clientCpu: (cpuSeconds("self") - clientCpu0) / elapsed,
    relayRssMb: rssMb(relay.pid),
  };
}

type Step = Awaited<ReturnType<typeof fixedRate>>;

/** No loss, p99 ≤ 250 ms: the step scenario's bar. */
const noLoss = (step: Step) =>
  step.received === step.expected && step.gaps === 0 && step.latencyMs.p99 <= P99_LIMIT_MS;

/**
 * Raises the rate through RATES until a step fails `passes` (default: p99 > 250 ms or any loss);
 * the last good deliveries/s.
 */
async function stepUp(
  name: string,
  runStep: (rate: number) => Promise<Step>,
  passes: (step: Step) => boolean = noLoss,
) {
  const steps = [];
  let maxDeliveriesPerSecond = 0;
  for (const rate of RATES) {
    const step = await runStep(rate);
    const ok = passes(step);
    steps.push({ ...step, ok });
    console.error(
      `${name}: ${rate} msg/s → ${Math.round(step.deliveriesPerSecond)} deliveries/s, p99 ${
        step.latencyMs.p99.toFixed(1)
      } ms, ${step.received}/${step.expected}, relay cpu ${step.relayCpu.toFixed(2)}, client cpu ${
        step.clientCpu.toFixed(2)
      }, rss ${step.relayRssMb.toFixed(0)} MB`,
    );
    if (!ok) break;
    maxDeliveriesPerSecond = step.deliveriesPerSecond;
    // Let the relay's queues empty before the next step.
    await new Promise((r) => setTimeout(r, 500));
  }
  return { steps, maxDeliveriesPerSecond };
}

async function benchRelay(name: string, natsUrl: string, publisher: Publisher) {
  const relay = await startRelay(name, natsUrl);
  const sink = { latencies: [] as number[], recording: false };
  const result: Record<string, unknown> = { relay: name, client: "js" };
  try {
    // Something cached, so connects get a snapshot.
    publisher.publishOne();
    const probe = new LoadClient(`ws://127.0.0.1:${relay.port}/ws/stream`, sink);
    await probe.first;
    probe.socket.close();
    await new Promise((r) => setTimeout(r, 500));
    const rssIdle0 = rssMb(relay.pid);

    // Connect burst: from each connect's start (and from its `open`) to the first frame.
    const big = await openClients(relay.port, N_BIG, sink);
    await Promise.race([
      Promise.all(big.map((c) => c.first)),
      new Promise((r) => setTimeout(r, 10_000)),
    ]);
    const got = big.filter((c) => c.firstAt > 0);
    result.firstSnapshotMs = {
      ...summarize(got.map((c) => c.firstAt - c.startedAt)),
      missing: N_BIG - got.length,
    };
    result.snapshotAfterOpenMs = summarize(got.map((c) => c.firstAt - c.openedAt));
    await new Promise((r) => setTimeout(r, 1000));
    result.memoryPerIdleConnectionKb = ((rssMb(relay.pid) - rssIdle0) * 1024) / N_BIG;
    console.error(`${name}: burst of ${N_BIG} connects done`);

    const run = (clients: LoadClient[], rate: number, seconds: number) =>
      fixedRate(relay, publisher, clients, sink, rate, seconds);
    if (SCENARIOS.has("fixed")) {
      result.fixedBig = await run(big, 4, FIXED_SECONDS);
      console.error(`${name}: ${N_BIG} clients × 4 msg/s done`);
    }
    await closeClients(big.slice(N_SMALL));
    const small = big.slice(0, N_SMALL);
    await runLoadScenarios(name, relay, result, (rate, seconds) => run(small, rate, seconds));
    await closeClients(small);
    if (SCENARIOS.has("encodings")) console.error(`${name}: encodings: needs BENCH_CLIENT=c`);
  } finally {
    await stopRelay(relay);
  }
  return result;
}

/** 4 msg/s, the stepped rates and the overload, at N_SMALL clients (both client kinds). */
async function runLoadScenarios(
  name: string,
  relay: Relay,
  result: Record<string, unknown>,
  run: (rate: number, seconds: number) => Promise<Step>,
): Promise<void> {
  if (SCENARIOS.has("fixed")) {
    result.fixedSmall = await run(4, FIXED_SECONDS);
    console.error(`${name}: ${N_SMALL} clients × 4 msg/s done`);
  }
  if (SCENARIOS.has("steps")) {
    Object.assign(result, await stepUp(name, (rate) => run(rate, STEP_SECONDS)));
  }
  if (SCENARIOS.has("overload")) {
    // Let what the last step left queued drain first, so the growth is this run's.
    await new Promise((r) => setTimeout(r, 3000));
    const rssBeforeMb = rssMb(relay.pid);
    const peakRss = watchRss(relay.pid);
    const step = await run(OVERLOAD_RATE, FIXED_SECONDS);
    const rssPeakMb = peakRss();
    result.overload = { ...step, rssBeforeMb, rssPeakMb, rssGrowthMb: rssPeakMb - rssBeforeMb };
    console.error(
      `${name}: overload ${OVERLOAD_RATE} msg/s × ${N_SMALL} → ${
        Math.round(step.deliveriesPerSecond)
      } deliveries/s, p99 age ${step.latencyMs.p99.toFixed(1)} ms, rss ${
        rssBeforeMb.toFixed(0)
      } → ${rssPeakMb.toFixed(0)} MB`,
    );
  }
}

// ---------- compiled load client (BENCH_CLIENT=c) ----------

/**
 * BENCH_CLIENT_PROCS client processes sharing `n` connections. Stats add up; latency
 * percentiles are the worst process's (conservative: the processes' samples are not merged).
 */
class CClientGroup {
  readonly clients: CClient[];

  constructor(binary: string, port: number, n: number, path?: string) {
    const procs = Math.max(1, Math.min(CLIENT_PROCS, n));
    this.clients = Array.from({ length: procs }, (_, i) => {
      const share = Math.floor(n / procs) + (i < n % procs ? 1 : 0);
      const cpu = CLIENT_CPUS.length ? CLIENT_CPUS[i % CLIENT_CPUS.length] : undefined;
      return new CClient(binary, port, share, cpu, path);
    });
  }

  async ready(): Promise<void> {
    await Promise.all(this.clients.map((c) => c.ready()));
  }

  async stats(): Promise<CStats> {
    const all = await Promise.all(this.clients.map((c) => c.stats()));
    const sum = (f: (s: CStats) => number) => all.reduce((total, s) => total + f(s), 0);
    const worst = (f: (s: CStats) => number) => Math.max(...all.map(f));
    return {
      received: sum((s) => s.received),
      bytes: sum((s) => s.bytes),
      binary: sum((s) => s.binary),
      gaps: sum((s) => s.gaps),
      outOfOrder: sum((s) => s.outOfOrder),
      open: sum((s) => s.open),
      closed: sum((s) => s.closed),
      latency: {
        count: sum((s) => s.latency.count),
        p50: worst((s) => s.latency.p50),
        p99: worst((s) => s.latency.p99),
        p999: worst((s) => s.latency.p999),
        max: worst((s) => s.latency.max),
      },
      snapshot: {
        count: sum((s) => s.snapshot.count),
        p50: worst((s) => s.snapshot.p50),
        p99: worst((s) => s.snapshot.p99),
      },
      first: {
        count: sum((s) => s.first.count),
        p50: worst((s) => s.first.p50),
        p99: worst((s) => s.first.p99),
        max: worst((s) => s.first.max),
      },
    };
  }

  async count(): Promise<number> {
    return (await Promise.all(this.clients.map((c) => c.count()))).reduce((a, b) => a + b, 0);
  }

  /** CPU seconds of each client process (taskset execs the client, so the pid is the client's). */
  cpuSeconds(): number[] {
    return this.clients.map((c) => cpuSeconds(c.child.pid));
  }

  async quit(): Promise<void> {
    await Promise.all(this.clients.map((c) => c.quit()));
  }
}

async function buildCClient(): Promise<string> {
  // A prebuilt client (e.g. a static build carried to a machine without a compiler).
  if (env.BENCH_CLIENT_BIN) return env.BENCH_CLIENT_BIN;
  await Deno.mkdir(`${root}bench/results`, { recursive: true });
  const built = await buildLoadClient(`${root}bench/results/client`);
  if (!built.zlib) {
    console.error("tools/load_client.c built without zlib: compressed frames are not timed");
  }
  return built.path;
}

async function fixedRateC(
  relay: Relay,
  publisher: Publisher,
  client: CClientGroup,
  clients: number,
  rate: number,
  seconds: number,
) {
  await client.stats(); // reset
  const relayCpu0 = cpuSeconds(relay.pid);
  const clientCpu0 = client.cpuSeconds();
  const t0 = performance.now();
  const { first, last } = await publisher.run(rate, seconds);
  const expected = (last - first + 1) * clients;
  // Wait for stragglers without resetting, so the percentiles cover every delivery of the step
  // (under overload the stragglers are the oldest snapshots).
  const deadline = performance.now() + 3000;
  while ((await client.count()) < expected && performance.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
  }
  const total = await client.stats();
  const elapsed = (performance.now() - t0) / 1000;
  const relayCpuSeconds = cpuSeconds(relay.pid) - relayCpu0;
  return {
    rate,
    clients,
    expected,
    received: total.received,
    gaps: total.gaps,
    outOfOrder: total.outOfOrder,
    deliveriesPerSecond: total.received / seconds,
    latencyMs: total.latency,
    /** Payload bytes per frame received (compressed frames as sent). */
    bytesPerDelivery: total.bytes / total.received,
    binaryFrames: total.binary,
    /** The relay's CPU (user + system, 10 ms ticks) per frame received, NATS side included. */
    relayCpuUsPerDelivery: (relayCpuSeconds * 1e6) / total.received,
    relayCpu: relayCpuSeconds / elapsed,
    // The busiest client process: near 1.0 means the load client, not the relay, is the limit.
    clientCpu: Math.max(...client.cpuSeconds().map((cpu, i) => (cpu - clientCpu0[i]) / elapsed)),
    relayRssMb: rssMb(relay.pid),
  };
}

async function benchRelayC(name: string, natsUrl: string, publisher: Publisher, binary: string) {
  const relay = await startRelay(name, natsUrl);
  const result: Record<string, unknown> = { relay: name, client: "c" };
  try {
    publisher.publishOne();
    await new Promise((r) => setTimeout(r, 500));
    const rssIdle0 = rssMb(relay.pid);
    // Connect burst: every connect starts at once; each times its snapshot from its start.
    const stopPerf = await perfBurst(relay);
    const big = new CClientGroup(binary, relay.port, N_BIG);
    await big.ready();
    let stats = await big.stats();
    const deadline = performance.now() + 10_000;
    while (stats.first.count < N_BIG && performance.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      stats = await big.stats();
    }
    await stopPerf();
    result.firstSnapshotMs = { ...stats.first, missing: N_BIG - stats.first.count };
    result.snapshotAfterOpenMs = stats.snapshot;
    if (stats.first.count < N_BIG) {
      console.error(`${name}: ${N_BIG - stats.first.count} without a snapshot`);
    }
    await new Promise((r) => setTimeout(r, 1000));
    result.memoryPerIdleConnectionKb = ((rssMb(relay.pid) - rssIdle0) * 1024) / N_BIG;
    console.error(`${name}: burst of ${N_BIG} connects done`);
    if (SCENARIOS.has("fixed")) {
      result.fixedBig = await fixedRateC(relay, publisher, big, N_BIG, 4, FIXED_SECONDS);
      console.error(`${name}: ${N_BIG} clients × 4 msg/s done`);
    }
    await big.quit();
    const small = new CClientGroup(binary, relay.port, N_SMALL);
    await small.ready();
    await new Promise((r) => setTimeout(r, 500));
    await runLoadScenarios(
      name,
      relay,
      result,
      (rate, seconds) => fixedRateC(relay, publisher, small, N_SMALL, rate, seconds),
    );
    await small.quit();
    if (SCENARIOS.has("encodings")) {
      result.encodings = await encodingScenarios(name, relay, publisher, binary);
    }
  } finally {
    await stopRelay(relay);
  }
  return result;
}

type EncodingStep = Awaited<ReturnType<typeof fixedRateC>>;

/**
 * The publisher's snapshots to N_SMALL clients of each encoding in turn (a reference relay: text
 * only; it ignores the query): ENCODING_RATE msg/s for FIXED_SECONDS, then the steps, where
 * capacity is the highest step with ≥ 99% delivered and p99 ≤ 250 ms (issue 22).
 */
async function encodingScenarios(
  name: string,
  relay: Relay,
  publisher: Publisher,
  binary: string,
) {
  const encodings = relay.kind === "gateway" ? ENCODINGS : ["text"];
  const runs: Record<string, { fixed: EncodingStep; steps: unknown[]; capacity: number }[]> = {};
  publisher.payload = "market";
  try {
    for (let round = 0; round < ENCODING_ROUNDS; round++) {
      for (const encoding of encodings) {
        const label = `${name} ${encoding}`;
        const clients = new CClientGroup(
          binary,
          relay.port,
          N_SMALL,
          `/ws/stream?encoding=${encoding}`,
        );
        await clients.ready();
        const deadline = performance.now() + 10_000;
        while ((await clients.stats()).first.count < N_SMALL && performance.now() < deadline) {
          await new Promise((r) => setTimeout(r, 100));
        }
        const run = (rate: number, seconds: number) =>
          fixedRateC(relay, publisher, clients, N_SMALL, rate, seconds);
        const fixed = await run(ENCODING_RATE, FIXED_SECONDS);
        console.error(
          `${label}: ${ENCODING_RATE} msg/s × ${N_SMALL}: ${
            fixed.bytesPerDelivery.toFixed(0)
          } B/delivery, relay ${fixed.relayCpuUsPerDelivery.toFixed(2)} µs CPU/delivery, p99 ${
            fixed.latencyMs.p99.toFixed(1)
          } ms, ${fixed.received}/${fixed.expected}`,
        );
        const { steps, maxDeliveriesPerSecond } = await stepUp(
          label,
          (rate) => run(rate, STEP_SECONDS),
          (step) =>
            step.received >= CAPACITY_DELIVERED * step.expected &&
            step.latencyMs.p99 <= P99_LIMIT_MS,
        );
        await clients.quit();
        (runs[encoding] ??= []).push({ fixed, steps, capacity: maxDeliveriesPerSecond });
        // Let the relay see the clients go and empty its queues before the next encoding.
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
  } finally {
    publisher.payload = "levels";
  }
  return runs;
}

function fmt(n: unknown, digits = 1): string {
  return typeof n === "number" && Number.isFinite(n) ? n.toFixed(digits) : "-";
}

/** Why a reference relay cannot run here, or null; installs bench/refs' packages on first use. */
async function unavailable(kind: string): Promise<string | null> {
  // The bare Deno relay imports nats.js from bench/refs' node_modules (its package.json) too.
  if (kind === "gateway") return null;
  if (kind === "node") {
    const ok = await new Deno.Command("node", { args: ["--version"], stdout: "null" }).output()
      .then((o) => o.success, () => false);
    if (!ok) return "node is not installed";
  }
  try {
    await Deno.stat(`${refs}/node_modules`);
  } catch {
    console.error("installing reference relays (npm ci in bench/refs)");
    let ok = false;
    try {
      ok = (await new Deno.Command("npm", { args: ["ci", "--silent"], cwd: refs }).spawn().status)
        .success;
    } catch {
      // No npm here: the relay is skipped with the reason, the others still run.
    }
    if (!ok) return "npm ci failed in bench/refs (is npm installed?)";
  }
  if (kind === "bun") {
    try {
      await Deno.stat(`${refs}/node_modules/.bin/bun`);
    } catch {
      return "bench/refs/node_modules/.bin/bun is missing (the bun package's binary did not install)";
    }
  }
  return null;
}

/** The C client's binary, or undefined for Deno WebSocket clients. */
async function loadClient(): Promise<string | undefined> {
  if (CLIENT === "js") return undefined;
  try {
    return await buildCClient();
  } catch (err) {
    if (env.BENCH_CLIENT === "c") throw err;
    console.error(`${(err as Error).message}: using Deno WebSocket clients (BENCH_CLIENT=js)`);
    return undefined;
  }
}

// deno-lint-ignore no-explicit-any
type R = Record<string, any>;

function printTable(results: R[]): void {
  const rows: [string, (r: R) => string][] = [
    [
      `max deliveries/s (N=${N_SMALL}, p99≤250ms, no loss)`,
      (r) => fmt(r.maxDeliveriesPerSecond, 0),
    ],
    [
      `overload ${OVERLOAD_RATE} msg/s × ${N_SMALL}: deliveries/s`,
      (r) => fmt(r.overload?.deliveriesPerSecond, 0),
    ],
    [`overload: p99 age of delivered snapshots ms`, (r) => fmt(r.overload?.latencyMs.p99)],
    [
      `overload: RSS before → peak MB`,
      (r) =>
        r.overload ? `${fmt(r.overload.rssBeforeMb, 0)} → ${fmt(r.overload.rssPeakMb, 0)}` : "-",
    ],
    [`p99 latency ms, ${N_BIG} clients × 4 msg/s`, (r) => fmt(r.fixedBig?.latencyMs.p99)],
    [`p99 latency ms, ${N_SMALL} clients × 4 msg/s`, (r) => fmt(r.fixedSmall?.latencyMs.p99)],
    [
      `first snapshot from connect start p50 / p99 ms (${N_BIG} burst)`,
      (r) => `${fmt(r.firstSnapshotMs?.p50, 2)} / ${fmt(r.firstSnapshotMs?.p99, 2)}`,
    ],
    [
      `first snapshot from open p50 / p99 ms`,
      (r) => `${fmt(r.snapshotAfterOpenMs?.p50, 2)} / ${fmt(r.snapshotAfterOpenMs?.p99, 2)}`,
    ],
    ["memory per idle connection KB", (r) => fmt(r.memoryPerIdleConnectionKb)],
  ];
  console.log(`\n| metric | ${results.map((r) => r.relay).join(" | ")} |`);
  console.log(`|---|${results.map(() => "---").join("|")}|`);
  for (const [label, get] of rows) {
    console.log(`| ${label} | ${results.map((r) => r.skipped ? "skipped" : get(r)).join(" | ")} |`);
  }
}

/** Each gateway variant against each reference relay: the ratios, then its targets. */
function printRatios(results: R[]): void {
  const isGateway = (r: R) => r.relay.startsWith("gateway");
  const ran = results.filter((r) => !r.skipped);
  for (const g of ran.filter(isGateway)) {
    for (const o of ran.filter((r) => !isGateway(r))) {
      const ratio = (f: (r: R) => number) => fmt(f(g) / f(o), 2);
      console.log(
        `ratio ${g.relay}/${o.relay}: max deliveries ${ratio((r) => r.maxDeliveriesPerSecond)}, ` +
          `overload p99 age ${ratio((r) => r.overload?.latencyMs.p99)}, ` +
          `overload RSS growth ${ratio((r) => r.overload?.rssGrowthMb)}, ` +
          `first snapshot p99 ${ratio((r) => r.firstSnapshotMs?.p99)}, ` +
          `p99@${N_BIG}×4 ${ratio((r) => r.fixedBig?.latencyMs.p99)}, ` +
          `memory/conn ${ratio((r) => r.memoryPerIdleConnectionKb)}`,
      );
    }
    // The first run of that kind (`deno`, `deno@0`, …).
    const ref = (kind: string) => ran.find((r) => r.relay.replace(/[:@+].*$/, "") === kind);
    const check = (what: string, ok: boolean | undefined) =>
      console.log(
        `target ${g.relay}: ${what}: ${ok === undefined ? "not measured" : ok ? "met" : "NOT met"}`,
      );
    const deno = ref("deno"), node = ref("node"), bun = ref("bun");
    const has = (...xs: unknown[]) => xs.every((x) => typeof x === "number" && Number.isFinite(x));
    const cmp = (a: number, b: number, ok: (a: number, b: number) => boolean) =>
      has(a, b) ? ok(a, b) : undefined;
    check(
      `overload p99 age ≤ ${P99_LIMIT_MS} ms`,
      cmp(g.overload?.latencyMs.p99, 0, (a) => a <= P99_LIMIT_MS),
    );
    check("overload RSS growth ≤ 100 MB", cmp(g.overload?.rssGrowthMb, 0, (a) => a <= 100));
    for (const o of [deno, node]) {
      check(
        `first snapshot p99 ≤ ${o?.relay ?? "?"}'s`,
        cmp(g.firstSnapshotMs?.p99, o?.firstSnapshotMs?.p99, (a, b) => a <= b),
      );
    }
    check(
      "p99 at 5,000 × 4 msg/s ≤ bun's",
      cmp(g.fixedBig?.latencyMs.p99, bun?.fixedBig?.latencyMs.p99, (a, b) => a <= b),
    );
    check(
      "max deliveries ≥ 2× deno's",
      cmp(g.maxDeliveriesPerSecond, deno?.maxDeliveriesPerSecond, (a, b) => a >= 2 * b),
    );
    check(
      "max deliveries ≥ node's",
      cmp(g.maxDeliveriesPerSecond, node?.maxDeliveriesPerSecond, (a, b) => a >= b),
    );
    check(
      "memory per idle connection ≤ 1.10 × deno's",
      cmp(g.memoryPerIdleConnectionKb, deno?.memoryPerIdleConnectionKb, (a, b) => a <= 1.1 * b),
    );
  }
}

/** The median of each figure over an encoding's rounds. */
function encodingFigures(runs: R[] | undefined) {
  if (!runs?.length) return undefined;
  const median = (f: (run: R) => number) => {
    const values = runs.map(f).sort((a, b) => a - b);
    const middle = (values.length - 1) / 2;
    return (values[Math.floor(middle)] + values[Math.ceil(middle)]) / 2;
  };
  return {
    bytesPerDelivery: median((r) => r.fixed.bytesPerDelivery),
    relayCpuUsPerDelivery: median((r) => r.fixed.relayCpuUsPerDelivery),
    p99: median((r) => r.fixed.latencyMs.p99),
    delivered: median((r) => r.fixed.received / r.fixed.expected),
    capacity: median((r) => r.capacity),
  };
}

/** The `encodings` scenario: a table per relay and encoding, then issue 22's targets. */
function printEncodings(results: R[]): void {
  const rows = results.filter((r) => r.encodings).flatMap((r) =>
    Object.entries(r.encodings as Record<string, R[]>).map(([encoding, runs]) => ({
      relay: r.relay as string,
      encoding,
      rounds: runs.length,
      ...encodingFigures(runs)!,
    }))
  );
  if (rows.length === 0) return;
  console.log(
    `\n| relay | encoding | B/delivery (${ENCODING_RATE} msg/s × ${N_SMALL}) | relay CPU µs/delivery | p99 ms | delivered | capacity deliveries/s (≥99%, p99≤250) |`,
  );
  console.log("|---|---|---|---|---|---|---|");
  for (const row of rows) {
    console.log(
      `| ${row.relay} | ${row.encoding} | ${fmt(row.bytesPerDelivery, 0)} | ${
        fmt(row.relayCpuUsPerDelivery, 2)
      } | ${fmt(row.p99)} | ${fmt(100 * row.delivered, 2)}% | ${fmt(row.capacity, 0)} |`,
    );
  }
  const find = (kind: string, encoding: string) =>
    rows.find((row) => row.relay.replace(/[:@+].*$/, "") === kind && row.encoding === encoding);
  for (
    const plain of rows.filter((row) => row.relay.startsWith("gateway") && row.encoding === "text")
  ) {
    const compressed = rows.find((row) => row.relay === plain.relay && row.encoding !== "text");
    const ratio = (f: (row: typeof plain) => number, other: typeof plain | undefined) =>
      other ? f(other) / f(plain) : NaN;
    const check = (what: string, value: number, ok: (v: number) => boolean) =>
      console.log(
        `target ${plain.relay}: ${what}: ${fmt(value, 2)} ${
          Number.isFinite(value) ? ok(value) ? "met" : "NOT met" : "not measured"
        }`,
      );
    check(
      "compressed bytes/delivery ≤ 0.30 × plain",
      ratio((row) => row.bytesPerDelivery, compressed),
      (v) => v <= 0.3,
    );
    check(
      "relay CPU/delivery compressed ≤ 0.85 × plain",
      ratio((row) => row.relayCpuUsPerDelivery, compressed),
      (v) => v <= 0.85,
    );
    check(
      "capacity compressed ≥ 1.2 × plain",
      ratio((row) => row.capacity, compressed),
      (v) => v >= 1.2,
    );
    for (const kind of ["deno", "bun"]) {
      const ref = find(kind, "text");
      const refCapacity = ref ? ref.capacity : NaN;
      console.log(
        `ratio ${plain.relay}/${kind} capacity: plain ${
          fmt(plain.capacity / refCapacity, 2)
        }, compressed ${fmt((compressed?.capacity ?? NaN) / refCapacity, 2)}`,
      );
      if (kind === "deno") {
        check(`plain capacity ≥ ${kind}'s`, plain.capacity / refCapacity, (v) => v >= 1);
      }
    }
  }
}

if (import.meta.main) {
  await using nats = await NatsServer.start();
  const nc = await connect({ servers: nats.url });
  await ensureStreams(await jetstreamManager(nc), createLogger("warn"));
  const publisher = new Publisher(jetstream(nc));
  const cClient = await loadClient();
  const results: R[] = [];
  for (const name of RELAYS) {
    const why = await unavailable(name.replace(/[:@+].*$/, ""));
    if (why !== null) {
      console.error(`--- ${name}: skipped: ${why}`);
      results.push({ relay: name, skipped: why });
      continue;
    }
    console.error(`--- ${name}`);
    results.push(
      cClient
        ? await benchRelayC(name, nats.url, publisher, cClient)
        : await benchRelay(name, nats.url, publisher),
    );
  }
  await nc.close();
  printTable(results);
  printRatios(results);
  printEncodings(results);
  await Deno.mkdir(`${root}bench/results`, { recursive: true });
  const file = `${root}bench/results/${new Date().toISOString().replace(/[:.]/g, "-")}.json`;
  const config = {
    N_SMALL,
    N_BIG,
    FIXED_SECONDS,
    STEP_SECONDS,
    RATES,
    OVERLOAD_RATE,
    CLIENT,
    ENCODINGS,
    ENCODING_RATE,
    ENCODING_ROUNDS,
  };
  await Deno.writeTextFile(
    file,
    JSON.stringify({ date: new Date().toISOString(), config, results }, null, 2),
  );
  console.log(`results: ${file}`);
}
