/**
 * GATEWAY_WORKERS > 1: the main isolate supervises that many workers (lib/cluster/worker.ts), each a
 * whole gateway — its own NATS consumer, cache and clients — on one shared port
 * (SO_REUSEPORT: the kernel spreads new connections across them). The supervisor starts and
 * stops them, and relays state: each worker publishes its health and metrics, the supervisor
 * combines them and sends the result to every worker, so any worker answers /health and
 * /metrics for the whole process from a local copy, with no round trip per request. It holds
 * no sockets itself.
 */
import type { Config } from "../config/config.ts";
import type { RunningGateway } from "../gateway.ts";
import { checkPortsFree } from "../http/ports.ts";
import type { InstanceReport } from "../observe/health.ts";
import { type ProcessState, WorkerStates } from "../observe/health.ts";
import type { Logger } from "../observe/log.ts";
import { checkPermissions } from "../config/permissions.ts";

/** Supervisor → worker. */
export type ToWorker =
  | { type: "start"; config: Config; index: number }
  | { type: "state"; state: ProcessState }
  | { type: "shutdown" };

/** Worker → supervisor. */
export type FromWorker =
  | { type: "ready"; addr: Deno.NetAddr; adminAddr?: Deno.NetAddr }
  | { type: "start-failed"; message: string }
  | { type: "failed"; message: string }
  | { type: "state"; report: InstanceReport }
  | { type: "stopped" };

/**
 * How often a worker publishes its state and the supervisor sends the combined state out; so
 * also the most a health change waits before every worker's copy shows it (the supervisor
 * passes a change of status on at once). Each wake-up of an idle isolate costs ~0.2 ms of CPU,
 * so this is a trade: at 400 ms, two idle workers spend ~0.3% of a core on it.
 */
export const PUBLISH_INTERVAL_MS = 400;
export const STALE_AFTER_MS = 4 * PUBLISH_INTERVAL_MS;

class WorkerHandle {
  readonly worker: Worker;
  /** Died of an uncaught error: nothing left to ask or stop. */
  crashed = false;
  readonly #listeners = new Set<(message: FromWorker) => void>();

  constructor(readonly index: number, onCrash: (message: string) => void) {
    this.worker = new Worker(new URL("./worker.ts", import.meta.url), {
      type: "module",
      name: `gateway-worker-${index}`,
    });
    this.worker.onmessage = (event: MessageEvent<FromWorker>) => {
      for (const listener of this.#listeners) listener(event.data);
    };
    this.worker.onerror = (event) => {
      // Handled here: an uncaught error in a worker must not take the supervisor down with it.
      event.preventDefault();
      this.crashed = true;
      onCrash(`worker ${index} crashed: ${event.message}`);
    };
  }

  post(message: ToWorker): void {
    this.worker.postMessage(message);
  }

  on(listener: (message: FromWorker) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** The next message of one of `types`, or undefined after `timeoutMs`. */
  next<T extends FromWorker["type"]>(
    types: readonly T[],
    timeoutMs: number,
  ): Promise<Extract<FromWorker, { type: T }> | undefined> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        off();
        resolve(undefined);
      }, timeoutMs);
      const off = this.on((message) => {
        if (!(types as readonly string[]).includes(message.type)) return;
        clearTimeout(timer);
        off();
        resolve(message as Extract<FromWorker, { type: T }>);
      });
    });
  }
}

/** Starts `config.workers` gateways on one port; rejects if any of them cannot start. */
export async function startCluster(config: Config, logger: Logger): Promise<RunningGateway> {
  // What the scope refuses is said as in one isolate (startGateway), before the port is tried.
  await checkPermissions(config);
  // Workers share the port (SO_REUSEPORT): checked first, or they would join another gateway's.
  checkPortsFree(config);
  const cluster = new Cluster(config);
  let addrs: WorkerAddrs;
  try {
    // The first worker binds (and picks the ports when they are 0); the rest join it.
    addrs = await cluster.awaitReady(cluster.spawn(0, config.port, config.adminPort));
    const adminPort = addrs.adminAddr?.port ?? config.adminPort;
    const rest = [];
    for (let index = 1; index < config.workers; index++) {
      rest.push(cluster.spawn(index, addrs.addr.port, adminPort));
    }
    await Promise.all(rest.map((handle) => cluster.awaitReady(handle)));
  } catch (err) {
    await cluster.shutdown();
    throw err;
  }
  const { addr, adminAddr } = addrs;
  logger.info("workers started", {
    addr: `${addr.hostname}:${addr.port}`,
    ...(adminAddr ? { admin_addr: `${adminAddr.hostname}:${adminAddr.port}` } : {}),
    workers: config.workers,
  });
  const shutdown = () => cluster.shutdown();
  return {
    addr,
    ...(adminAddr ? { adminAddr } : {}),
    failed: cluster.failed,
    shutdown,
    [Symbol.asyncDispose]: shutdown,
  };
}

