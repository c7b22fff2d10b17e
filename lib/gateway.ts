/**
 * The composition root: one NATS connection, one HTTP server (two with an admin port) and one
 * `Route` per configured route (lib/relay/route.ts), each with its own consumer, caches and clients.
 */
import type { NatsConnection } from "@nats-io/nats-core";
import { Authenticator } from "./auth/authenticator.ts";
import { CloseCode } from "./close_codes.ts";
import type { Config } from "./config/config.ts";
import { DeadLetters } from "./nats/dead_letters.ts";
import {
  connectionCap,
  effectiveBacklog,
  readFdLimit,
  type ResilientServer,
  serveHttp,
} from "./http/listener.ts";
import { checkPortsFree } from "./http/ports.ts";
import type { HealthReport, InstanceReport, LocalState, ProcessView } from "./observe/health.ts";
import { createLogger, type Logger } from "./observe/log.ts";
import { LoopLag } from "./relay/loop_lag.ts";
import { GatewayMetrics } from "./observe/metrics.ts";
import { connectGatewayNats, resolveStreams } from "./nats/setup.ts";
import { type NatsWatch, watchNats } from "./nats/watch.ts";
import { checkPermissions } from "./config/permissions.ts";
import { redactUrl } from "./config/redact.ts";
import { Route } from "./relay/route.ts";
import { type RouteSpec, RouteTable } from "./relay/route_table.ts";
import { createHandler, type HandlerDeps } from "./http/router.ts";
import { Sessions } from "./http/session.ts";
import { delay } from "./util.ts";
import { VERSION } from "./version.ts";
import { viewerHtml } from "./http/viewer_page.ts";

/**
 * How often each route compares its stream's newest sequence with the last one received: lag,
 * and whether its consumer receives at all (/health turns unhealthy about one check after a
 * stored message is not received).
 */
const LAG_POLL_MS = 1_000;

/**
 * Bounds on what a client sends. Clients send only `{"type":"ping"}` (15 bytes, one per
 * heartbeat of client/gateway_client.ts): 4096 bytes and 20 frames a second are far above that
 * and far below what would cost the gateway anything (fixed; they were settings nobody needed).
 */
const CLIENT_MAX_FRAME_BYTES = 4096;
const CLIENT_MAX_FRAMES_PER_S = 20;

/** A running gateway as main.ts sees it: one isolate, or several (lib/cluster/supervisor.ts). */
export interface RunningGateway extends AsyncDisposable {
  /** Where the HTTP/WebSocket server listens. */
  readonly addr: Deno.NetAddr;
  /** Where /health, /readyz and /metrics are served when GATEWAY_ADMIN_PORT is set. */
  readonly adminAddr?: Deno.NetAddr;
  /** Resolves with the reason when the gateway cannot go on (e.g. NATS gone too long). */
  readonly failed: Promise<Error>;
  /** Closes every client with 1001, stops consuming, drains NATS. Idempotent. */
  shutdown(): Promise<void>;
}

export interface Gateway extends RunningGateway {
  readonly metrics: GatewayMetrics;
  readonly routes: readonly Route[];
  report(): InstanceReport;
}

export interface GatewayOptions {
  readonly logger?: Logger;
  /** How often consumer lag is measured (and a stalled consumer detected). Default 1 s. */
  readonly lagPollMs?: number;
  /** Share the ports with other isolates (SO_REUSEPORT); set by lib/cluster/supervisor.ts. */
  readonly reusePort?: boolean;
  /**
   * Set by lib/cluster/worker.ts: /health and /metrics for the whole process whichever worker answers,
   * from state the workers publish (lib/observe/health.ts), given this isolate's live state.
   */
  readonly processView?: (local: LocalState) => ProcessView;
}

/** Raised when the configuration names what this process may not reach, bind or read. */

/** Starts the gateway; rejects (NATS unreachable, permission refused, port taken) before serving. */
export async function startGateway(
  config: Config,
  options: GatewayOptions = {},
): Promise<Gateway> {
  const logger = options.logger ?? createLogger(config.logLevel);
  await checkPermissions(config);
  // A taken port is reported with its address before NATS is contacted or anything created.
  if (!options.reusePort) checkPortsFree(config);
  const nc = await connectGatewayNats(config, logger);
  const gateway = new RunningInstance(config, options, logger, nc);
  try {
    await gateway.start();
  } catch (err) {
    await gateway.abandon();
    throw err;
  }
  return gateway;
}

