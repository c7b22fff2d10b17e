/**
 * HTTP routes: `/health`, `/livez`, `/readyz`, `/metrics` and the `/ws/stream` upgrade.
 * `createHandler` returns a plain `(Request) => Response`, so tests call it in-process.
 */
import { type Broadcaster, type ClientSocket, CloseCode } from "./broadcaster.ts";
import type { Logger } from "./log.ts";
import { rateLimited } from "./log.ts";
import type { GatewayMetrics } from "./metrics.ts";

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
  /** With GATEWAY_WORKERS > 1: each worker's own view; the fields above combine them. */
  readonly workers?: readonly WorkerHealth[];
}

export type WorkerHealth = Pick<
  HealthReport,
  "status" | "nats_connected" | "connections" | "last_message_ts" | "consumer_lag"
>;

/**
 * One report for the process from each worker's: healthy only when every worker is; clients
 * add up; the stalest last message and the largest lag stand for all (each worker relays
 * every message, so messages_relayed is the count of messages, not of copies).
 */
export function combineHealth(reports: readonly HealthReport[]): HealthReport {
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
    workers: reports.map((r) => ({
      status: r.status,
      nats_connected: r.nats_connected,
      connections: r.connections,
      last_message_ts: r.last_message_ts,
      consumer_lag: r.consumer_lag,
    })),
  };
}

/** The socket the server needs from an upgrade: a ClientSocket that also emits events. */
export type UpgradedSocket = ClientSocket & EventTarget;

export type Upgrade = (
  request: Request,
  options: { idleTimeout: number },
) => { socket: UpgradedSocket; response: Response };

export interface HandlerDeps {
  readonly broadcaster: Broadcaster;
  readonly metrics: GatewayMetrics;
  readonly logger: Logger;
  /** Async when it gathers the reports of several workers. */
  readonly health: () => HealthReport | Promise<HealthReport>;
  /** Prometheus text for /metrics; defaults to this isolate's metrics. */
  readonly metricsText?: () => string | Promise<string>;
  /** Past this many clients (open or opening) upgrades get 503. 0: no limit. */
  readonly maxConnections: number;
  /** Tokens a client must present (`?token=` or `Authorization: Bearer`); empty: none needed. */
  readonly authTokens?: readonly string[];
  /** Seconds between server pings; 0 disables them. */
  readonly idleTimeoutSeconds: number;
  readonly clientMaxFrameBytes: number;
  readonly clientMaxFramesPerSecond: number;
  /** Defaults to Deno.upgradeWebSocket. */
  readonly upgrade?: Upgrade;
  readonly now?: () => number;
}

const CORS = { "access-control-allow-origin": "*" } as const;
const PONG = '{"type":"pong"}';
/** Deno's reason when a client does not answer a ping within idleTimeout. */
const IDLE_TIMEOUT_REASON = "No response from ping frame.";

function json(body: unknown, status = 200, headers: HeadersInit = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { ...CORS, "content-type": "application/json", ...headers },
  });
}

function text(body: string, status: number, headers: HeadersInit = {}): Response {
  return new Response(body, {
    status,
    headers: { ...CORS, "content-type": "text/plain; charset=utf-8", ...headers },
  });
}

export type Handler = (request: Request) => Response | Promise<Response>;

