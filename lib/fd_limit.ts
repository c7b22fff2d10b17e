/**
 * File descriptors: the process's limit (read once at startup), the connection cap that
 * keeps WebSocket clients below it, and a server that survives EMFILE in Deno's accept loop.
 *
 * Deno.serve's accept loop (ext/http/http_next.rs `op_http_serve`: `accept(...).await?`) ends
 * on the first accept error, closing the listener; `server.finished` then rejects with
 * `Http: Error: Too many open files`, which kills the process when nobody handles it. Connected
 * WebSockets are separate resources and keep working, so we keep them and listen again.
 */
import type { Logger } from "./log.ts";

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

export interface ResilientServer {
  readonly addr: Deno.NetAddr;
  /** Stops listening (and probing); resolves when every current server has shut down. */
  shutdown(): Promise<void>;
}

export interface ResilientOptions {
  readonly logger: Logger;
  /** Called each time listeners died and serving starts again (once per episode). */
  readonly onListenerLost?: (error: unknown) => void;
  /** Wait between attempts to listen again. Default 1 s. */
  readonly retryMs?: number;
  /** How often the listener is probed with a connect (the loop can die unseen). Default 2 s. */
  readonly probeMs?: number;
  /**
   * Listeners on the port (SO_REUSEPORT when more than one), each with Deno's fixed accept
   * queue (lib/backlog.ts): more of them hold more connects while JavaScript runs. Default 1.
   */
  readonly listeners?: number;
}

/**
 * Deno.serve that listens again on the same port after its accept loop dies (EMFILE): the
 * clients already connected keep their streams; new ones are refused until fds are free.
 * With `listeners` > 1, that many servers share the port, each watched and replaced alone.
 */
export function serveResilient(
  serveOptions: Deno.ServeTcpOptions,
  handler: Deno.ServeHandler<Deno.NetAddr>,
  options: ResilientOptions,
): ResilientServer {
  const { logger } = options;
  const count = Math.max(1, options.listeners ?? 1);
  const shared = count > 1 ? { reusePort: true } : {};
  const first = Deno.serve({ ...serveOptions, ...shared }, handler);
  const addr = first.addr;
  /** Bumped by every listen: a probe that started before one cannot judge the new one. */
  let generation = 0;
  // The rest join the port the first bound (it may have been 0: any free port).
  const serve = () => {
    generation++;
    return Deno.serve({ ...serveOptions, ...shared, port: addr.port }, handler);
  };
  const servers: (Deno.HttpServer<Deno.NetAddr> | null)[] = [first];
  try {
    while (servers.length < count) servers.push(serve());
  } catch (err) {
    for (const server of servers) {
      server?.finished.catch(() => {});
      void server?.shutdown().catch(() => {});
    }
    throw err;
  }
  let stopped = false;
  let restarting = false;

  /** Listens again in every slot marked lost (null), until all are filled or it stops. */
  const relisten = async (error: unknown) => {
    if (stopped || restarting) return;
    restarting = true;
    options.onListenerLost?.(error);
    logger.error("http listener stopped; connected clients keep their streams, listening again", {
      error,
      addr: `${addr.hostname}:${addr.port}`,
      ...(count > 1 ? { listeners_lost: servers.filter((s) => s === null).length } : {}),
    });
    for (let attempt = 1; !stopped;) {
      const slot = servers.indexOf(null);
      if (slot < 0) {
        logger.info("http listener restored", { attempt });
        break;
      }
      try {
        servers[slot] = serve();
        watch(slot);
      } catch (err) {
        if (attempt === 1 || attempt % 30 === 0) {
          logger.warn("cannot listen yet", { error: err, attempt });
        }
        attempt++;
        await new Promise((resolve) => setTimeout(resolve, options.retryMs ?? 1000));
      }
    }
    restarting = false;
  };

  /**
   * Marks a slot lost: its server's accept loop ended (its listener is closed with it), or the
   * port refused a probe, which only happens once no listener is left. False when the slot
   * holds another server already.
   */
  const lose = (slot: number, server: Deno.HttpServer<Deno.NetAddr>): boolean => {
    if (servers[slot] !== server) return false;
    server.finished.catch(() => {}); // its rejection is this failure, already reported
    servers[slot] = null;
    return true;
  };

  function watch(slot: number): void {
    const server = servers[slot]!;
    server.finished.catch((error) => {
      if (lose(slot, server)) void relisten(error);
    });
  }
  for (let slot = 0; slot < count; slot++) watch(slot);

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
        // Listened again meanwhile: the refusal was for the servers that were there before.
        if (stopped || restarting || generation !== probed) return;
        // Refused: no listener is left on the port (a closed one leaves the group at once).
        servers.forEach((server, slot) => server !== null && lose(slot, server));
        void relisten(err);
      }
    }, options.probeMs ?? 2000)
    : undefined;

  return {
    addr,
    async shutdown() {
      stopped = true;
      clearInterval(probe);
      await Promise.all(servers.map((server) => server?.shutdown()));
    },
  };
}
