/**
 * Gateway configuration: parsed once from the environment, validated, frozen.
 * Every default is documented here and nowhere else (README repeats the table).
 */

import { redactUrl } from "./redact.ts";
import {
  AuthConfigError,
  MIN_JWT_SECRET_BYTES,
  parseAllowedOrigins,
  type PublicJwk,
  readJwksFile,
  readPublicKeyFile,
} from "./auth.ts";

import { ConfigError } from "./config_error.ts";
import { parseRoutes, routeReceives, type RouteSpec } from "./routes.ts";

export { ConfigError };

export type LogLevel = "debug" | "info" | "warn" | "error";

export interface Config {
  /** NATS_URL as given (may hold credentials: never show it; show natsUrlRedacted). */
  readonly natsUrl: string;
  /** NATS_URL with passwords and tokens replaced by [REDACTED]: what /health and logs show. */
  readonly natsUrlRedacted: string;
  /**
   * NATS_URL split on commas, credentials removed; each entry is `nats://host:port`,
   * `tls://host:port` or `host:port`. Default `nats://localhost:4222`.
   */
  readonly natsServers: readonly string[];
  /** NATS_USER (or the user written in NATS_URL). Empty: none. */
  readonly natsUser: string;
  /** NATS_PASSWORD (or the password written in NATS_URL). A secret. */
  readonly natsPassword: string;
  /** NATS_TOKEN (or a lone token written in NATS_URL, `nats://token@host`). A secret. */
  readonly natsToken: string;
  /** NATS_NKEY: path to a user nkey seed file. Empty: none. */
  readonly natsNkeyPath: string;
  /** NATS_CREDS: path to a `.creds` file (user JWT + seed). Empty: none. */
  readonly natsCredsPath: string;
  /** NATS_CA: path to a PEM CA bundle the NATS server's certificate must chain to. */
  readonly natsCaPath: string;
  /** NATS_CERT: path to a PEM client certificate (with NATS_KEY) for TLS client auth. */
  readonly natsCertPath: string;
  /** NATS_KEY: path to the PEM private key of NATS_CERT. */
  readonly natsKeyPath: string;
  /**
   * GATEWAY_CREATE_STREAMS: create the platform streams when missing (the spec's idempotent
   * setup). Default true; false: the gateway creates and updates nothing (least privilege).
   */
  readonly createStreams: boolean;
  /**
   * GATEWAY_STREAM_REPLICAS: replicas of the streams the gateway creates. Default 0: auto,
   * min(3, JetStream cluster size).
   */
  readonly streamReplicas: number;
  /**
   * GATEWAY_FD_LIMIT: the process's file-descriptor limit (`ulimit -n`), which caps connections
   * below it. Default 0: read from the OS where Deno allows it (it needs --allow-all for /proc);
   * `deno task start` sets it from `ulimit -Sn`; a compiled binary should be given it (the
   * systemd unit sets it beside LimitNOFILE).
   */
  readonly fdLimit: number;
  /** GATEWAY_STRICT_CONFIG: unknown GATEWAY_* / NATS_* variables are an error, not a warning. */
  readonly strictConfig: boolean;
  /** GATEWAY_HOST: listen address. Default `0.0.0.0`. */
  readonly host: string;
  /** GATEWAY_PORT, else PORT: listen port. Default 8000; 0 picks a free port. */
  readonly port: number;
  /**
   * GATEWAY_ADMIN_HOST: listen address of the admin endpoints (/health, /readyz, /metrics) when
   * GATEWAY_ADMIN_PORT is set. Default: GATEWAY_HOST.
   */
  readonly adminHost: string;
  /**
   * GATEWAY_ADMIN_PORT: a port of their own for /health, /readyz and /metrics, which the public
   * port then no longer serves. Default -1: none, the public port serves them; 0 picks a free
   * port. Must differ from the public port unless both are 0.
   */
  readonly adminPort: number;
  /**
   * GATEWAY_ROUTES: comma-separated `PATH=SUBJECT[@STREAM]` entries (lib/routes.ts). Unset:
   * one route `/ws/stream=<GATEWAY_SUBJECT>@<GATEWAY_STREAM>`, i.e. by default
   * `/ws/stream=levels.signals@LEVEL_SIGNALS`; GATEWAY_SUBJECT/GATEWAY_STREAM are refused beside it.
   */
  readonly routes: readonly RouteSpec[];
  /**
   * GATEWAY_ROUTE_MAX_VALUES: distinct values a templated route holds (each a subject with its
   * cache and clients); past it the least recently used value without clients is dropped.
   * Default 1000.
   */
  readonly routeMaxValues: number;
  /** GATEWAY_VIEWER: serve the live viewer page at `/`. Default true; false: `/` is 404. */
  readonly viewer: boolean;
  /**
   * GATEWAY_DURABLE: durable consumer name. Default empty: each instance uses its own
   * ordered consumer starting at the latest message (see README "Consumer design").
   */
  readonly durableName: string;
  /** GATEWAY_MAX_PAYLOAD_BYTES: larger NATS payloads are skipped. Default 1 MiB. */
  readonly maxPayloadBytes: number;
  /**
   * GATEWAY_CLIENT_BUFFER_BYTES: bytes a client may have queued before the gateway stops
   * sending to it and conflates (keeps only the newest snapshot for it). Default 256 KiB:
   * ~32 snapshots of 8 KB; it bounds both memory (N × 256 KiB) and how old a lagging client's
   * screen can get (what is queued is delivered before anything newer).
   */
  readonly clientBufferBytes: number;
  /**
   * GATEWAY_SLOW_CLIENT_TIMEOUT_MS: a client that stays over its buffer bound this long is
   * closed with 4008 "slow consumer". Default 10000. 0 closes at once when over the bound.
   */
  readonly slowClientTimeoutMs: number;
  /**
   * GATEWAY_CLIENT_MAX_QUEUE_MS: how long a snapshot may wait in a client's queue; a client
   * whose oldest queued snapshot is older is conflated like one over its byte bound, so what it
   * is shown stays fresh under overload. Default 100. 0: only the byte bound applies.
   */
  readonly clientMaxQueueMs: number;
  /** GATEWAY_MAX_CONNECTIONS: past it, upgrades get HTTP 503. Default 10000; 0 means no limit. */
  readonly maxConnections: number;
  /**
   * GATEWAY_IDLE_TIMEOUT_S: the server pings each client this often and closes one that does
   * not answer with a pong in time (half-open connections). Default 30; 0 disables pings.
   */
  readonly idleTimeoutSeconds: number;
  /** GATEWAY_CLIENT_MAX_FRAME_BYTES: larger client frames close the socket with 1009. Default 4096. */
  readonly clientMaxFrameBytes: number;
  /** GATEWAY_CLIENT_MAX_FRAMES_PER_S: more client frames in one second close with 1008. Default 20. */
  readonly clientMaxFramesPerSecond: number;
  /** GATEWAY_NATS_CONNECT_TIMEOUT_MS: how long startup keeps trying to reach NATS. Default 10000. */
  readonly natsConnectTimeoutMs: number;
  /**
   * GATEWAY_NATS_MAX_OUTAGE_MS: a NATS outage longer than this exits the process (code 1) so a
   * supervisor restarts it. Default 120000; 0 means wait forever.
   */
  readonly natsMaxOutageMs: number;
  /** GATEWAY_SHUTDOWN_TIMEOUT_MS: bound on a graceful shutdown. Default 5000. */
  readonly shutdownTimeoutMs: number;
  /** GATEWAY_LOG_LEVEL (or LOG_LEVEL): debug, info, warn or error. Default info. */
  readonly logLevel: LogLevel;
  /**
   * GATEWAY_WORKERS: isolates (threads) serving the port together, each with its own NATS
   * consumer, cache and clients; the kernel spreads connections across them (SO_REUSEPORT).
   * Default 1; `auto` means one per CPU. Limits such as GATEWAY_MAX_CONNECTIONS apply to the
   * whole process (README "Using every core").
   */
  readonly workers: number;
  /**
   * GATEWAY_AUTH_TOKENS: comma-separated tokens, each at least 16 printable characters. Empty
   * (the default): /ws/stream is open to all. Otherwise a client must present one of them as
   * `?token=` or `Authorization: Bearer`, or is closed with 1008 before it gets any data.
   */
  readonly authTokens: readonly string[];
  /**
   * GATEWAY_JWT_SECRET: HMAC secret (at least 32 bytes) for HS256/HS384/HS512 tokens. A secret.
   * Default empty: no HMAC tokens. Any GATEWAY_JWT_* key makes a token necessary (README
   * "Who may connect"); a GATEWAY_AUTH_TOKENS token is accepted beside JWTs.
   */
  readonly jwtSecret: string;
  /** GATEWAY_JWT_PUBLIC_KEY: path to a PEM public key (RSA, EC, Ed25519). Default empty: none. */
  readonly jwtPublicKeyPath: string;
  /** GATEWAY_JWT_JWKS: path to a JWKS file; the key is chosen by `kid`. Default empty: none. */
  readonly jwtJwksPath: string;
  /** The public keys of GATEWAY_JWT_PUBLIC_KEY and GATEWAY_JWT_JWKS, read once at startup. */
  readonly jwtKeys: readonly PublicJwk[];
  /** GATEWAY_JWT_AUDIENCE: the `aud` a token must name. Default empty: not checked. */
  readonly jwtAudience: string;
  /** GATEWAY_JWT_ISSUER: the `iss` a token must carry. Default empty: not checked. */
  readonly jwtIssuer: string;
  /**
   * GATEWAY_JWT_CLOCK_SKEW_S: seconds of clock difference allowed on `exp` and `nbf`; a session
   * is closed this long after its token's `exp`. Default 30.
   */
  readonly jwtClockSkewSeconds: number;
  /**
   * GATEWAY_AUTH_REJECT: how a client without a valid token is refused. Default `close`: the
   * socket is accepted and closed with 1008 before any data; `http`: 401/403 before the upgrade.
   */
  readonly authReject: "close" | "http";
  /**
   * GATEWAY_ALLOWED_ORIGINS: browser origins that may connect and read the HTTP endpoints.
   * Default `*` (any); else exact origins (`https://app.example.com`), comma-separated.
   */
  readonly allowedOrigins: readonly string[];
  /**
   * GATEWAY_DEAD_LETTER_SUBJECT: invalid payloads are also published here, unchanged, with
   * headers saying why and where they came from. Default empty: skipped and counted only.
   * Must not be a subject any route relays.
   */
  readonly deadLetterSubject: string;
}