export function createHandler(deps: HandlerDeps): Handler {
  const upgrade: Upgrade = deps.upgrade ?? Deno.upgradeWebSocket;
  const metricsText = deps.metricsText ?? (() => deps.metrics.render());
  const now = deps.now ?? Date.now;
  const logBadUpgrade = rateLimited(deps.logger.warn, 10_000);
  const logUnauthorized = rateLimited(deps.logger.warn, 10_000);
  let opening = 0;

  function readOnly(
    request: Request,
    respond: () => Response | Promise<Response>,
  ): Response | Promise<Response> {
    if (request.method === "OPTIONS") {
      return new Response(null, {
        status: 204,
        headers: { ...CORS, "access-control-allow-methods": "GET, HEAD, OPTIONS" },
      });
    }
    if (request.method !== "GET" && request.method !== "HEAD") {
      return text("method not allowed\n", 405, { allow: "GET, HEAD, OPTIONS" });
    }
    return respond();
  }

  function stream(request: Request): Response {
    if (request.method !== "GET") {
      return text("method not allowed\n", 405, { allow: "GET" });
    }
    const limit = deps.maxConnections;
    if (limit > 0 && deps.broadcaster.size + opening >= limit) {
      deps.metrics.connectionsRejected.inc({ reason: "limit" });
      return text("connection limit reached\n", 503, { "retry-after": "5" });
    }
    // Read before the upgrade: Deno closes the request's headers once it has upgraded.
    const allowed = authorized(request);
    let upgraded: ReturnType<Upgrade>;
    try {
      upgraded = upgrade(request, { idleTimeout: deps.idleTimeoutSeconds });
    } catch (err) {
      deps.metrics.connectionsRejected.inc({ reason: "bad_request" });
      logBadUpgrade("bad websocket upgrade request", { error: err });
      return text("expected a WebSocket upgrade request\n", 400);
    }
    if (!allowed) {
      // Accepted, then closed with 1008 before any data: a browser sees a close code, which a
      // refused handshake would not give it.
      deps.metrics.connectionsRejected.inc({ reason: "unauthorized" });
      logUnauthorized("websocket client without a valid token closed");
      upgraded.socket.addEventListener("open", () => {
        upgraded.socket.close(CloseCode.policyViolation, "unauthorized");
      });
      return upgraded.response;
    }
    opening++;
    attach(upgraded.socket);
    return upgraded.response;
  }

  function authorized(request: Request): boolean {
    const tokens = deps.authTokens ?? [];
    if (tokens.length === 0) return true;
    const bearer = /^Bearer\s+(\S+)$/i.exec(request.headers.get("authorization") ?? "")?.[1];
    const given = bearer ?? new URL(request.url).searchParams.get("token");
    if (given === null) return false;
    // Compare with every token, in time that does not depend on where a guess first differs.
    let match = false;
    for (const token of tokens) match = constantTimeEqual(given, token) || match;
    return match;
  }

  function attach(socket: UpgradedSocket): void {
    let opened = false;
    let windowStart = now();
    let framesInWindow = 0;
    let closedBy: "protocol" | "idle_timeout" | null = null;

    const closeFor = (code: number, reason: string) => {
      closedBy = "protocol";
      deps.broadcaster.remove(socket, "closed");
      try {
        socket.close(code, reason);
      } catch {
        // Already closing.
      }
    };

    socket.addEventListener("open", () => {
      opening--;
      opened = true;
      deps.metrics.connectionsOpened.inc();
      deps.broadcaster.add(socket);
    });
    socket.addEventListener("message", (event) => {
      const data = (event as MessageEvent).data;
      deps.metrics.clientFramesIgnored.inc();
      const t = now();
      if (t - windowStart >= 1000) {
        windowStart = t;
        framesInWindow = 0;
      }
      if (++framesInWindow > deps.clientMaxFramesPerSecond) {
        return closeFor(CloseCode.policyViolation, "too many frames");
      }
      if (typeof data !== "string") {
        return closeFor(CloseCode.unsupportedData, "binary frames are not accepted");
      }
      if (data.length > deps.clientMaxFrameBytes) {
        return closeFor(CloseCode.messageTooBig, "frame too big");
      }
      if (isPing(data) && socket.readyState === 1 && socket.bufferedAmount === 0) {
        socket.send(PONG);
      }
    });
    let closeHandled = false;
    socket.addEventListener("close", (event) => {
      // Deno can dispatch close twice (after an idle timeout: 1001, then 1005); count once.
      if (closeHandled) return;
      closeHandled = true;
      if (!opened) {
        opening--;
        return;
      }
      if ((event as CloseEvent).reason === IDLE_TIMEOUT_REASON) closedBy = "idle_timeout";
      deps.broadcaster.remove(socket, "closed");
      const removedFor = deps.broadcaster.removalReason(socket);
      const reason = closedBy ??
        (removedFor === undefined || removedFor === "closed" ? "client" : removedFor);
      deps.metrics.connectionsClosed.inc({ reason });
    });
    socket.addEventListener("error", () => {
      // A close event follows; it does the bookkeeping.
    });
  }

  return (request: Request) => {
    const path = new URL(request.url).pathname;
    switch (path) {
      case "/ws/stream":
        return stream(request);
      case "/health":
        return readOnly(
          request,
          () =>
            then(deps.health(), (report) => json(report, report.status === "healthy" ? 200 : 503)),
        );
      case "/livez":
        return readOnly(request, () => json({ status: "alive" }));
      case "/readyz":
        return readOnly(request, () =>
          then(deps.health(), (report) =>
            json(
              { status: report.status === "healthy" ? "ready" : "not ready" },
              report.status === "healthy" ? 200 : 503,
            )));
      case "/metrics":
        return readOnly(
          request,
          () =>
            then(
              metricsText(),
              (body) =>
                text(body, 200, { "content-type": "text/plain; version=0.0.4; charset=utf-8" }),
            ),
        );
      default:
        return text("not found\n", 404);
    }
  };
}

function constantTimeEqual(a: string, b: string): boolean {
  let difference = a.length ^ b.length;
  for (let i = 0; i < b.length; i++) difference |= (a.charCodeAt(i) | 0) ^ b.charCodeAt(i);
  return difference === 0;
}

/** Applies `f` at once to a plain value, or later to a promise's (single-isolate paths stay sync). */
function then<T, U>(value: T | Promise<T>, f: (value: T) => U): U | Promise<U> {
  return value instanceof Promise ? value.then(f) : f(value);
}

function isPing(data: string): boolean {
  if (data.length > 64 || !data.includes("ping")) return false;
  try {
    const parsed = JSON.parse(data);
    return parsed !== null && typeof parsed === "object" && parsed.type === "ping";
  } catch {
    return false;
  }
}
