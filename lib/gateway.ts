/**
 * The composition root: one NATS connection, one HTTP server (two with an admin port) and one
 * `Route` per configured route (lib/route.ts), each with its own consumer, caches and clients.
 */
import type { NatsConnection } from "@nats-io/transport-deno";
import { jetstreamManager } from "@nats-io/jetstream";
import { Authenticator } from "./auth.ts";
import { CloseCode } from "./broadcaster.ts";
import type { Config } from "./config.ts";
import { DeadLetters } from "./dead_letters.ts";
import { connectionCap, readFdLimit, type ResilientServer, serveResilient } from "./fd_limit.ts";
import type { HealthReport, LocalState, ProcessView } from "./health.ts";
import { createLogger, type Logger } from "./log.ts";
import { GatewayMetrics, type MetricSnapshot } from "./metrics.ts";
import { connectNats, NatsUnavailableError } from "./nats/connection.ts";
import { findStream, platformStreamFor, setUpStreams, StreamSetupError } from "./nats/streams.ts";
import { checkPermissions } from "./permissions.ts";
import { redactUrl } from "./redact.ts";
import { Route } from "./route.ts";
import { RouteTable } from "./routes.ts";
import { createHandler, type HandlerDeps } from "./server.ts";
import { Sessions } from "./session.ts";
import { delay, errorMessage } from "./util.ts";
import { VERSION } from "./version.ts";
import { viewerHtml } from "./viewer_page.ts";

/**
 * How often each route compares its stream's newest sequence with the last one received: lag,
 * and whether its consumer receives at all (/health turns unhealthy about one check after a
 * stored message is not received).
 */
const LAG_POLL_MS = 1_000;

/** A running gateway as main.ts sees it: one isolate, or several (lib/cluster.ts). */
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

/** One isolate's state, plain data: what /health and /metrics combine across workers. */
export interface InstanceReport {
  readonly health: HealthReport;
  readonly metrics: MetricSnapshot[];
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
  /** Share the ports with other isolates (SO_REUSEPORT); set by lib/cluster.ts. */
  readonly reusePort?: boolean;
  /**
   * Set by lib/worker.ts: /health and /metrics for the whole process whichever worker answers,
   * from state the workers publish (lib/health.ts), given this isolate's live state.
   */
  readonly processView?: (local: LocalState) => ProcessView;
}

/** Raised when the configuration names what this process may not reach, bind or read. */
export { PermissionScopeError } from "./permissions.ts";

