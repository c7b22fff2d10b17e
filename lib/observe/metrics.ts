/**
 * The gateway's metrics catalogue: every metric it exports, named namespace_subsystem_name, on the
 * registry of ./registry.ts.
 */
import {
  cpuSeconds,
  isolateStartTimeSeconds,
  OpenFdCounter,
  residentMemoryBytes,
} from "./process_metrics.ts";
import { VERSION } from "../version.ts";
import {
  Counter,
  Gauge,
  Histogram,
  Info,
  Metric,
  type MetricSnapshot,
  renderMetrics,
} from "./registry.ts";

const CLOSE_REASONS = [
  "client",
  "slow_consumer",
  "send_error",
  "idle_timeout",
  "protocol",
  "shutdown",
  "token_expired",
];
const INVALID_REASONS = ["empty", "too_large", "invalid_utf8", "invalid_json", "not_object"];

/**
 * The gateway's metrics, named namespace_subsystem_name. With several workers, client-side
 * figures add up, while NATS-side counters take the largest worker's value: every worker
 * consumes the whole subject, so they count messages, not copies.
 */
export class GatewayMetrics {
  /** Clients of every route: the process's total. */
  readonly connections: Gauge;
  // Per route (label `route`: the configured path, never a client's value, so bounded).
  readonly routeConnections: Gauge;
  readonly messagesReceived: Counter;
  readonly messagesRelayed: Counter;
  readonly messagesSkipped: Counter;
  readonly invalidPayloads: Counter;
  readonly deadLetters: Counter;
  readonly deliveries: Counter;
  readonly bytesSent: Counter;
  readonly conflations: Counter;
  readonly slowDisconnects: Counter;
  readonly consumerRestarts: Counter;
  readonly lastMessageTimestamp: Gauge;
  readonly consumerPending: Gauge;
  readonly relayDelay: Histogram;
  readonly routeValues: Gauge;
  readonly connectionsOpened = new Counter(
    "gateway_ws_connections_opened_total",
    "WebSocket clients accepted.",
  );
  readonly connectionsRejected = new Counter(
    "gateway_ws_connections_rejected_total",
    "WebSocket upgrades refused, by reason.",
    [
      { reason: "limit" },
      { reason: "bad_request" },
      { reason: "unauthorized" },
      { reason: "forbidden" },
      { reason: "origin" },
    ],
  );
  readonly upgradesAbandoned = new Counter(
    "gateway_ws_upgrades_abandoned_total",
    "Upgraded sockets that never opened (reset before the 101), let go after 10 s.",
  );
  readonly listenerRestarts = new Counter(
    "gateway_http_listener_restarts_total",
    "Times Deno's accept loop died (e.g. out of file descriptors) and the gateway listened again.",
  );
  readonly socketsHeld = new Gauge(
    "gateway_ws_sockets_held",
    "WebSocket sockets counted against GATEWAY_MAX_CONNECTIONS: opening, open, or closing.",
    "sum",
  );
  readonly connectionsClosed = new Counter(
    "gateway_ws_connections_closed_total",
    "WebSocket clients gone, by reason.",
    CLOSE_REASONS.map((reason) => ({ reason })),
  );
  readonly sendErrors = new Counter(
    "gateway_ws_send_errors_total",
    "Sends that threw; the client is removed.",
  );
  readonly clientFramesIgnored = new Counter(
    "gateway_ws_client_frames_total",
    "Frames received from clients (ignored unless a ping).",
  );
  readonly natsConnected = new Gauge(
    "gateway_nats_connected",
    "1 while connected to NATS (every worker, with GATEWAY_WORKERS > 1), else 0.",
    "min",
  );
  readonly natsReconnects = new Counter(
    "gateway_nats_reconnects_total",
    "Reconnections to NATS after a disconnect.",
    [{}],
    "max",
  );
  readonly eventLoopLate = new Gauge(
    "gateway_event_loop_late_seconds",
    "How late the event loop's 50 ms tick ran at worst over the last 1-2 s (the worst worker's).",
    "max",
  );
  readonly loadShedding = new Gauge(
    "gateway_load_shedding",
    "1 while a route is behind its stream (a message over 300 ms old with over 200 ms of sending behind it) and sends clients only the newest snapshots.",
    "max",
  );
  readonly startTime = new Gauge(
    "gateway_process_start_time_seconds",
    "Unix time the gateway started.",
    "min",
  );
  // Process-wide figures: every worker isolate reads the same process, so "max", never "sum".
  readonly buildInfo = new Info(
    "gateway_build_info",
    "Always 1; the version label says which gateway build is running.",
    { version: VERSION },
  );
  readonly processResidentMemory = new Gauge(
    "process_resident_memory_bytes",
    "Resident memory of the whole process (all workers), in bytes.",
    "max",
    residentMemoryBytes,
  );
  readonly processCpuSeconds = new Counter(
    "process_cpu_seconds_total",
    "User and system CPU time of the whole process (all workers), in seconds.",
    [{}],
    "max",
    cpuSeconds,
  );
  readonly processStartTime = new Gauge(
    "process_start_time_seconds",
    "Unix time the process started.",
    "min",
    isolateStartTimeSeconds,
  );
  /** Only where /proc/self/fd is readable: Deno allows that under --allow-all alone. */
  readonly processOpenFds: Gauge | undefined;

