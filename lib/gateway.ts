/**
 * The composition root: one NATS connection, one HTTP server (two with an admin port) and one
 * `Route` per configured route (lib/relay/route.ts), each with its own consumer, caches and clients.
 */
import type { NatsConnection } from "@nats-io/nats-core";
import { jetstreamManager } from "@nats-io/jetstream";
import { Authenticator } from "./auth/auth.ts";
import { CloseCode } from "./relay/broadcaster.ts";
import type { Config } from "./config/config.ts";
import { DeadLetters } from "./nats/dead_letters.ts";
import {
  connectionCap,
  effectiveBacklog,
  LISTEN_BACKLOG,
  readFdLimit,
  type ResilientServer,
  serveResilient,
} from "./http/listener.ts";
import type { HealthReport, InstanceReport, LocalState, ProcessView } from "./observe/health.ts";
import { createLogger, type Logger } from "./observe/log.ts";
import { LoopLag } from "./relay/loop_lag.ts";
import { GatewayMetrics } from "./observe/metrics.ts";
import { connectNats } from "./nats/connection.ts";
import { NatsUnavailableError } from "./nats/errors.ts";
import { findStream, platformStreamFor, setUpStreams, StreamSetupError } from "./nats/streams.ts";
import { checkPermissions } from "./config/permissions.ts";
import { redactUrl } from "./config/redact.ts";
import { Route } from "./relay/route.ts";
import { type RouteSpec, RouteTable } from "./relay/route_table.ts";
import { createHandler, type HandlerDeps } from "./http/router.ts";
import { Sessions } from "./http/session.ts";
import { delay, errorMessage } from "./util.ts";
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
  const nc = await connect(config, logger);
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

/**
 * Binds and releases each configured port, so a taken one is reported with its address before
 * anything else happens (port 0, any free port, cannot be taken). The bind is without
 * SO_REUSEPORT, so it fails on a port another gateway's workers share too: workers listen with
 * it, and would otherwise join that gateway's without a word.
 */
export function checkPortsFree(config: Config): void {
  const ports: [string, string, number][] = [[
    "GATEWAY_HOST/GATEWAY_PORT",
    config.host,
    config.port,
  ]];
  if (config.adminPort > 0) {
    ports.push(["GATEWAY_ADMIN_PORT", config.adminHost, config.adminPort]);
  }
  for (const [names, hostname, port] of ports) {
    if (port === 0) continue;
    try {
      Deno.listen({ hostname, port }).close();
    } catch (err) {
      if (!(err instanceof Deno.errors.AddrInUse)) throw err;
      throw new AddressInUseError(
        `${hostname}:${port} (${names}) is already in use: stop what listens there or choose another port`,
        { cause: err },
      );
    }
  }
}

/** The listen address is taken by another process. */
export class AddressInUseError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "AddressInUseError";
  }
}

/** One listener that survives EMFILE in Deno's accept loop (lib/http/listener.ts). */
function serveHttp(
  hostname: string,
  port: number,
  handler: Deno.ServeHandler<Deno.NetAddr>,
  options: { logger: Logger; metrics: GatewayMetrics; reusePort: boolean },
): ResilientServer {
  const { logger, metrics } = options;
  return serveResilient(
    {
      hostname,
      port,
      // Every port, not only the public one: a storm's connects wait here for the gateway.
      tcpBacklog: LISTEN_BACKLOG,
      ...(options.reusePort ? { reusePort: true } : {}),
      onListen: () => {},
      onError: (err) => {
        logger.error("http handler failed", { error: err });
        return new Response("internal error\n", { status: 500 });
      },
    },
    handler,
    { logger, onListenerLost: () => metrics.listenerRestarts.inc() },
  );
}

async function connect(config: Config, logger: Logger): Promise<NatsConnection> {
  const nc = await connectNats({
    servers: config.natsServers,
    connectTimeoutMs: config.natsConnectTimeoutMs,
    name: "gateway",
    logger,
    credentials: config,
  }).catch((err) => {
    throw err instanceof NatsUnavailableError ? err : new NatsUnavailableError(
      `Cannot connect to NATS at ${config.natsUrlRedacted}: ${errorMessage(err)}`,
      { cause: err },
    );
  });
  logger.info("nats connected", { nats_url: config.natsUrlRedacted, server: nc.getServer() });
  return nc;
}

/**
 * Platform streams (GATEWAY_CREATE_STREAMS), then each route's stream: the one it names, or the
 * one the server says captures its subject; startup fails naming the route when none does.
 */
async function resolveStreams(
  nc: NatsConnection,
  config: Config,
  logger: Logger,
): Promise<string[]> {
  const jsm = await jetstreamManager(nc);
  const streams: string[] = [];
  for (const spec of config.routes) {
    const stream = spec.stream ?? await findStream(jsm, spec.filterSubject) ??
      // Not there yet: a platform stream that would capture it is created below.
      (config.createStreams ? platformStreamFor(spec.filterSubject) : undefined);
    if (stream === undefined) {
      throw new StreamSetupError(
        `No stream captures ${spec.filterSubject} (GATEWAY_ROUTES entry ${spec.path}): create one, or name it as ${spec.path}=${spec.subject}@STREAM`,
      );
    }
    streams.push(stream);
  }
  for (const [index, spec] of config.routes.entries()) {
    await setUpStreams(jsm, {
      ...config,
      stream: streams[index],
      subject: spec.filterSubject,
      route: spec.path,
      // The platform streams once; each route's stream is then only checked.
      createStreams: config.createStreams && index === 0,
      durableName: index === 0 ? config.durableName : "",
    }, logger);
  }
  return streams;
}

interface NatsWatch {
  readonly connected: boolean;
  /** Resolves when the connection is gone for good or out for longer than allowed. */
  readonly failed: Promise<Error>;
  stop(): void;
}

/** Tracks the connection; an outage longer than natsMaxOutageMs fails the gateway. */
function watchNats(
  nc: NatsConnection,
  config: Config,
  logger: Logger,
  metrics: GatewayMetrics,
  signal: AbortSignal,
): NatsWatch {
  let connected = true;
  let outageTimer: ReturnType<typeof setTimeout> | undefined;
  const { promise: failed, resolve: failWith } = Promise.withResolvers<Error>();
  (async () => {
    for await (const s of nc.status()) {
      if (s.type === "disconnect") {
        connected = false;
        metrics.natsConnected.set(0);
        logger.warn("nats disconnected; reconnecting", { server: s.server });
        if (config.natsMaxOutageMs > 0 && outageTimer === undefined) {
          outageTimer = setTimeout(() => {
            failWith(
              new NatsUnavailableError(
                `NATS unreachable for ${config.natsMaxOutageMs} ms (GATEWAY_NATS_MAX_OUTAGE_MS); exiting so a supervisor restarts the gateway`,
              ),
            );
          }, config.natsMaxOutageMs);
        }
      } else if (s.type === "reconnect") {
        connected = true;
        metrics.natsConnected.set(1);
        metrics.natsReconnects.inc();
        clearTimeout(outageTimer);
        outageTimer = undefined;
        logger.info("nats reconnected", { server: s.server });
      }
    }
  })();
  nc.closed().then((err) => {
    clearTimeout(outageTimer);
    connected = false;
    metrics.natsConnected.set(0);
    if (!signal.aborted) {
      failWith(
        new NatsUnavailableError(
          `NATS connection closed: ${err ? errorMessage(err) : "by the server"}`,
        ),
      );
    }
  });
  return {
    get connected() {
      return connected;
    },
    failed,
    stop: () => clearTimeout(outageTimer),
  };
}