interface WorkerAddrs {
  readonly addr: Deno.NetAddr;
  readonly adminAddr?: Deno.NetAddr;
}

/** The supervisor's state: the workers, their published states, and the process's outcome. */
class Cluster {
  readonly failed: Promise<Error>;
  readonly #failWith: (error: Error) => void;
  readonly #config: Config;
  /** What each worker runs: its share of the connection limit, so the process stays near it. */
  readonly #workerConfig: Config;
  readonly #handles: WorkerHandle[] = [];
  readonly #states: WorkerStates;
  readonly #startupTimeoutMs: number;
  /** Also what turns a silent worker's state stale in everyone's copy. */
  readonly #broadcastTimer: ReturnType<typeof setInterval>;
  #stopping: Promise<void> | undefined;

  constructor(config: Config) {
    this.#config = config;
    this.#workerConfig = {
      ...config,
      maxConnections: Math.ceil(config.maxConnections / config.workers),
    };
    this.#states = new WorkerStates(config.workers, STALE_AFTER_MS);
    this.#startupTimeoutMs = config.natsConnectTimeoutMs * 3 + 10_000;
    const { promise, resolve } = Promise.withResolvers<Error>();
    this.failed = promise;
    this.#failWith = resolve;
    this.#broadcastTimer = setInterval(() => this.#broadcastState(), PUBLISH_INTERVAL_MS);
  }

  spawn(index: number, port: number, adminPort: number): WorkerHandle {
    const handle = new WorkerHandle(index, (message) => {
      this.#states.remove(index);
      this.#broadcastState();
      this.#failWith(new Error(message));
    });
    this.#handles.push(handle);
    handle.on((message) => {
      if (message.type === "failed") this.#failWith(new Error(message.message));
      else if (message.type === "state" && this.#states.update(index, message.report)) {
        this.#broadcastState();
      }
    });
    // Every worker sees every invalid payload; one of them dead-letters it.
    const deadLetterSubject = index === 0 ? this.#config.deadLetterSubject : "";
    handle.post({
      type: "start",
      config: { ...this.#workerConfig, port, adminPort, deadLetterSubject },
      index,
    });
    return handle;
  }

  async awaitReady(handle: WorkerHandle): Promise<WorkerAddrs> {
    const timeoutMs = this.#startupTimeoutMs;
    const answer = await Promise.race([
      handle.next(["ready", "start-failed"], timeoutMs),
      this.failed.then((error) => ({ type: "start-failed" as const, message: error.message })),
    ]);
    if (answer === undefined) {
      throw new Error(`worker ${handle.index} did not start within ${timeoutMs} ms`);
    }
    if (answer.type === "start-failed") throw new Error(answer.message);
    return answer;
  }

  shutdown(): Promise<void> {
    this.#stopping ??= this.#stopAll();
    return this.#stopping;
  }

  /** Sends every worker the process's state, combined once here rather than per request. */
  #broadcastState(): void {
    const state = this.#states.combined();
    for (const handle of this.#handles) if (!handle.crashed) handle.post({ type: "state", state });
  }

  async #stopAll(): Promise<void> {
    clearInterval(this.#broadcastTimer);
    const bound = this.#config.shutdownTimeoutMs + 1_000;
    await Promise.all(
      this.#handles.filter((h) => !h.crashed).map((handle) => {
        const stopped = handle.next(["stopped"], bound);
        handle.post({ type: "shutdown" });
        return stopped;
      }),
    );
    for (const handle of this.#handles) handle.worker.terminate();
  }
}
