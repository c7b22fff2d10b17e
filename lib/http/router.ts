/**
 * HTTP routing: the configured routes' upgrades (lib/relay/route_table.ts), `/health`, `/livez`,
 * `/readyz`, `/metrics` and `/client.js`. With an admin port, the public listener serves the
 * routes, `/livez` and `/client.js`, the admin one the rest. `createHandler` returns a plain
 * `(Request) => Response`, so tests call it in-process.
 */
import { CLIENT_JS } from "./client_bundle.ts";
import { Authenticator, type AuthOutcome } from "../auth/authenticator.ts";
import { OriginPolicy } from "../auth/origins.ts";
import { selectProtocol } from "../auth/tokens.ts";
import type { Broadcaster } from "../relay/broadcaster.ts";
import { type Encoding, ENCODINGS, parseEncoding } from "../relay/compression.ts";
import type { Logger } from "../observe/log.ts";
import { rateLimited } from "../observe/log.ts";
import type { GatewayMetrics } from "../observe/metrics.ts";
import type { HealthReport } from "../observe/health.ts";
import { parseRoutes, type RouteMatch, RouteTable } from "../relay/route_table.ts";
import { refuseSession, Sessions, startSession, type UpgradedSocket } from "./session.ts";

// Moved to lib/observe/health.ts; re-exported so importers of server.ts keep working.

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
  /** The live viewer page served at `/` (lib/http/viewer_page.ts); undefined: `/` is 404. */
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
  const router = new HttpRouter(deps);
  return (request) => router.handle(request);
}

type Listener = NonNullable<HandlerDeps["serve"]>;
type Respond = () => Response | Promise<Response>;

/** What the fixed endpoints answer from. */
interface EndpointDeps {
  readonly health: HandlerDeps["health"];
  readonly metricsText: () => string | Promise<string>;
  readonly viewerPage: string | undefined;
}

/**
 * The fixed endpoints: which listeners serve each (an admin port splits them; "all" serves every
 * one) and how it answers; a responder of undefined leaves the path a 404 on this listener.
 */
const ENDPOINTS: Readonly<
  Record<
    string,
    { servedOn: readonly Listener[]; responder: (d: EndpointDeps) => Respond | undefined }
  >
> = {
  "/health": { servedOn: ["all", "admin"], responder: (d) => () => healthResponse(d.health) },
  "/readyz": { servedOn: ["all", "admin"], responder: (d) => () => readyResponse(d.health) },
  "/metrics": {
    servedOn: ["all", "admin"],
    responder: (d) => () => metricsResponse(d.metricsText),
  },
  "/livez": {
    servedOn: ["all", "public", "admin"],
    responder: () => () => json({ status: "alive" }),
  },
  "/client.js": { servedOn: ["all", "public"], responder: () => clientScriptResponse },
  "/": {
    servedOn: ["all", "public"],
    responder: ({ viewerPage }) =>
      viewerPage === undefined ? undefined : () => pageResponse(viewerPage),
  },
};

function healthResponse(health: HandlerDeps["health"]): Response | Promise<Response> {
  return then(health(), (report) => json(report, report.status === "healthy" ? 200 : 503));
}

function readyResponse(health: HandlerDeps["health"]): Response | Promise<Response> {
  return then(health(), (report) =>
    json(
      { status: report.status === "healthy" ? "ready" : "not ready" },
      report.status === "healthy" ? 200 : 503,
    ));
}

function metricsResponse(
  metricsText: () => string | Promise<string>,
): Response | Promise<Response> {
  return then(
    metricsText(),
    (body) => text(body, 200, { "content-type": "text/plain; version=0.0.4; charset=utf-8" }),
  );
}

/** The browser client (client/gateway_client.ts), embedded: no file read at run time. */
function clientScriptResponse(): Response {
  return new Response(CLIENT_JS, {
    headers: {
      "content-type": "text/javascript; charset=utf-8",
      "cache-control": "public, max-age=300",
    },
  });
}

function pageResponse(page: string): Response {
  return new Response(page, {
    headers: { "content-type": "text/html; charset=utf-8", "cache-control": "no-cache" },
  });
}

