/**
 * The `/health` report, and how the reports of several workers (GATEWAY_WORKERS > 1) combine
 * into the process's: the supervisor keeps each worker's latest published state in
 * `WorkerStates`; each worker answers from the combined copy it last received (`ProcessView`).
 */
import type { RouteHealth } from "../relay/route.ts";
import { type MetricSnapshot, renderMetrics } from "./registry.ts";
import { VERSION } from "../version.ts";

/** One isolate's state, plain data: what /health and /metrics combine across workers. */
export interface InstanceReport {
  readonly health: HealthReport;
  readonly metrics: MetricSnapshot[];
}

export interface HealthReport {
  readonly service: "gateway";
  readonly status: "healthy" | "unhealthy";
  readonly version: string;
  readonly nats_url: string;
  readonly nats_connected: boolean;
  readonly connections: number;
  readonly last_message_ts: number | null;
  readonly messages_relayed: number;
  readonly consumer_lag: number | null;
  readonly uptime_s: number;
  /** The NATS server this gateway is connected to now (redacted). */
  readonly nats_server?: string;
  /** Every route: healthy only when each is (lib/relay/route.ts). */
  readonly routes?: readonly RouteHealth[];
  /** With GATEWAY_WORKERS > 1: each worker's own view; the fields above combine them. */
  readonly workers?: readonly WorkerHealth[];
}

export type WorkerHealth = Pick<
  HealthReport,
  "status" | "nats_connected" | "connections" | "last_message_ts" | "consumer_lag"
>;

/** The report when nothing is known: never healthy. */
const NO_REPORT: HealthReport = {
  service: "gateway",
  status: "unhealthy",
  version: VERSION,
  nats_url: "",
  nats_connected: false,
  connections: 0,
  last_message_ts: null,
  messages_relayed: 0,
  consumer_lag: null,
  uptime_s: 0,
  workers: [],
};

/**
 * One report for the process from each worker's: healthy only when every worker is (and so
 * never when there are none); clients add up; the stalest last message and the largest lag
 * stand for all (each worker relays every message, so messages_relayed counts messages, not
 * copies).
 */
export function combineHealth(reports: readonly HealthReport[]): HealthReport {
  if (reports.length === 0) return NO_REPORT;
  if (reports.length === 1) return reports[0];
  const lastTimes = reports.map((r) => r.last_message_ts);
  const lags = reports.map((r) => r.consumer_lag);
  return {
    ...reports[0],
    status: reports.every((r) => r.status === "healthy") ? "healthy" : "unhealthy",
    nats_connected: reports.every((r) => r.nats_connected),
    connections: reports.reduce((sum, r) => sum + r.connections, 0),
    last_message_ts: lastTimes.includes(null) ? null : Math.min(...(lastTimes as number[])),
    messages_relayed: Math.max(...reports.map((r) => r.messages_relayed)),
    consumer_lag: lags.includes(null) ? null : Math.max(...(lags as number[])),
    uptime_s: Math.max(...reports.map((r) => r.uptime_s)),
    ...(reports[0].routes ? { routes: combineRoutes(reports) } : {}),
    workers: reports.map((r) => ({
      status: r.status,
      nats_connected: r.nats_connected,
      connections: r.connections,
      last_message_ts: r.last_message_ts,
      consumer_lag: r.consumer_lag,
    })),
  };
}

/** Each route across workers: healthy only when it is on every one; clients add up. */
function combineRoutes(reports: readonly HealthReport[]): RouteHealth[] {
  return (reports[0].routes ?? []).map((first) => {
    const same = reports.flatMap((r) => r.routes?.filter((x) => x.path === first.path) ?? []);
    const lastTimes = same.map((r) => r.last_message_ts);
    const lags = same.map((r) => r.lag);
    return {
      ...first,
      status: same.length === reports.length && same.every((r) => r.status === "healthy")
        ? "healthy"
        : "unhealthy",
      connections: same.reduce((sum, r) => sum + r.connections, 0),
      last_message_ts: lastTimes.includes(null) ? null : Math.min(...(lastTimes as number[])),
      lag: lags.includes(null) ? null : Math.max(...(lags as number[])),
    };
  });
}