/** One isolate's gateway: the NATS connection, the routes, the listeners; owns all their state. */
class RunningInstance implements Gateway {
  readonly metrics: GatewayMetrics;
  readonly routes: Route[] = [];
  readonly failed: Promise<Error>;
  readonly #config: Config;
  readonly #options: GatewayOptions;
  readonly #logger: Logger;
  readonly #nc: NatsConnection;
  readonly #startedAt = Date.now();
  readonly #abort = new AbortController();
  readonly #nats: NatsWatch;
  readonly #sessions: Sessions;
  readonly #servers: ResilientServer[] = [];
  readonly #loop: LoopLag;
  #shuttingDown: Promise<void> | undefined;

  constructor(config: Config, options: GatewayOptions, logger: Logger, nc: NatsConnection) {
    this.#config = config;
    this.#options = options;
    this.#logger = logger;
    this.#nc = nc;
    this.metrics = new GatewayMetrics(
      () => this.routes.reduce((sum, route) => sum + route.connections, 0),
      undefined,
      config.routes.map((route) => route.path),
    );
    this.#loop = new LoopLag();
    this.metrics.onSnapshot(() => {
      this.routes.forEach((route) => route.updateGauges());
      this.metrics.eventLoopLate.set(this.#loop.worstLateMs / 1000);
      this.metrics.loadShedding.set(this.routes.some((route) => route.shedding) ? 1 : 0);
    });
    this.metrics.startTime.set(Math.floor(this.#startedAt / 1000));
    this.metrics.natsConnected.set(1);
    this.#nats = watchNats(nc, config, logger, this.metrics, this.#abort.signal);
    this.#sessions = new Sessions({ metrics: this.metrics });
    const { promise, resolve } = Promise.withResolvers<Error>();
    this.failed = promise;
    void this.#nats.failed.then(resolve);
    this.#routesFailed = resolve;
  }

  readonly #routesFailed: (error: Error) => void;

  get addr(): Deno.NetAddr {
    return this.#servers[0].addr;
  }

  get adminAddr(): Deno.NetAddr | undefined {
    return this.#servers[1]?.addr;
  }

  /** Streams, routes (each consuming before anyone is served), then the listeners. */
  async start(): Promise<void> {
    const config = this.#config;
    this.#loop.start();
    const streams = await resolveStreams(this.#nc, config, this.#logger);
    const table = new RouteTable(config.routes);
    const deadLetters = config.deadLetterSubject
      ? new DeadLetters(this.#nc, config.deadLetterSubject, this.#logger, this.#abort.signal)
      : undefined;
    for (const [index, spec] of config.routes.entries()) {
      const route = new Route({
        nc: this.#nc,
        config,
        spec,
        stream: streams[index],
        table,
        metrics: this.metrics,
        logger: this.#logger,
        lagPollMs: this.#options.lagPollMs ?? LAG_POLL_MS,
        ...(deadLetters ? { deadLetters } : {}),
        signal: this.#abort.signal,
        natsConnected: () => this.#nats.connected,
        loop: this.#loop,
      });
      void route.failed.then(this.#routesFailed);
      this.routes.push(route);
    }
    await Promise.all(this.routes.map((route) => route.start()));
    await this.#listen(table);
  }

  async #listen(table: RouteTable): Promise<void> {
    const config = this.#config;
    const fdLimit = config.fdLimit > 0 ? config.fdLimit : readFdLimit();
    const maxConnections = connectionCap(config.maxConnections, fdLimit, config.workers);
    const byPath = new Map(this.routes.map((route) => [route.spec.path, route]));
    const deps: Omit<HandlerDeps, "serve"> = {
      table,
      broadcasterFor: (hit) => byPath.get(hit.route.path)!.broadcasterFor(hit.value),
      metrics: this.metrics,
      logger: this.#logger,
      ...(this.#options.processView?.({
        health: () => this.health(),
        metrics: () => this.metrics.snapshot(),
      }) ?? { health: () => this.health() }),
      maxConnections,
      sessions: this.#sessions,
      auth: await Authenticator.fromConfig(config),
      authReject: config.authReject,
      allowedOrigins: config.allowedOrigins,
      idleTimeoutSeconds: config.idleTimeoutSeconds,
      clientMaxFrameBytes: CLIENT_MAX_FRAME_BYTES,
      clientMaxFramesPerSecond: CLIENT_MAX_FRAMES_PER_S,
      ...(config.viewer ? { viewerPage: viewerHtml(config.routes.map(viewerRoute)) } : {}),
    };
    const listen = (hostname: string, port: number, serve: HandlerDeps["serve"]) =>
      serveHttp(hostname, port, createHandler({ ...deps, serve }), {
        logger: this.#logger,
        metrics: this.metrics,
        reusePort: this.#options.reusePort ?? false,
      });
    const admin = config.adminPort >= 0;
    this.#servers.push(listen(config.host, config.port, admin ? "public" : "all"));
    if (admin) this.#servers.push(listen(config.adminHost, config.adminPort, "admin"));
    this.#logger.info("gateway listening", {
      addr: hostPort(this.addr),
      ...(this.adminAddr ? { admin_addr: hostPort(this.adminAddr) } : {}),
      routes: this.routes.map((r) => `${r.spec.path}=${r.spec.subject}@${r.stream}`),
      consumer: config.durableName || "ordered (per instance)",
      version: VERSION,
      fd_limit: fdLimit,
      max_connections: maxConnections,
      listen_backlog: effectiveBacklog(),
    });
  }

  health(): HealthReport {
    const routeReports = this.routes.map((route) => route.health());
    const healthy = this.#nats.connected && !this.#abort.signal.aborted &&
      routeReports.every((r) => r.status === "healthy");
    const lastTimes = routeReports.map((r) => r.last_message_ts);
    const lags = routeReports.map((r) => r.lag);
    return {
      service: "gateway",
      status: healthy ? "healthy" : "unhealthy",
      version: VERSION,
      nats_url: this.#config.natsUrlRedacted,
      // The server of the seed list this connection uses now (one node of a cluster).
      nats_server: redactUrl(this.#nc.getServer()),
      nats_connected: this.#nats.connected,
      connections: routeReports.reduce((sum, r) => sum + r.connections, 0),
      // The stalest route stands for all: a route that never relayed makes it null.
      last_message_ts: lastTimes.includes(null) ? null : Math.min(...(lastTimes as number[])),
      messages_relayed: this.metrics.messagesRelayed.get(),
      consumer_lag: lags.includes(null) ? null : Math.max(...(lags as number[])),
      uptime_s: Math.floor((Date.now() - this.#startedAt) / 1000),
      routes: routeReports,
    };
  }

  report(): InstanceReport {
    return { health: this.health(), metrics: this.metrics.snapshot() };
  }

  /** Startup failed: stop what was started, quietly. */
  async abandon(): Promise<void> {
    this.#abort.abort();
    this.#loop.stop();
    await Promise.all(this.#servers.map((server) => server.shutdown().catch(() => {})));
    await this.#nc.close().catch(() => {});
    await Promise.all(this.routes.map((route) => route.stopped()));
    this.#nats.stop();
  }

  shutdown(): Promise<void> {
    this.#shuttingDown ??= this.#stop();
    return this.#shuttingDown;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.shutdown();
  }

  /**
   * Every client gets 1001 and the gateway waits (bounded) for their close handshakes before it
   * stops the listeners: Deno's server shutdown would overtake them, and browsers would see
   * 1001 with wasClean=false. Then consumers stop and NATS is drained.
   */
  async #stop(): Promise<void> {
    const sessions = this.#sessions;
    this.#logger.info("gateway shutting down", { connections: sessions.held });
    this.#abort.abort();
    this.#loop.stop();
    for (const route of this.routes) route.closeAll(CloseCode.goingAway, "gateway shutting down");
    const timeUp = new AbortController();
    const bound = delay(this.#config.shutdownTimeoutMs, timeUp.signal);
    const clientsGone = sessions.closeAll(CloseCode.goingAway, "gateway shutting down");
    const stopServers = () => Promise.all(this.#servers.map((s) => s.shutdown()));
    await Promise.race([
      Promise.allSettled([
        clientsGone.then(stopServers),
        this.#nc.isClosed() ? Promise.resolve() : this.#nc.drain(),
        ...this.routes.map((route) => route.stopped()),
      ]),
      bound,
    ]);
    if (sessions.held > 0) {
      // Peers that never finished their close (they do not read): Deno's shutdown cuts them.
      this.#logger.warn("clients still closing at the shutdown bound", { sockets: sessions.held });
      await Promise.race([stopServers().catch(() => {}), delay(1000, timeUp.signal)]);
    }
    timeUp.abort();
    if (!this.#nc.isClosed()) await this.#nc.close().catch(() => {});
    this.#nats.stop();
    this.#logger.info("gateway stopped");
  }
}

function hostPort(addr: Deno.NetAddr): string {
  return `${addr.hostname}:${addr.port}`;
}

function viewerRoute(spec: RouteSpec) {
  return { path: spec.path, subject: spec.subject, templated: spec.param !== null };
}
