/**
 * HTTP routing: the configured routes' upgrades (lib/routes.ts), `/health`, `/livez`,
 * `/readyz`, `/metrics` and `/client.js`. With an admin port, the public listener serves the
 * routes, `/livez` and `/client.js`, the admin one the rest. `createHandler` returns a plain
 * `(Request) => Response`, so tests call it in-process.
 */
import { CLIENT_JS } from "./client_bundle.ts";
import { Authenticator, type AuthOutcome, OriginPolicy, selectProtocol } from "./auth.ts";
import type { Broadcaster } from "./broadcaster.ts";
import type { Logger } from "./log.ts";
import { rateLimited } from "./log.ts";
import type { GatewayMetrics } from "./metrics.ts";
import type { HealthReport } from "./health.ts";
import { parseRoutes, type RouteMatch, RouteTable } from "./routes.ts";
import { refuseSession, Sessions, startSession, type UpgradedSocket } from "./session.ts";

// Moved to lib/health.ts; re-exported so importers of server.ts keep working.
export type { HealthReport, WorkerHealth } from "./health.ts";

export type { UpgradedSocket } from "./session.ts";

export type Upgrade = (
  request: Request,
  options: { idleTimeout: number; protocol?: string },
) => { socket: UpgradedSocket; response: Response };

/** A request path that names a route (and, for a templated one, a valid value). */
export type RouteHit = Extract<RouteMatch, { kind: "route" }>;

export interface HandlerDeps {
  /** The configured routes; default: `/ws/stream` alone, served by `broadcaster`. */
  readonly table?: RouteTable;
  /**
   * The client set a route's request joins (seeded from the stream at a value's first use);
   * undefined when a templated route holds its bound of values, all with clients.
   */
  readonly broadcasterFor?: (
    hit: RouteHit,
  ) => Broadcaster | undefined | Promise<Broadcaster | undefined>;
  /** The one route's client set when `table` is not given (tests). */
  readonly broadcaster?: Broadcaster;
  /** The live viewer page served at `/` (lib/viewer_page.ts); undefined: `/` is 404. */
  readonly viewerPage?: string;
  /** Which endpoints this listener serves: all (default), the public ones, or the admin ones. */
  readonly serve?: "all" | "public" | "admin";
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
  /** Who may open a route; defaults to one checking `authTokens` only. */
  readonly auth?: Authenticator;
  /** `close` (default): refused clients get 1008 after the upgrade; `http`: 401/403 instead. */
  readonly authReject?: "close" | "http";
  /** Browser origins that may connect and read responses (CORS); default `["*"]`: any. */
  readonly allowedOrigins?: readonly string[];
  /** Seconds between server pings; 0 disables them. */
  readonly idleTimeoutSeconds: number;
  readonly clientMaxFrameBytes: number;
  readonly clientMaxFramesPerSecond: number;
  /** Defaults to Deno.upgradeWebSocket. */
  readonly upgrade?: Upgrade;
  readonly now?: () => number;
}

function json(body: unknown, status = 200, headers: HeadersInit = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json", ...headers },
  });
}

function text(body: string, status: number, headers: HeadersInit = {}): Response {
  return new Response(body, {
    status,
    headers: { "content-type": "text/plain; charset=utf-8", ...headers },
  });
}

/** What a refused client is told with GATEWAY_AUTH_REJECT=http. */
const HTTP_REFUSALS = {
  unauthorized: () =>
    text("a valid token is required\n", 401, { "www-authenticate": 'Bearer realm="gateway"' }),
  forbidden: () => text("the token does not cover this route\n", 403),
} as const;

export type Handler = (request: Request) => Response | Promise<Response>;