  /**
   * `connectionCount`: clients of every route (the unlabelled total); `routes`: the configured
   * paths, so every per-route series exists from the start.
   */
  constructor(
    connectionCount: () => number,
    openFds = new OpenFdCounter(),
    routes: readonly string[] = ["/ws/stream"],
  ) {
    const perRoute = routes.map((route) => ({ route }));
    const perRouteAnd = (key: string, values: readonly string[]) =>
      routes.flatMap((route) => values.map((value) => ({ route, [key]: value })));
    this.connections = new Gauge(
      "gateway_ws_connections",
      "WebSocket clients connected now (every route).",
      "sum",
      connectionCount,
    );
    this.routeConnections = new Gauge(
      "gateway_route_connections",
      "WebSocket clients connected now, by route.",
      "sum",
      undefined,
      perRoute,
    );
    // NATS-side counts: every worker consumes every route, so "max" counts messages, not copies.
    this.messagesReceived = new Counter(
      "gateway_nats_messages_received_total",
      "Messages received from the route's JetStream consumer.",
      perRoute,
      "max",
    );
    this.messagesRelayed = new Counter(
      "gateway_messages_relayed_total",
      "Valid messages accepted for fan-out (one per NATS message, not per client).",
      perRoute,
      "max",
    );
    this.messagesSkipped = new Counter(
      "gateway_nats_messages_skipped_total",
      "Messages not relayed although valid: older than what clients hold, duplicates, or (templated routes) a value not held.",
      perRouteAnd("reason", ["superseded", "duplicate", "not_held", "behind"]),
      "max",
    );
    this.invalidPayloads = new Counter(
      "gateway_invalid_payloads_total",
      "NATS payloads skipped as invalid, by reason.",
      perRouteAnd("reason", INVALID_REASONS),
      "max",
    );
    this.deadLetters = new Counter(
      "gateway_dead_letters_total",
      "Invalid payloads published to GATEWAY_DEAD_LETTER_SUBJECT.",
      perRoute,
    );
    this.deliveries = new Counter(
      "gateway_ws_messages_sent_total",
      "Frames handed to WebSocket clients (one per client per message).",
      perRoute,
    );
    this.bytesSent = new Counter(
      "gateway_ws_sent_bytes_total",
      "Payload bytes handed to WebSocket clients.",
      perRoute,
    );
    this.conflations = new Counter(
      "gateway_slow_client_conflations_total",
      "Snapshots not sent to a client because it was behind (a newer one replaces them).",
      perRoute,
    );
    this.slowDisconnects = new Counter(
      "gateway_slow_client_disconnects_total",
      "Clients closed with 4008 for staying behind too long.",
      perRoute,
    );
    this.consumerRestarts = new Counter(
      "gateway_nats_consumer_restarts_total",
      "Times the route's JetStream consumer was recreated (deleted consumer, recreated stream, errors).",
      perRoute,
      "max",
    );
    this.lastMessageTimestamp = new Gauge(
      "gateway_last_message_timestamp_seconds",
      "Unix time of the route's last relayed message (0 before the first; the stalest worker's).",
      "min",
      undefined,
      perRoute,
    );
    this.consumerPending = new Gauge(
      "gateway_nats_consumer_pending_messages",
      "Messages in the stream not yet delivered to the route's consumer (lag; the largest of the workers').",
      "max",
      undefined,
      perRoute,
    );
    this.relayDelay = new Histogram(
      "gateway_relay_delay_seconds",
      "From a message's stream timestamp to its fan-out: how old what clients receive is.",
      perRoute,
      "max",
    );
    this.routeValues = new Gauge(
      "gateway_route_values",
      "Template values a route holds a cache for (1 for a fixed route).",
      "max",
      undefined,
      perRoute,
    );
    this.processOpenFds = openFds.count() === null ? undefined : new Gauge(
      "process_open_fds",
      "Open file descriptors of the whole process (all workers).",
      "max",
      () => openFds.count() ?? 0,
    );
  }

  readonly #beforeSnapshot: (() => void)[] = [];

  /** Runs `update` before every snapshot (e.g. to set per-route connection counts). */
  onSnapshot(update: () => void): void {
    this.#beforeSnapshot.push(update);
  }

  snapshot(): MetricSnapshot[] {
    for (const update of this.#beforeSnapshot) update();
    return Object.values(this).filter((m): m is Metric => m instanceof Metric).map((m) =>
      m.snapshot()
    );
  }

  /** This isolate's metrics as Prometheus text. */
  render(): string {
    return renderMetrics([this.snapshot()]);
  }
}