type Env = Readonly<Record<string, string | undefined>>;

const LOG_LEVELS: readonly LogLevel[] = ["debug", "info", "warn", "error"];
const SUBJECT_PATTERN = /^[^\s*>]+$/;
const NAME_PATTERN = /^[A-Za-z0-9_-]+$/;

/** Every variable the gateway reads; the runtime permission flags list the same names. */
export const ENV_VARIABLES = [
  "NATS_URL",
  "NATS_USER",
  "NATS_PASSWORD",
  "NATS_TOKEN",
  "NATS_NKEY",
  "NATS_CREDS",
  "NATS_CA",
  "NATS_CERT",
  "NATS_KEY",
  "GATEWAY_CREATE_STREAMS",
  "GATEWAY_STREAM_REPLICAS",
  "GATEWAY_STRICT_CONFIG",
  "GATEWAY_FD_LIMIT",
  "GATEWAY_HOST",
  "GATEWAY_PORT",
  "PORT",
  "GATEWAY_ADMIN_HOST",
  "GATEWAY_ADMIN_PORT",
  "GATEWAY_ROUTES",
  "GATEWAY_ROUTE_MAX_VALUES",
  "GATEWAY_VIEWER",
  "GATEWAY_SUBJECT",
  "GATEWAY_STREAM",
  "GATEWAY_DURABLE",
  "GATEWAY_MAX_PAYLOAD_BYTES",
  "GATEWAY_CLIENT_BUFFER_BYTES",
  "GATEWAY_SLOW_CLIENT_TIMEOUT_MS",
  "GATEWAY_CLIENT_MAX_QUEUE_MS",
  "GATEWAY_MAX_CONNECTIONS",
  "GATEWAY_IDLE_TIMEOUT_S",
  "GATEWAY_CLIENT_MAX_FRAME_BYTES",
  "GATEWAY_CLIENT_MAX_FRAMES_PER_S",
  "GATEWAY_NATS_CONNECT_TIMEOUT_MS",
  "GATEWAY_NATS_MAX_OUTAGE_MS",
  "GATEWAY_SHUTDOWN_TIMEOUT_MS",
  "GATEWAY_LOG_LEVEL",
  "LOG_LEVEL",
  "GATEWAY_WORKERS",
  "GATEWAY_AUTH_TOKENS",
  "GATEWAY_JWT_SECRET",
  "GATEWAY_JWT_PUBLIC_KEY",
  "GATEWAY_JWT_JWKS",
  "GATEWAY_JWT_AUDIENCE",
  "GATEWAY_JWT_ISSUER",
  "GATEWAY_JWT_CLOCK_SKEW_S",
  "GATEWAY_AUTH_REJECT",
  "GATEWAY_ALLOWED_ORIGINS",
  "GATEWAY_DEAD_LETTER_SUBJECT",
  "GATEWAY_ENV_FILE",
] as const;