export function createHandler(deps: HandlerDeps): Handler {
  const upgrade: Upgrade = deps.upgrade ?? Deno.upgradeWebSocket;
  const metricsText = deps.metricsText ?? (() => deps.metrics.render());
  const now = deps.now ?? Date.now;
  const logBadUpgrade = rateLimited(deps.logger.warn, 10_000);
  const logRefused = rateLimited(deps.logger.warn, 10_000);
  const sessions = deps.sessions ?? new Sessions({ metrics: deps.metrics });
  const auth = deps.auth ?? new Authenticator({ tokens: deps.authTokens ?? [] });
  const origins = new OriginPolicy(deps.allowedOrigins);
  const table = deps.table ?? new RouteTable(parseRoutes("/ws/stream=levels.signals"));
  const broadcasterFor = deps.broadcasterFor ?? (() => deps.broadcaster);
  const serve = deps.serve ?? "all";

  function readOnly(
    request: Request,
    respond: () => Response | Promise<Response>,
  ): Response | Promise<Response> {
    if (request.method === "OPTIONS") {
      return new Response(null, {
        status: 204,
        headers: { "access-control-allow-methods": "GET, HEAD, OPTIONS" },
      });
    }
    if (request.method !== "GET" && request.method !== "HEAD") {
      return text("method not allowed\n", 405, { allow: "GET, HEAD, OPTIONS" });
    }
    return respond();
  }

  function atLimit(): boolean {
    const limit = deps.maxConnections;
    // Sockets count until their close event: a peer that resets, or never reads our close,
    // cannot free its slot early and get past the limit.
    if (limit <= 0 || sessions.held < limit) return false;
    deps.metrics.connectionsRejected.inc({ reason: "limit" });
    return true;
  }

  /** Everything decided before the upgrade: method, Origin, limit, upgrade headers, token. */
  function stream(request: Request, hit: RouteHit): Response | Promise<Response> {
    const path = new URL(request.url).pathname;
    if (request.method !== "GET") {
      return text("method not allowed\n", 405, { allow: "GET" });
    }
    const origin = request.headers.get("origin");
    if (!origins.allows(origin)) {
      deps.metrics.connectionsRejected.inc({ reason: "origin" });
      logRefused("websocket upgrade from a disallowed origin refused", {
        reason: "origin",
        origin: origin!.slice(0, 100),
      });
      return text("origin not allowed\n", 403);
    }
    if (atLimit()) return text("connection limit reached\n", 503, { "retry-after": "5" });
    if (request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
      return badUpgrade(new TypeError("the upgrade header must contain 'websocket'"));
    }
    // Read before the upgrade: Deno closes the request's headers once it has upgraded.
    // Synchronous where nothing waits (static tokens, a fixed route): no turn of the event loop
    // between the request and the upgrade.
    return then(auth.authenticate(request, path), (outcome) => {
      if (!outcome.admitted) return admit(request, outcome, undefined);
      // Seeded before the upgrade, so the first frame a client gets is the newest snapshot.
      return then(broadcasterFor(hit), (broadcaster) => {
        if (broadcaster !== undefined) return admit(request, outcome, broadcaster);
        deps.metrics.connectionsRejected.inc({ reason: "limit" });
        return text("this route holds as many values as it may; retry later\n", 503, {
          "retry-after": "5",
        });
      });
    });
  }

  function badUpgrade(error: unknown): Response {
    deps.metrics.connectionsRejected.inc({ reason: "bad_request" });
    logBadUpgrade("bad websocket upgrade request", { error });
    return text("expected a WebSocket upgrade request\n", 400);
  }

  function admit(
    request: Request,
    outcome: AuthOutcome,
    broadcaster: Broadcaster | undefined,
  ): Response {
    if (!outcome.admitted) {
      logRefused("websocket client refused", { reason: outcome.reason, ...outcome.detail });
      if (deps.authReject === "http") {
        deps.metrics.connectionsRejected.inc({ reason: outcome.reason });
        return HTTP_REFUSALS[outcome.reason]();
      }
    }
    // Checked again: other upgrades may have been admitted while a token was verified.
    if (atLimit()) return text("connection limit reached\n", 503, { "retry-after": "5" });
    let upgraded: ReturnType<Upgrade>;
    try {
      const protocol = selectProtocol(request);
      upgraded = upgrade(request, {
        idleTimeout: deps.idleTimeoutSeconds,
        ...(protocol === undefined ? {} : { protocol }),
      });
    } catch (err) {
      return badUpgrade(err);
    }
    sessions.track(upgraded.socket);
    if (!outcome.admitted) {
      // Accepted, then closed with 1008 before any data: a browser sees a close code and
      // reason, which a refused handshake would not give it.
      deps.metrics.connectionsRejected.inc({ reason: outcome.reason });
      refuseSession(upgraded.socket, sessions, outcome.reason);
      return upgraded.response;
    }
    startSession(upgraded.socket, {
      broadcaster: broadcaster!,
      metrics: deps.metrics,
      sessions,
      clientMaxFrameBytes: deps.clientMaxFrameBytes,
      clientMaxFramesPerSecond: deps.clientMaxFramesPerSecond,
      now,
      ...(outcome.expiresAtMs === undefined ? {} : { expiresAtMs: outcome.expiresAtMs }),
    });
    return upgraded.response;
  }

  function route(request: Request, path: string): Response | Promise<Response> {
    if (serve !== "admin") {
      const hit = table.match(path);
      if (hit.kind === "route") return stream(request, hit);
      if (hit.kind === "invalid") {
        deps.metrics.connectionsRejected.inc({ reason: "bad_request" });
        return text(`not a valid value for ${hit.route.path}: ${hit.reason}\n`, 400);
      }
    }
    if (!ENDPOINTS[path]?.includes(serve)) return text("not found\n", 404);
    switch (path) {
      case "/health":
        return readOnly(
          request,
          () =>
            then(deps.health(), (report) => json(report, report.status === "healthy" ? 200 : 503)),
        );
      case "/livez":
        return readOnly(request, () => json({ status: "alive" }));
      case "/":
        if (deps.viewerPage === undefined) return text("not found\n", 404);
        return readOnly(request, () =>
          new Response(deps.viewerPage, {
            headers: { "content-type": "text/html; charset=utf-8", "cache-control": "no-cache" },
          }));
      case "/client.js":
        // The browser client (client/gateway_client.ts), embedded: no file read at run time.
        return readOnly(request, () =>
          new Response(CLIENT_JS, {
            headers: {
              "content-type": "text/javascript; charset=utf-8",
              "cache-control": "public, max-age=300",
            },
          }));
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
  }

  return (request: Request) => {
    const cors = origins.corsHeaders(request.headers.get("origin"));
    return then(route(request, new URL(request.url).pathname), (response) => {
      // A 101's headers are Deno's; CORS does not apply to a WebSocket handshake anyway.
      if (response.status === 101) return response;
      for (const [name, value] of Object.entries(cors)) response.headers.set(name, value);
      return response;
    });
  };
}

/** Which listener serves each fixed endpoint (an admin port splits them; "all" serves every one). */
const ENDPOINTS: Record<string, readonly ("all" | "public" | "admin")[]> = {
  "/health": ["all", "admin"],
  "/readyz": ["all", "admin"],
  "/metrics": ["all", "admin"],
  "/livez": ["all", "public", "admin"],
  "/client.js": ["all", "public"],
  "/": ["all", "public"],
};

/** Applies `f` at once to a plain value, or later to a promise's (single-isolate paths stay sync). */
function then<T, U>(value: T | Promise<T>, f: (value: T) => U | Promise<U>): U | Promise<U> {
  return value instanceof Promise ? value.then(f) : f(value);
}
