/** Entry point of one worker isolate (GATEWAY_WORKERS > 1); lib/cluster.ts supervises it. */
import { errorMessage } from "./util.ts";
import type { FromWorker, ToWorker } from "./cluster.ts";
import { type Gateway, type InstanceReport, startGateway } from "./gateway.ts";
import { createLogger, withFields } from "./log.ts";

/** The parts of a worker's global scope used here (typed without the deno.worker lib). */
interface WorkerScope {
  postMessage(message: FromWorker): void;
  onmessage: ((event: MessageEvent<ToWorker>) => void) | null;
}

/** Runs one gateway as told by the supervisor's messages. */
export function runWorker(scope: WorkerScope): void {
  let gateway: Gateway | undefined;
  let nextCollectId = 0;
  const collecting = new Map<number, (reports: InstanceReport[]) => void>();

  const allReports = (): Promise<readonly InstanceReport[]> => {
    const id = nextCollectId++;
    const { promise, resolve } = Promise.withResolvers<InstanceReport[]>();
    collecting.set(id, resolve);
    scope.postMessage({ type: "collect", id });
    return promise;
  };

  scope.onmessage = async ({ data: message }) => {
    switch (message.type) {
      case "start": {
        const logger = withFields(createLogger(message.config.logLevel), {
          worker: message.index,
        });
        try {
          gateway = await startGateway(message.config, { logger, reusePort: true, allReports });
        } catch (err) {
          scope.postMessage({ type: "start-failed", message: errorMessage(err) });
          return;
        }
        gateway.failed.then((error) =>
          scope.postMessage({ type: "failed", message: errorMessage(error) })
        );
        scope.postMessage({ type: "ready", addr: gateway.addr });
        break;
      }
      case "report-request":
        if (gateway) {
          scope.postMessage({ type: "report", id: message.id, report: gateway.report() });
        }
        break;
      case "reports":
        collecting.get(message.id)?.(message.reports);
        collecting.delete(message.id);
        break;
      case "shutdown":
        await gateway?.shutdown();
        scope.postMessage({ type: "stopped" });
        break;
    }
  };
}

if (import.meta.main) runWorker(globalThis as unknown as WorkerScope);