/** A worker with no report to show (not started, crashed): unhealthy, nothing relayed. */
function missingWorker(template: HealthReport): HealthReport {
  return {
    ...template,
    status: "unhealthy",
    nats_connected: false,
    connections: 0,
    last_message_ts: null,
    consumer_lag: null,
    ...(template.routes
      ? {
        routes: template.routes.map((r) => ({
          ...r,
          status: "unhealthy" as const,
          connections: 0,
          last_message_ts: null,
          lag: null,
        })),
      }
      : {}),
  };
}

/** What every worker answers /health and /metrics from: the whole process, combined once. */
export interface ProcessState {
  readonly health: HealthReport;
  readonly metricsText: string;
}

/**
 * The supervisor's copy of each worker's latest published state. A worker that has not
 * published within `staleAfterMs` (blocked, stuck, gone) shows as unhealthy.
 */
export class WorkerStates {
  readonly #latest: ({ report: InstanceReport; at: number } | undefined)[];

  constructor(
    readonly count: number,
    readonly staleAfterMs: number,
    readonly now: () => number = () => performance.now(),
  ) {
    this.#latest = Array.from({ length: count }, () => undefined);
  }

  /** Stores a worker's state; true when its health status changed (worth telling at once). */
  update(index: number, report: InstanceReport): boolean {
    const before = this.#latest[index]?.report.health;
    this.#latest[index] = { report, at: this.now() };
    return before?.status !== report.health.status ||
      before.nats_connected !== report.health.nats_connected;
  }

  /** Forgets a worker (crashed): it shows as missing, hence unhealthy. */
  remove(index: number): void {
    this.#latest[index] = undefined;
  }

  /** The process's health and metrics from every worker's latest state. */
  combined(): ProcessState {
    const now = this.now();
    const known = this.#latest.filter((s) => s !== undefined);
    const template = known[0]?.report.health;
    if (template === undefined) return { health: NO_REPORT, metricsText: renderMetrics([]) };
    const health = this.#latest.map((state) => {
      if (state === undefined) return missingWorker(template);
      const fresh = now - state.at <= this.staleAfterMs;
      return fresh ? state.report.health : { ...state.report.health, status: "unhealthy" as const };
    });
    // A stale worker's last figures still count: its counters must not seem to go backwards.
    const metrics: MetricSnapshot[][] = known.map((s) => s.report.metrics);
    return { health: combineHealth(health), metricsText: renderMetrics(metrics) };
  }
}

/** This isolate's live state, as startGateway hands it to a ProcessView. */
export interface LocalState {
  health(): HealthReport;
  metrics(): MetricSnapshot[];
}

/** /health and /metrics as a worker answers them: from local copies, with no round trip. */
export interface ProcessView {
  health(): HealthReport;
  metricsText(): string;
}

/**
 * A worker's view of the process: the latest combined state the supervisor sent, unhealthy
 * when that copy is older than `staleAfterMs` (the supervisor stopped) or when this worker's
 * own live status is (so its own faults show at once).
 */
export class ReceivedState implements ProcessView {
  #latest: { state: ProcessState; at: number } | undefined;

  constructor(
    readonly local: LocalState,
    readonly staleAfterMs: number,
    readonly now: () => number = () => performance.now(),
  ) {}

  receive(state: ProcessState): void {
    this.#latest = { state, at: this.now() };
  }

  // Arrow properties, not methods: startGateway spreads a ProcessView into the handler's deps.
  readonly health = (): HealthReport => {
    const own = this.local.health();
    const latest = this.#latest;
    if (
      latest === undefined || own.status !== "healthy" ||
      this.now() - latest.at > this.staleAfterMs
    ) {
      // Before the first copy, nothing is known of the others: not even this worker's figures.
      return latest ? { ...latest.state.health, status: "unhealthy" } : NO_REPORT;
    }
    return latest.state.health;
  };

  readonly metricsText = (): string =>
    this.#latest?.state.metricsText ?? renderMetrics([this.local.metrics()]);
}
