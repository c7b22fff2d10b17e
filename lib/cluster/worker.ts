/** Entry point of one worker isolate (GATEWAY_WORKERS > 1); lib/cluster/supervisor.ts supervises it. */
import { errorMessage } from "../util.ts";
import {
  type FromWorker,
  PUBLISH_INTERVAL_MS,
  STALE_AFTER_MS,
  type ToWorker,
} from "./supervisor.ts";
import { type Gateway, startGateway } from "../gateway.ts";
import { type LocalState, type ProcessView, ReceivedState } from "../observe/health.ts";
import { createLogger, withFields } from "../observe/log.ts";

/** The parts of a worker's global scope used here (typed without the deno.worker lib). */
interface WorkerScope {
  postMessage(message: FromWorker): void;
  onmessage: ((event: MessageEvent<ToWorker>) => void) | null;
}

/** Publishes this worker's state to the supervisor: on `publish()`, and every PUBLISH_INTERVAL_MS. */
class StatePublisher {
  readonly #timer: ReturnType<typeof setInterval>;

  constructor(readonly scope: WorkerScope, readonly local: LocalState) {
    this.#timer = setInterval(() => this.publish(), PUBLISH_INTERVAL_MS);
  }

  publish(): void {
    const report = { health: this.local.health(), metrics: this.local.metrics() };
    this.scope.postMessage({ type: "state", report });
  }

  stop(): void {
    clearInterval(this.#timer);
  }
}

/** Runs one gateway as told by the supervisor's messages. */
export function runWorker(scope: WorkerScope): void {
  let gateway: Gateway | undefined;
  let received: ReceivedState | undefined;
  let publisher: StatePublisher | undefined;

  // Called by startGateway as it builds its handler, before it serves.
  const processView = (local: LocalState): ProcessView => {
    received = new ReceivedState(local, STALE_AFTER_MS);
    publisher = new StatePublisher(scope, local);
    return received;
  };

  scope.onmessage = async ({ data: message }) => {
    switch (message.type) {
      case "start": {
        const logger = withFields(createLogger(message.config.logLevel), {
          worker: message.index,
        });
        try {
          gateway = await startGateway(message.config, { logger, reusePort: true, processView });
        } catch (err) {
          publisher?.stop();
          scope.postMessage({ type: "start-failed", message: errorMessage(err) });
          return;
        }
        gateway.failed.then((error) =>
          scope.postMessage({ type: "failed", message: errorMessage(error) })
        );
        // State first, so the supervisor knows every worker's by the time all are ready.
        publisher?.publish();
        scope.postMessage({
          type: "ready",
          addr: gateway.addr,
          ...(gateway.adminAddr ? { adminAddr: gateway.adminAddr } : {}),
        });
        break;
      }
      case "state":
        received?.receive(message.state);
        break;
      case "shutdown":
        await gateway?.shutdown();
        publisher?.stop();
        scope.postMessage({ type: "stopped" });
        break;
    }
  };
}

if (import.meta.main) runWorker(globalThis as unknown as WorkerScope);