/** Starts the gateway; rejects (NATS unreachable, permission refused, port taken) before serving. */
export async function startGateway(
  config: Config,
  options: GatewayOptions = {},
): Promise<Gateway> {
  const logger = options.logger ?? createLogger(config.logLevel);
  const startedAt = Date.now();
  await checkPermissions(config);
  const table = new RouteTable(config.routes);
  const routes: Route[] = [];
  const metrics = new GatewayMetrics(
    () => routes.reduce((sum, route) => sum + route.connections, 0),
    undefined,
    config.routes.map((route) => route.path),
  );
  metrics.onSnapshot(() => routes.forEach((route) => route.updateGauges()));
  metrics.startTime.set(Math.floor(startedAt / 1000));

  const nc = await connect(config, logger);
  metrics.natsConnected.set(1);
  const abort = new AbortController();
  const nats = watchNats(nc, config, logger, metrics, abort.signal);
  const sessions = new Sessions({ metrics });
  const fdLimit = config.fdLimit > 0 ? config.fdLimit : readFdLimit();
  const maxConnections = connectionCap(config.maxConnections, fdLimit, config.workers);
  const servers: ResilientServer[] = [];
  try {
    const streams = await resolveStreams(nc, config, logger);
    const deadLetters = config.deadLetterSubject
      ? new DeadLetters(nc, config.deadLetterSubject, logger, abort.signal)
      : undefined;
    for (const [index, spec] of config.routes.entries()) {
      routes.push(
        new Route({
          nc,
          config,
          spec,
          stream: streams[index],
          table,
          metrics,
          logger,
          lagPollMs: options.lagPollMs ?? LAG_POLL_MS,
          ...(deadLetters ? { deadLetters } : {}),
          signal: abort.signal,
          natsConnected: () => nats.connected,
        }),
      );
    }
    await Promise.all(routes.map((route) => route.start()));
    const handlerDeps: Omit<HandlerDeps, "serve"> = {
      table,
      broadcasterFor: (match) => byPath.get(match.route.path)!.broadcasterFor(match.value),
      metrics,
      logger,
      ...(options.processView?.({ health, metrics: () => metrics.snapshot() }) ?? { health }),
      maxConnections,
      sessions,
      auth: await Authenticator.fromConfig(config),
      authReject: config.authReject,
      allowedOrigins: config.allowedOrigins,
      idleTimeoutSeconds: config.idleTimeoutSeconds,
      clientMaxFrameBytes: config.clientMaxFrameBytes,
      clientMaxFramesPerSecond: config.clientMaxFramesPerSecond,
      ...(config.viewer
        ? {
          viewerPage: viewerHtml(
            config.routes.map((r) => ({ path: r.path, subject: r.subject, templated: !!r.param })),
          ),
        }
        : {}),
    };
    const byPath = new Map(routes.map((route) => [route.spec.path, route]));
    const listen = (hostname: string, port: number, serve: HandlerDeps["serve"]) =>
      serveHttp(hostname, port, createHandler({ ...handlerDeps, serve }), {
        logger,
        metrics,
        reusePort: options.reusePort ?? false,
      });
    const admin = config.adminPort >= 0;
    servers.push(listen(config.host, config.port, admin ? "public" : "all"));
    if (admin) servers.push(listen(config.adminHost, config.adminPort, "admin"));
  } catch (err) {
    abort.abort();
    await Promise.all(servers.map((server) => server.shutdown().catch(() => {})));
    await nc.close().catch(() => {});
    await Promise.all(routes.map((route) => route.stopped()));
    throw err;
  }
  const [server, adminServer] = servers;
  logger.info("gateway listening", {
    addr: `${server.addr.hostname}:${server.addr.port}`,
    ...(adminServer ? { admin_addr: `${adminServer.addr.hostname}:${adminServer.addr.port}` } : {}),
    routes: routes.map((r) => `${r.spec.path}=${r.spec.subject}@${r.stream}`),
    consumer: config.durableName || "ordered (per instance)",
    version: VERSION,
    fd_limit: fdLimit,
    max_connections: maxConnections,
  });

  function health(): HealthReport {
    const routeReports = routes.map((route) => route.health());
    const healthy = nats.connected && !abort.signal.aborted &&
      routeReports.every((r) => r.status === "healthy");
    const lastTimes = routeReports.map((r) => r.last_message_ts);
    const lags = routeReports.map((r) => r.lag);
    return {
      service: "gateway",
      status: healthy ? "healthy" : "unhealthy",
      version: VERSION,
      nats_url: config.natsUrlRedacted,
      // The server of the seed list this connection uses now (one node of a cluster).
      nats_server: redactUrl(nc.getServer()),
      nats_connected: nats.connected,
      connections: routeReports.reduce((sum, r) => sum + r.connections, 0),
      // The stalest route stands for all: a route that never relayed makes it null.
      last_message_ts: lastTimes.includes(null) ? null : Math.min(...(lastTimes as number[])),
      messages_relayed: metrics.messagesRelayed.get(),
      consumer_lag: lags.includes(null) ? null : Math.max(...(lags as number[])),
      uptime_s: Math.floor((Date.now() - startedAt) / 1000),
      routes: routeReports,
    };
  }

  let shuttingDown: Promise<void> | undefined;
  function shutdown(): Promise<void> {
    shuttingDown ??= (async () => {
      logger.info("gateway shutting down", { connections: sessions.held });
      abort.abort();
      for (const route of routes) route.closeAll(CloseCode.goingAway, "gateway shutting down");
      const timeUp = new AbortController();
      const bound = delay(config.shutdownTimeoutMs, timeUp.signal);
      // Our close handshakes finish first: Deno's server shutdown would overtake them, and
      // browsers would see 1001 with wasClean=false. Opening and unauthorized sockets too.
      const clientsGone = sessions.closeAll(CloseCode.goingAway, "gateway shutting down");
      const stopServers = () => Promise.all(servers.map((s) => s.shutdown()));
      await Promise.race([
        Promise.allSettled([
          clientsGone.then(stopServers),
          nc.isClosed() ? Promise.resolve() : nc.drain(),
          ...routes.map((route) => route.stopped()),
        ]),
        bound,
      ]);
      if (sessions.held > 0) {
        // Peers that never finished their close (they do not read): Deno's shutdown cuts them.
        logger.warn("clients still closing at the shutdown bound", { sockets: sessions.held });
        await Promise.race([stopServers().catch(() => {}), delay(1000, timeUp.signal)]);
      }
      timeUp.abort();
      if (!nc.isClosed()) await nc.close().catch(() => {});
      nats.stop();
      logger.info("gateway stopped");
    })();
    return shuttingDown;
  }

  return {
    addr: server.addr,
    ...(adminServer ? { adminAddr: adminServer.addr } : {}),
    metrics,
    routes,
    failed: Promise.race([nats.failed, ...routes.map((route) => route.failed)]),
    report: () => ({ health: health(), metrics: metrics.snapshot() }),
    shutdown,
    [Symbol.asyncDispose]: shutdown,
  };
}

/** One listener that survives EMFILE in Deno's accept loop (lib/fd_limit.ts). */
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