/** Shortest accepted auth token: long enough that guessing is hopeless. */
const MIN_TOKEN_LENGTH = 16;

/** What readInteger accepts (GATEWAY_WORKERS also takes "auto"). */
const INTEGER_PATTERN = /^\s*-?\d+\s*$/;

/** The most isolates GATEWAY_WORKERS may ask for. */
const MAX_WORKERS = 256;

function readInteger(
  env: Env,
  name: string,
  fallback: number,
  min: number,
  max = Number.MAX_SAFE_INTEGER,
): number {
  const raw = env[name];
  if (raw === undefined || raw.trim() === "") return fallback;
  if (!INTEGER_PATTERN.test(raw)) {
    throw new ConfigError(
      `Cannot parse ${name} as an integer: current value is "${raw}"`,
    );
  }
  const value = Number(raw.trim());
  if (value < min || value > max) {
    throw new ConfigError(
      `${name} must be between ${min} and ${max}: current value is "${raw}"`,
    );
  }
  return value;
}

function readMatching(
  env: Env,
  name: string,
  fallback: string,
  pattern: RegExp,
  what: string,
): string {
  const raw = env[name];
  if (raw === undefined || raw.trim() === "") return fallback;
  const value = raw.trim();
  if (!pattern.test(value)) {
    throw new ConfigError(
      `${name} must be ${what}: current value is "${raw}"`,
    );
  }
  return value;
}

