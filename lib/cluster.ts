/**
 * GATEWAY_WORKERS > 1: the main isolate supervises that many workers (lib/worker.ts), each a
 * whole gateway — its own NATS consumer, cache and clients — on one shared port
 * (SO_REUSEPORT: the kernel spreads new connections across them). The supervisor starts and
 * stops them and routes the report requests that let any worker answer /health and /metrics
 * for the whole process. It holds no sockets itself.
 */
import type { Config } from "./config.ts";
import type { InstanceReport, RunningGateway } from "./gateway.ts";
import type { Logger } from "./log.ts";

/** Supervisor → worker. */
export type ToWorker =
  | { type: "start"; config: Config; index: number }
  | { type: "report-request"; id: number }
  | { type: "reports"; id: number; reports: InstanceReport[] }
  | { type: "shutdown" };

/** Worker → supervisor. */
export type FromWorker =
  | { type: "ready"; addr: Deno.NetAddr }
  | { type: "start-failed"; message: string }
  | { type: "failed"; message: string }
  | { type: "report"; id: number; report: InstanceReport }
  | { type: "collect"; id: number }
  | { type: "stopped" };

/** How long a worker may take to answer a report request before it is reported unhealthy. */
const REPORT_TIMEOUT_MS = 2_000;

class WorkerHandle {
  readonly worker: Worker;
  /** Serving: it answers report requests. */
  ready = false;
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

  /**
   * The next message of one of `types` that `matches` accepts (e.g. the answer to one
   * request among several in flight), or undefined after `timeoutMs`.
   */
  next<T extends FromWorker["type"]>(
    types: readonly T[],
    timeoutMs: number,
    matches: (message: Extract<FromWorker, { type: T }>) => boolean = () => true,
  ): Promise<Extract<FromWorker, { type: T }> | undefined> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        off();
        resolve(undefined);
      }, timeoutMs);
      const off = this.on((message) => {
        if (!(types as readonly string[]).includes(message.type)) return;
        const typed = message as Extract<FromWorker, { type: T }>;
        if (!matches(typed)) return;
        clearTimeout(timer);
        off();
        resolve(typed);
      });
    });
  }
}

/** Starts `config.workers` gateways on one port; rejects if any of them cannot start. */
export async function startCluster(config: Config, logger: Logger): Promise<RunningGateway> {
  let failWith: (error: Error) => void = () => {};
  const failed = new Promise<Error>((resolve) => (failWith = resolve));
  const handles: WorkerHandle[] = [];
  let nextRequestId = 0;
  // Each worker enforces its share, so the process as a whole stays near the limit.
  const workerConfig: Config = {
    ...config,
    maxConnections: Math.ceil(config.maxConnections / config.workers),
  };
  const startupTimeoutMs = config.natsConnectTimeoutMs * 3 + 10_000;

  const spawn = (index: number, port: number): WorkerHandle => {
    const handle = new WorkerHandle(index, (message) => failWith(new Error(message)));
    handles.push(handle);
    handle.on((message) => {
      if (message.type === "failed") failWith(new Error(message.message));
      else if (message.type === "collect") {
        void gatherReports().then((reports) =>
          handle.post({ type: "reports", id: message.id, reports })
        );
      }
    });
    // Every worker sees every invalid payload; one of them dead-letters it.
    const deadLetterSubject = index === 0 ? config.deadLetterSubject : "";
    handle.post({ type: "start", config: { ...workerConfig, port, deadLetterSubject }, index });
    return handle;
  };

  const awaitReady = async (handle: WorkerHandle): Promise<Deno.NetAddr> => {
    const answer = await Promise.race([
      handle.next(["ready", "start-failed"], startupTimeoutMs),
      failed.then((error) => ({ type: "start-failed" as const, message: error.message })),
    ]);
    if (answer === undefined) {
      throw new Error(`worker ${handle.index} did not start within ${startupTimeoutMs} ms`);
    }
    if (answer.type === "start-failed") throw new Error(answer.message);
    handle.ready = true;
    return answer.addr;
  };

  /** Every worker's report; one not serving yet, or not answering in time, shows as unhealthy. */
  async function gatherReports(): Promise<InstanceReport[]> {
    const id = nextRequestId++;
    const answers = await Promise.all(handles.map((handle) => {
      if (!handle.ready || handle.crashed) return undefined;
      const answer = handle.next(["report"], REPORT_TIMEOUT_MS, (m) => m.id === id);
      handle.post({ type: "report-request", id });
      return answer;
    }));
    const reports = answers.flatMap((a) => (a ? [a.report] : []));
    const template = reports[0];
    if (template === undefined) return [];
    return answers.map((a) =>
      a ? a.report : {
        health: {
          ...template.health,
          status: "unhealthy" as const,
          nats_connected: false,
          connections: 0,
          last_message_ts: null,
          consumer_lag: null,
        },
        metrics: [],
      }
    );
  }

  async function stopAll(): Promise<void> {
    const bound = config.shutdownTimeoutMs + 1_000;
    await Promise.all(
      handles.filter((h) => !h.crashed).map((handle) => {
        const stopped = handle.next(["stopped"], bound);
        handle.post({ type: "shutdown" });
        return stopped;
      }),
    );
    for (const handle of handles) handle.worker.terminate();
  }

  let addr: Deno.NetAddr;
  try {
    // The first worker binds (and picks the port when GATEWAY_PORT=0); the rest join it.
    addr = await awaitReady(spawn(0, config.port));
    const rest = [];
    for (let index = 1; index < config.workers; index++) rest.push(spawn(index, addr.port));
    await Promise.all(rest.map(awaitReady));
  } catch (err) {
    await stopAll();
    throw err;
  }
  logger.info("workers started", {
    addr: `${addr.hostname}:${addr.port}`,
    workers: config.workers,
  });

  let shuttingDown: Promise<void> | undefined;
  const shutdown = () => (shuttingDown ??= stopAll());
  return { addr, failed, shutdown, [Symbol.asyncDispose]: shutdown };
}