/** The fixed endpoints answer GET and HEAD (and a CORS preflight) only. */
function readOnly(request: Request, respond: Respond): Response | Promise<Response> {
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

const connectionLimitReached = () =>
  text("connection limit reached\n", 503, { "retry-after": "5" });

/**
 * One listener's routing. It owns what every request shares (the sessions, the authenticator,
 * the origin policy, the route table, the rate-limited loggers); each client, once upgraded, is
 * a session of its own (lib/http/session.ts).
 */
class HttpRouter {
  readonly #deps: HandlerDeps;
  readonly #upgrade: Upgrade;
  readonly #now: () => number;
  readonly #logBadUpgrade: Logger["warn"];
  readonly #logRefused: Logger["warn"];
  readonly #sessions: Sessions;
  readonly #auth: Authenticator;
  readonly #origins: OriginPolicy;
  readonly #table: RouteTable;
  readonly #broadcasterFor: NonNullable<HandlerDeps["broadcasterFor"]>;
  readonly #serve: Listener;
  /** The fixed endpoints this listener serves, by path. */
  readonly #endpoints = new Map<string, Respond>();

  constructor(deps: HandlerDeps) {
    this.#deps = deps;
    this.#upgrade = deps.upgrade ?? Deno.upgradeWebSocket;
    this.#now = deps.now ?? Date.now;
    this.#logBadUpgrade = rateLimited(deps.logger.warn, 10_000);
    this.#logRefused = rateLimited(deps.logger.warn, 10_000);
    this.#sessions = deps.sessions ?? new Sessions({ metrics: deps.metrics });
    this.#auth = deps.auth ?? new Authenticator({ tokens: deps.authTokens ?? [] });
    this.#origins = new OriginPolicy(deps.allowedOrigins);
    this.#table = deps.table ?? new RouteTable(parseRoutes("/ws/stream=levels.signals"));
    this.#broadcasterFor = deps.broadcasterFor ?? (() => deps.broadcaster);
    this.#serve = deps.serve ?? "all";
    const endpointDeps: EndpointDeps = {
      health: deps.health,
      metricsText: deps.metricsText ?? (() => deps.metrics.render()),
      viewerPage: deps.viewerPage,
    };
    for (const [path, { servedOn, responder }] of Object.entries(ENDPOINTS)) {
      const respond = servedOn.includes(this.#serve) ? responder(endpointDeps) : undefined;
      if (respond !== undefined) this.#endpoints.set(path, respond);
    }
  }

  handle(request: Request): Response | Promise<Response> {
    const cors = this.#origins.corsHeaders(request.headers.get("origin"));
    return then(this.#route(request, new URL(request.url)), (response) => {
      // A 101's headers are Deno's; CORS does not apply to a WebSocket handshake anyway.
      if (response.status === 101) return response;
      for (const [name, value] of Object.entries(cors)) response.headers.set(name, value);
      return response;
    });
  }

  #route(request: Request, url: URL): Response | Promise<Response> {
    const path = url.pathname;
    if (this.#serve !== "admin") {
      const hit = this.#table.match(path);
      if (hit.kind === "route") return this.#stream(request, hit, url);
      if (hit.kind === "invalid") {
        this.#deps.metrics.connectionsRejected.inc({ reason: "bad_request" });
        return text(`not a valid value for ${hit.route.path}: ${hit.reason}\n`, 400);
      }
    }
    const respond = this.#endpoints.get(path);
    if (respond === undefined) return text("not found\n", 404);
    return readOnly(request, respond);
  }

  #atLimit(): boolean {
    const limit = this.#deps.maxConnections;
    // Sockets count until their close event: a peer that resets, or never reads our close,
    // cannot free its slot early and get past the limit.
    if (limit <= 0 || this.#sessions.held < limit) return false;
    this.#deps.metrics.connectionsRejected.inc({ reason: "limit" });
    return true;
  }

  /**
   * Everything decided before the upgrade: method, Origin, limit, upgrade headers, encoding,
   * token.
   */
  #stream(request: Request, hit: RouteHit, url: URL): Response | Promise<Response> {
    if (request.method !== "GET") {
      return text("method not allowed\n", 405, { allow: "GET" });
    }
    const origin = request.headers.get("origin");
    if (!this.#origins.allows(origin)) {
      this.#deps.metrics.connectionsRejected.inc({ reason: "origin" });
      this.#logRefused("websocket upgrade from a disallowed origin refused", {
        reason: "origin",
        origin: origin!.slice(0, 100),
      });
      return text("origin not allowed\n", 403);
    }
    if (this.#atLimit()) return connectionLimitReached();
    if (request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
      return this.#badUpgrade(new TypeError("the upgrade header must contain 'websocket'"));
    }
    const asked = url.searchParams.get("encoding");
    const encoding = parseEncoding(asked);
    if (encoding === undefined) return this.#badEncoding(asked!);
    // Read before the upgrade: Deno closes the request's headers once it has upgraded.
    // Synchronous where nothing waits (static tokens, a fixed route): no turn of the event loop
    // between the request and the upgrade.
    return then(
      this.#auth.authenticate(request, url.pathname),
      (outcome) => this.#authenticated(request, hit, outcome, encoding),
    );
  }

  #authenticated(
    request: Request,
    hit: RouteHit,
    outcome: AuthOutcome,
    encoding: Encoding,
  ): Response | Promise<Response> {
    if (!outcome.admitted) return this.#refuse(request, outcome);
    // Seeded before the upgrade, so the first frame a client gets is the newest snapshot.
    return then(this.#broadcasterFor(hit), (broadcaster) => {
      if (broadcaster !== undefined) return this.#admit(request, outcome, broadcaster, encoding);
      this.#deps.metrics.connectionsRejected.inc({ reason: "limit" });
      return text("this route holds as many values as it may; retry later\n", 503, {
        "retry-after": "5",
      });
    });
  }

  #badUpgrade(error: unknown): Response {
    this.#deps.metrics.connectionsRejected.inc({ reason: "bad_request" });
    this.#logBadUpgrade("bad websocket upgrade request", { error });
    return text("expected a WebSocket upgrade request\n", 400);
  }

  /** An `encoding` the gateway does not know: refused before the upgrade, not sent text. */
  #badEncoding(asked: string): Response {
    this.#deps.metrics.connectionsRejected.inc({ reason: "bad_request" });
    this.#logBadUpgrade("websocket upgrade with an unknown encoding refused", {
      encoding: asked.slice(0, 100),
    });
    return text(
      `unknown encoding ${JSON.stringify(asked.slice(0, 100))}: use ${ENCODINGS.join(" or ")}\n`,
      400,
    );
  }

  /** The upgrade itself, after a last look at the limit; a Response when it cannot happen. */
  #upgradeSocket(request: Request): ReturnType<Upgrade> | Response {
    // Checked again: other upgrades may have been admitted while a token was verified.
    if (this.#atLimit()) return connectionLimitReached();
    let upgraded: ReturnType<Upgrade>;
    try {
      const protocol = selectProtocol(request);
      upgraded = this.#upgrade(request, {
        idleTimeout: this.#deps.idleTimeoutSeconds,
        ...(protocol === undefined ? {} : { protocol }),
      });
    } catch (err) {
      return this.#badUpgrade(err);
    }
    this.#sessions.track(upgraded.socket);
    return upgraded;
  }

  #refuse(request: Request, outcome: Extract<AuthOutcome, { admitted: false }>): Response {
    this.#logRefused("websocket client refused", { reason: outcome.reason, ...outcome.detail });
    if (this.#deps.authReject === "http") {
      this.#deps.metrics.connectionsRejected.inc({ reason: outcome.reason });
      return HTTP_REFUSALS[outcome.reason]();
    }
    const upgraded = this.#upgradeSocket(request);
    if (upgraded instanceof Response) return upgraded;
    // Accepted, then closed with 1008 before any data: a browser sees a close code and
    // reason, which a refused handshake would not give it.
    this.#deps.metrics.connectionsRejected.inc({ reason: outcome.reason });
    refuseSession(upgraded.socket, this.#sessions, outcome.reason);
    return upgraded.response;
  }

  #admit(
    request: Request,
    outcome: Extract<AuthOutcome, { admitted: true }>,
    broadcaster: Broadcaster,
    encoding: Encoding,
  ): Response {
    const upgraded = this.#upgradeSocket(request);
    if (upgraded instanceof Response) return upgraded;
    startSession(upgraded.socket, {
      broadcaster,
      encoding,
      metrics: this.#deps.metrics,
      sessions: this.#sessions,
      clientMaxFrameBytes: this.#deps.clientMaxFrameBytes,
      clientMaxFramesPerSecond: this.#deps.clientMaxFramesPerSecond,
      now: this.#now,
      ...(outcome.expiresAtMs === undefined ? {} : { expiresAtMs: outcome.expiresAtMs }),
    });
    return upgraded.response;
  }
}

/** Applies `f` at once to a plain value, or later to a promise's (single-isolate paths stay sync). */
function then<T, U>(value: T | Promise<T>, f: (value: T) => U | Promise<U>): U | Promise<U> {
  return value instanceof Promise ? value.then(f) : f(value);
}