interface NatsServers {
  readonly servers: string[];
  /** Credentials written in the URLs (`user:pass@` or `token@`), the first found. */
  readonly user: string;
  readonly password: string;
  readonly token: string;
}

/** Never echoes the URL: it may hold a password (the error shows it redacted). */
function parseNatsServers(raw: string): NatsServers {
  const servers: string[] = [];
  let user = "", password = "", token = "";
  for (const entry of raw.split(",").map((s) => s.trim())) {
    const server = entry;
    const withScheme = server.includes("://") ? server : `nats://${server}`;
    let url: URL | undefined;
    try {
      url = new URL(withScheme);
    } catch {
      url = undefined;
    }
    if (
      server === "" || url === undefined || url.hostname === "" ||
      !["nats:", "tls:"].includes(url.protocol) ||
      (url.pathname !== "" && url.pathname !== "/")
    ) {
      throw new ConfigError(
        `Cannot parse NATS_URL as a comma-separated list of nats://host:port servers: current value is "${
          redactUrl(raw)
        }"`,
      );
    }
    if (url.username !== "" && user === "" && token === "") {
      const name = decodeURIComponent(url.username);
      if (url.password !== "") [user, password] = [name, decodeURIComponent(url.password)];
      else token = name;
    }
    const bare = url.username === "" ? server : server.slice(server.lastIndexOf("@") + 1);
    servers.push(server.includes("://") && url.username !== "" ? `${url.protocol}//${bare}` : bare);
  }
  return { servers, user, password, token };
}

const TRUE_WORDS = ["true", "1", "yes", "on"];
const FALSE_WORDS = ["false", "0", "no", "off"];

function readBoolean(env: Env, name: string, fallback: boolean): boolean {
  const raw = env[name];
  if (raw === undefined || raw.trim() === "") return fallback;
  const word = raw.trim().toLowerCase();
  if (TRUE_WORDS.includes(word)) return true;
  if (FALSE_WORDS.includes(word)) return false;
  throw new ConfigError(`${name} must be true or false: current value is "${raw}"`);
}

/** A path to a file, or "" when unset; the file is read (and checked) at startup. */
function readPath(env: Env, name: string): string {
  return env[name]?.trim() ?? "";
}

