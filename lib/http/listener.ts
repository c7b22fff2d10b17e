/**
 * File descriptors: the process's limit (read once at startup), the connection cap that
 * keeps WebSocket clients below it, and a server that survives EMFILE in Deno's accept loop.
 *
 * Deno.serve's accept loop (ext/http/http_next.rs `op_http_serve`: `accept(...).await?`) ends
 * on the first accept error, closing the listener; `server.finished` then rejects with
 * `Http: Error: Too many open files`, which kills the process when nobody handles it. Connected
 * WebSockets are separate resources and keep working, so we keep them and listen again.
 */
import type { Logger } from "../observe/log.ts";
import type { GatewayMetrics } from "../observe/metrics.ts";

/** Descriptors kept free for everything but clients: NATS, files, the listener, Deno's own. */
export function fdReserve(limit: number): number {
  return Math.min(1024, Math.max(64, Math.floor(limit / 10)));
}

/** The soft `Max open files` of this process from /proc/self/limits, or null if unknown. */
export function readFdLimit(path = "/proc/self/limits"): number | null {
  let text: string;
  try {
    // Query first: reading without the grant could prompt on a terminal.
    if (Deno.permissions.querySync({ name: "read", path }).state !== "granted") return null;
    text = Deno.readTextFileSync(path);
  } catch {
    return null; // not Linux, or no read permission: the cap stays as configured
  }
  const match = /^Max open files\s+(\d+|unlimited)\s/m.exec(text);
  if (!match || match[1] === "unlimited") return null;
  return Number(match[1]);
}

/**
 * The connection limit one isolate enforces: the configured one (0 = none), lowered so that
 * all `isolates` together stay below the fd limit minus its reserve.
 */
export function connectionCap(configured: number, fdLimit: number | null, isolates = 1): number {
  if (fdLimit === null) return configured;
  const byFds = Math.max(1, Math.floor((fdLimit - fdReserve(fdLimit)) / isolates));
  return configured > 0 ? Math.min(configured, byFds) : byFds;
}

/**
 * The accept queue asked of the kernel for a public port: connects it holds while the gateway is
 * busy (a reconnect storm after a deploy or a network blip); past it Linux drops SYNs and
 * clients retry 1 s, then 3 s later. Deno.serve's default is 511; Linux caps any value at
 * net.core.somaxconn (4096 on current kernels), so the gateway asks for the most it can get.
 * Measured: a burst of 5,000 connects to one core (bench/README.md, "Listen backlog").
 */
export const LISTEN_BACKLOG = 65_535;

/** The accept queue the kernel gives LISTEN_BACKLOG, when the process may read the cap. */
export function effectiveBacklog(path = "/proc/sys/net/core/somaxconn"): number | string {
  try {
    // Query first: reading without the grant could prompt on a terminal.
    if (Deno.permissions.querySync({ name: "read", path }).state === "granted") {
      return Math.min(LISTEN_BACKLOG, Number(Deno.readTextFileSync(path).trim()));
    }
  } catch {
    // not Linux, or /proc refused (Deno reads /proc/sys only with --allow-all)
  }
  return `${LISTEN_BACKLOG} (capped by net.core.somaxconn)`;
}

export interface ResilientServer {
  readonly addr: Deno.NetAddr;
  /** Stops listening (and probing); resolves when the current server has shut down. */
  shutdown(): Promise<void>;
}

export interface ResilientOptions {
  readonly logger: Logger;
  /** Called each time the listener died and serving starts again. */
  readonly onListenerLost?: (error: unknown) => void;
  /** Wait between attempts to listen again. Default 1 s. */
  readonly retryMs?: number;
  /** How often the listener is probed with a connect (the loop can die unseen). Default 2 s. */
  readonly probeMs?: number;
}

/**
 * Deno.serve that listens again on the same port after its accept loop dies (EMFILE): the
 * clients already connected keep their streams; new ones are refused until fds are free.
 */
export function serveResilient(
  serveOptions: Deno.ServeTcpOptions,
  handler: Deno.ServeHandler<Deno.NetAddr>,
  options: ResilientOptions,
): ResilientServer {
  const { logger } = options;
  let server: Deno.HttpServer<Deno.NetAddr> | null = Deno.serve(serveOptions, handler);
  const addr = server.addr;
  /** Bumped by every listen: a probe that started before one cannot judge the new one. */
  let generation = 0;
  let stopped = false;
  let restarting = false;

  /** Listens again (on the port first bound: it may have been 0) until it can or it stops. */
  const relisten = async (error: unknown) => {
    if (stopped || restarting) return;
    restarting = true;
    options.onListenerLost?.(error);
    logger.error("http listener stopped; connected clients keep their streams, listening again", {
      error,
      addr: `${addr.hostname}:${addr.port}`,
    });
    for (let attempt = 1; !stopped; attempt++) {
      try {
        generation++;
        server = Deno.serve({ ...serveOptions, port: addr.port }, handler);
        watch(server);
        logger.info("http listener restored", { attempt });
        break;
      } catch (err) {
        if (attempt === 1 || attempt % 30 === 0) {
          logger.warn("cannot listen yet", { error: err, attempt });
        }
        await new Promise((resolve) => setTimeout(resolve, options.retryMs ?? 1000));
      }
    }
    restarting = false;
  };

  /** The server is lost: its accept loop ended (closing its listener), or a probe was refused. */
  const lose = (lost: Deno.HttpServer<Deno.NetAddr>): boolean => {
    if (server !== lost) return false;
    lost.finished.catch(() => {}); // its rejection is this failure, already reported
    server = null;
    return true;
  };

  function watch(watched: Deno.HttpServer<Deno.NetAddr>): void {
    watched.finished.catch((error) => {
      if (lose(watched)) void relisten(error);
    });
  }
  watch(server);

  // The loop can die while idle connections keep `finished` pending: probe with a connect.
  const probeHost = addr.hostname === "0.0.0.0"
    ? "127.0.0.1"
    : addr.hostname === "::"
    ? "::1"
    : addr.hostname;
  const mayProbe = Deno.permissions.querySync({ name: "net", host: `${probeHost}:${addr.port}` })
    .state === "granted";
  const probe = mayProbe
    ? setInterval(async () => {
      if (stopped || restarting) return;
      const probed = generation;
      try {
        const conn = await Deno.connect({ hostname: probeHost, port: addr.port });
        conn.close();
      } catch (err) {
        // EMFILE here too: nothing to learn until descriptors are free.
        if (!(err instanceof Deno.errors.ConnectionRefused)) return;
        // Listened again meanwhile: the refusal was for the server that was there before.
        if (stopped || restarting || generation !== probed || server === null) return;
        lose(server);
        void relisten(err);
      }
    }, options.probeMs ?? 2000)
    : undefined;

  return {
    addr,
    async shutdown() {
      stopped = true;
      clearInterval(probe);
      await server?.shutdown();
    },
  };
}

/** The gateway's listener: serveResilient with the deep accept queue, failures logged and counted. */
export function serveHttp(
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
