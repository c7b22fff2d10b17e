/**
 * HTTP routes: `/health`, `/livez`, `/readyz`, `/metrics` and the `/ws/stream` upgrade.
 * `createHandler` returns a plain `(Request) => Response`, so tests call it in-process.
 */
import type { Broadcaster } from "./broadcaster.ts";
import type { Logger } from "./log.ts";
import { rateLimited } from "./log.ts";
import type { GatewayMetrics } from "./metrics.ts";
import type { HealthReport } from "./health.ts";
import { refuseSession, Sessions, startSession, type UpgradedSocket } from "./session.ts";

// Moved to lib/health.ts; re-exported so importers of server.ts keep working.
export type { HealthReport, WorkerHealth } from "./health.ts";

export type { UpgradedSocket } from "./session.ts";

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
  /** Past this many sockets (opening, open or closing) upgrades get 503. 0: no limit. */
  readonly maxConnections: number;
  /** Every socket from upgrade to close; created here when not given (tests). */
  readonly sessions?: Sessions;
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
  const sessions = deps.sessions ?? new Sessions({ metrics: deps.metrics });

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
    // Sockets count until their close event: a peer that resets, or never reads our close,
    // cannot free its slot early and get past the limit.
    if (limit > 0 && sessions.held >= limit) {
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
    sessions.track(upgraded.socket);
    if (!allowed) {
      // Accepted, then closed with 1008 before any data: a browser sees a close code, which a
      // refused handshake would not give it.
      deps.metrics.connectionsRejected.inc({ reason: "unauthorized" });
      logUnauthorized("websocket client without a valid token closed");
      refuseSession(upgraded.socket, sessions);
      return upgraded.response;
    }
    startSession(upgraded.socket, {
      broadcaster: deps.broadcaster,
      metrics: deps.metrics,
      sessions,
      clientMaxFrameBytes: deps.clientMaxFrameBytes,
      clientMaxFramesPerSecond: deps.clientMaxFramesPerSecond,
      now,
    });
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