function parseHost(env: Env, name = "GATEWAY_HOST", fallback = "0.0.0.0"): string {
  const raw = env[name];
  if (raw === undefined || raw.trim() === "") return fallback;
  const host = raw.trim();
  const bracketed = host.includes(":") ? `[${host}]` : host;
  let valid = false;
  try {
    valid = new URL(`http://${bracketed}:1/`).hostname !== "";
  } catch {
    valid = false;
  }
  if (!valid) {
    throw new ConfigError(
      `${name} must be a host name or IP address: current value is "${raw}"`,
    );
  }
  return host;
}

function parseWorkers(env: Env, cpus: number): number {
  const raw = env.GATEWAY_WORKERS;
  if (raw?.trim().toLowerCase() === "auto") return Math.max(1, Math.min(cpus, MAX_WORKERS));
  if (raw !== undefined && raw.trim() !== "" && !INTEGER_PATTERN.test(raw)) {
    throw new ConfigError(
      `GATEWAY_WORKERS must be a number of workers or "auto": current value is "${raw}"`,
    );
  }
  return readInteger(env, "GATEWAY_WORKERS", 1, 1, MAX_WORKERS);
}

/** Tokens are secrets: errors say which entry is wrong, never its value. */
function parseAuthTokens(env: Env): string[] {
  const raw = env.GATEWAY_AUTH_TOKENS;
  if (raw === undefined || raw.trim() === "") return [];
  const tokens = raw.split(",").map((t) => t.trim());
  tokens.forEach((token, index) => {
    if (token.length < MIN_TOKEN_LENGTH || !/^[\x21-\x7e]+$/.test(token)) {
      throw new ConfigError(
        `GATEWAY_AUTH_TOKENS must be a comma-separated list of tokens of at least ${MIN_TOKEN_LENGTH} printable characters without spaces: entry ${
          index + 1
        } of ${tokens.length} is not (its value is not shown: it is a secret)`,
      );
    }
  });
  return tokens;
}

type WhoMayConnect = Pick<
  Config,
  | "jwtSecret"
  | "jwtPublicKeyPath"
  | "jwtJwksPath"
  | "jwtKeys"
  | "jwtAudience"
  | "jwtIssuer"
  | "jwtClockSkewSeconds"
  | "authReject"
  | "allowedOrigins"
>;

/** JWT keys (key files read and checked now, so a bad one exits 2), rejection mode, origins. */
function parseWhoMayConnect(env: Env): WhoMayConnect {
  const jwtSecret = env.GATEWAY_JWT_SECRET?.trim() ?? "";
  if (jwtSecret !== "" && new TextEncoder().encode(jwtSecret).length < MIN_JWT_SECRET_BYTES) {
    throw new ConfigError(
      `GATEWAY_JWT_SECRET must be at least ${MIN_JWT_SECRET_BYTES} bytes (RFC 7518: an HMAC key as long as its hash): the value set is shorter (its value is not shown: it is a secret)`,
    );
  }
  const jwtPublicKeyPath = readPath(env, "GATEWAY_JWT_PUBLIC_KEY");
  const jwtJwksPath = readPath(env, "GATEWAY_JWT_JWKS");
  try {
    return {
      jwtSecret,
      jwtPublicKeyPath,
      jwtJwksPath,
      jwtKeys: Object.freeze([
        ...(jwtPublicKeyPath ? [readPublicKeyFile(jwtPublicKeyPath)] : []),
        ...(jwtJwksPath ? readJwksFile(jwtJwksPath) : []),
      ]),
      jwtAudience: env.GATEWAY_JWT_AUDIENCE?.trim() ?? "",
      jwtIssuer: env.GATEWAY_JWT_ISSUER?.trim() ?? "",
      jwtClockSkewSeconds: readInteger(env, "GATEWAY_JWT_CLOCK_SKEW_S", 30, 0, 300),
      authReject: readMatching(
        env,
        "GATEWAY_AUTH_REJECT",
        "close",
        /^(close|http)$/,
        "close or http",
      ) as "close" | "http",
      allowedOrigins: Object.freeze(parseAllowedOrigins(env.GATEWAY_ALLOWED_ORIGINS)),
    };
  } catch (err) {
    throw err instanceof AuthConfigError ? new ConfigError(err.message, { cause: err }) : err;
  }
}

/** The stream the gateway used before routes, kept for the GATEWAY_SUBJECT path. */
const LEGACY_STREAM = "LEVEL_SIGNALS";

function isSet(env: Env, name: string): boolean {
  return (env[name]?.trim() ?? "") !== "";
}

/**
 * GATEWAY_ROUTES, or when unset the one route GATEWAY_SUBJECT/GATEWAY_STREAM always described
 * (`/ws/stream=levels.signals@LEVEL_SIGNALS` by default), so an existing deployment is unchanged.
 * Both at once would leave one silently ignored: refused, saying what to write instead.
 */
function parseRouteConfig(env: Env): RouteSpec[] {
  const legacy = ["GATEWAY_SUBJECT", "GATEWAY_STREAM"].filter((name) => isSet(env, name));
  if (isSet(env, "GATEWAY_ROUTES")) {
    if (legacy.length > 0) {
      const subject = env.GATEWAY_SUBJECT?.trim() || "levels.signals";
      const stream = env.GATEWAY_STREAM?.trim() || LEGACY_STREAM;
      throw new ConfigError(
        `GATEWAY_ROUTES cannot be used with ${
          legacy.join(" or ")
        }: name the subject and stream in a route instead, e.g. GATEWAY_ROUTES=/ws/stream=${subject}@${stream}, and unset ${
          legacy.join(" and ")
        }`,
      );
    }
    return parseRoutes(env.GATEWAY_ROUTES!, "GATEWAY_ROUTES");
  }
  const subject = readMatching(
    env,
    "GATEWAY_SUBJECT",
    "levels.signals",
    SUBJECT_PATTERN,
    "a NATS subject without wildcards",
  );
  const stream = readMatching(
    env,
    "GATEWAY_STREAM",
    LEGACY_STREAM,
    NAME_PATTERN,
    "a stream name (letters, digits, _ and -)",
  );
  return parseRoutes(`/ws/stream=${subject}@${stream}`, "GATEWAY_SUBJECT");
}

/** Invalid payloads published to a subject a route relays would come back to it, forever. */
function parseDeadLetterSubject(env: Env, routes: readonly RouteSpec[]): string {
  const deadLetterSubject = readMatching(
    env,
    "GATEWAY_DEAD_LETTER_SUBJECT",
    "",
    SUBJECT_PATTERN,
    "a NATS subject without wildcards",
  );
  const relaying = routes.find((route) => routeReceives(route, deadLetterSubject));
  if (deadLetterSubject !== "" && relaying !== undefined) {
    throw new ConfigError(
      `GATEWAY_DEAD_LETTER_SUBJECT must not be a subject a route relays (route "${relaying.path}" relays "${relaying.subject}"), or invalid payloads would be relayed again: current value is "${env.GATEWAY_DEAD_LETTER_SUBJECT}"`,
    );
  }
  return deadLetterSubject;
}

type AdminAddress = Pick<Config, "adminHost" | "adminPort">;

/** GATEWAY_ADMIN_PORT/HOST; a host without a port would leave /metrics public unnoticed. */
function parseAdminAddress(env: Env, host: string, port: number): AdminAddress {
  const adminPort = readInteger(env, "GATEWAY_ADMIN_PORT", -1, -1, 65535);
  if (adminPort === -1 && isSet(env, "GATEWAY_ADMIN_HOST")) {
    throw new ConfigError(
      `GATEWAY_ADMIN_HOST is set without GATEWAY_ADMIN_PORT: the admin endpoints would stay on the public port. Set GATEWAY_ADMIN_PORT too, or unset GATEWAY_ADMIN_HOST: current value is "${env.GATEWAY_ADMIN_HOST}"`,
    );
  }
  if (adminPort !== -1 && adminPort !== 0 && adminPort === port) {
    throw new ConfigError(
      `GATEWAY_ADMIN_PORT must differ from the public port (GATEWAY_PORT/PORT), or the admin endpoints would not be separate: current value is "${env.GATEWAY_ADMIN_PORT}"`,
    );
  }
  return { adminHost: parseHost(env, "GATEWAY_ADMIN_HOST", host), adminPort };
}

/**
 * Several workers on one durable consumer share its messages (each worker pulls its own share),
 * so each client would see about 1/n of the stream: refuse the pair.
 */
function refuseSplitStream(config: Config): void {
  if (config.workers > 1 && config.durableName !== "") {
    throw new ConfigError(
      `GATEWAY_WORKERS=${config.workers} cannot be used with GATEWAY_DURABLE="${config.durableName}": every worker would pull from the one durable consumer, so each client would get about 1/${config.workers} of the messages. Unset GATEWAY_DURABLE (each worker then reads the whole stream with its own ordered consumer) or set GATEWAY_WORKERS=1`,
    );
  }
  if (config.routes.length > 1 && config.durableName !== "") {
    throw new ConfigError(
      `GATEWAY_DURABLE="${config.durableName}" names one durable consumer, but GATEWAY_ROUTES has ${config.routes.length} routes, each with its own consumer: unset GATEWAY_DURABLE (each route then uses an ordered consumer) or configure one route`,
    );
  }
}

/**
 * Parses and validates the gateway's configuration; throws ConfigError naming the bad variable.
 * `cpus` is what GATEWAY_WORKERS=auto resolves to.
 */
export function parseConfig(env: Env, cpus = navigator.hardwareConcurrency): Config {
  const natsUrl = env.NATS_URL?.trim() || "nats://localhost:4222";
  const portName = env.GATEWAY_PORT?.trim() ? "GATEWAY_PORT" : "PORT";
  const logLevelName = env.GATEWAY_LOG_LEVEL?.trim() ? "GATEWAY_LOG_LEVEL" : "LOG_LEVEL";
  const logLevelRaw = env[logLevelName]?.trim().toLowerCase() || "info";
  if (!LOG_LEVELS.includes(logLevelRaw as LogLevel)) {
    throw new ConfigError(
      `${logLevelName} must be one of ${LOG_LEVELS.join(", ")}: current value is "${
        env[logLevelName]
      }"`,
    );
  }
  const routes = Object.freeze(parseRouteConfig(env));
  const deadLetterSubject = parseDeadLetterSubject(env, routes);
  const host = parseHost(env);
  const port = readInteger(env, portName, 8000, 0, 65535);
  const nats = parseNatsServers(natsUrl);
  const natsUser = env.NATS_USER?.trim() || nats.user;
  const natsPassword = env.NATS_PASSWORD ?? (env.NATS_USER?.trim() ? "" : nats.password);
  if (natsPassword !== "" && natsUser === "") {
    throw new ConfigError(
      `NATS_PASSWORD is set without NATS_USER: set NATS_USER too (the password is not shown)`,
    );
  }
  const config: Config = Object.freeze({
    natsUrl,
    natsUrlRedacted: redactUrl(natsUrl),
    natsServers: Object.freeze(nats.servers),
    natsUser,
    natsPassword,
    natsToken: env.NATS_TOKEN?.trim() || nats.token,
    natsNkeyPath: readPath(env, "NATS_NKEY"),
    natsCredsPath: readPath(env, "NATS_CREDS"),
    natsCaPath: readPath(env, "NATS_CA"),
    natsCertPath: readPath(env, "NATS_CERT"),
    natsKeyPath: readPath(env, "NATS_KEY"),
    createStreams: readBoolean(env, "GATEWAY_CREATE_STREAMS", true),
    streamReplicas: readInteger(env, "GATEWAY_STREAM_REPLICAS", 0, 0, 5),
    strictConfig: readBoolean(env, "GATEWAY_STRICT_CONFIG", false),
    fdLimit: readInteger(env, "GATEWAY_FD_LIMIT", 0, 0),
    host,
    port,
    ...parseAdminAddress(env, host, port),
    routes,
    routeMaxValues: readInteger(env, "GATEWAY_ROUTE_MAX_VALUES", 1000, 1, 1_000_000),
    viewer: readBoolean(env, "GATEWAY_VIEWER", true),
    durableName: readMatching(
      env,
      "GATEWAY_DURABLE",
      "",
      NAME_PATTERN,
      "a consumer name (letters, digits, _ and -)",
    ),
    maxPayloadBytes: readInteger(
      env,
      "GATEWAY_MAX_PAYLOAD_BYTES",
      1024 * 1024,
      1,
      64 * 1024 * 1024,
    ),
    clientBufferBytes: readInteger(
      env,
      "GATEWAY_CLIENT_BUFFER_BYTES",
      256 * 1024,
      1,
    ),
    slowClientTimeoutMs: readInteger(
      env,
      "GATEWAY_SLOW_CLIENT_TIMEOUT_MS",
      10_000,
      0,
    ),
    clientMaxQueueMs: readInteger(env, "GATEWAY_CLIENT_MAX_QUEUE_MS", 100, 0, 60_000),
    maxConnections: readInteger(env, "GATEWAY_MAX_CONNECTIONS", 10_000, 0),
    idleTimeoutSeconds: readInteger(env, "GATEWAY_IDLE_TIMEOUT_S", 30, 0, 3600),
    clientMaxFrameBytes: readInteger(
      env,
      "GATEWAY_CLIENT_MAX_FRAME_BYTES",
      4096,
      16,
    ),
    clientMaxFramesPerSecond: readInteger(
      env,
      "GATEWAY_CLIENT_MAX_FRAMES_PER_S",
      20,
      1,
    ),
    natsConnectTimeoutMs: readInteger(
      env,
      "GATEWAY_NATS_CONNECT_TIMEOUT_MS",
      10_000,
      100,
    ),
    natsMaxOutageMs: readInteger(env, "GATEWAY_NATS_MAX_OUTAGE_MS", 120_000, 0),
    shutdownTimeoutMs: readInteger(
      env,
      "GATEWAY_SHUTDOWN_TIMEOUT_MS",
      5_000,
      100,
    ),
    logLevel: logLevelRaw as LogLevel,
    workers: parseWorkers(env, cpus),
    authTokens: Object.freeze(parseAuthTokens(env)),
    ...parseWhoMayConnect(env),
    deadLetterSubject,
  });
  refuseSplitStream(config);
  return config;
}

/**
 * What the gateway will do, for the startup log: every setting that shapes its behaviour, with
 * secrets reduced to whether they are set (never their values).
 */
export function describeConfig(config: Config): Record<string, unknown> {
  const auth = [
    ...(config.authTokens.length > 0 ? [`${config.authTokens.length} static token(s)`] : []),
    ...(config.jwtSecret !== "" ? ["JWT (HMAC secret)"] : []),
    ...(config.jwtPublicKeyPath !== "" ? [`JWT (public key ${config.jwtPublicKeyPath})`] : []),
    ...(config.jwtJwksPath !== "" ? [`JWT (JWKS ${config.jwtJwksPath})`] : []),
  ];
  const natsLogin = config.natsCredsPath !== ""
    ? `creds file ${config.natsCredsPath}`
    : config.natsNkeyPath !== ""
    ? `nkey ${config.natsNkeyPath}`
    : config.natsToken !== ""
    ? "token"
    : config.natsUser !== ""
    ? `user "${config.natsUser}"`
    : "none";
  return {
    routes: config.routes.map((r) => `${r.path}=${r.subject}${r.stream ? `@${r.stream}` : ""}`),
    nats: config.natsUrlRedacted,
    nats_login: natsLogin,
    nats_tls: config.natsCaPath !== "" || config.natsCertPath !== "" ||
      config.natsServers.some((s) => s.startsWith("tls://")),
    consumer: config.durableName || "ordered",
    create_streams: config.createStreams,
    auth: auth.length > 0 ? auth : "off",
    auth_reject: config.authReject,
    allowed_origins: config.allowedOrigins,
    listen: `${config.host}:${config.port}`,
    admin_listen: config.adminPort >= 0 ? `${config.adminHost}:${config.adminPort}` : "off",
    workers: config.workers,
    max_connections: config.maxConnections,
    client_buffer_bytes: config.clientBufferBytes,
    client_max_queue_ms: config.clientMaxQueueMs,
    slow_client_timeout_ms: config.slowClientTimeoutMs,
    idle_timeout_s: config.idleTimeoutSeconds,
    client_max_frame_bytes: config.clientMaxFrameBytes,
    client_max_frames_per_s: config.clientMaxFramesPerSecond,
    route_max_values: config.routeMaxValues,
    dead_letter_subject: config.deadLetterSubject || "off",
    viewer: config.viewer,
    fd_limit: config.fdLimit > 0 ? config.fdLimit : "read at start",
  };
}
