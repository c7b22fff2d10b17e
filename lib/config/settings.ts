/**
 * Every setting the gateway reads, said once: its variable, default (written as one would set
 * it), parser, one-line help, group, whether it is a secret, and whether a newcomer needs it
 * (basic) or only someone tuning a deployment (tuning). lib/config/config.ts parses with it, lib/config/cli.ts
 * prints `--help` from it, scripts/gen_config_docs.ts writes docs/configuration.md from it.
 * Cross-setting checks (a durable consumer with workers, ...) live in lib/config/config.ts.
 */
import { AuthConfigError, MIN_JWT_SECRET_BYTES } from "../auth/keys.ts";
import { parseAllowedOrigins } from "../auth/origins.ts";
import { ConfigError } from "./config_error.ts";
import { redactUrl } from "./redact.ts";
import { parseRoutes, type RouteSpec } from "../relay/route_table.ts";

export type LogLevel = "debug" | "info" | "warn" | "error";

export type Group = "NATS" | "Listen" | "Routes" | "Who may connect" | "Clients" | "Lifecycle";

/** One variable. `parse` gets the value set (trimmed unless `untrimmed`) or else `default`. */
export interface Setting<T> {
  readonly group: Group;
  readonly level: "basic" | "tuning";
  /** As one would set it; "" when there is none (then `parse("")` says what unset means). */
  readonly default: string;
  readonly help: string;
  readonly secret?: boolean;
  /** Whitespace is part of the value (a password); others are trimmed. */
  readonly untrimmed?: boolean;
  /** A file the gateway reads at startup (checked by --check-config and the permissions). */
  readonly file?: boolean;
  parse(raw: string, name: string): T;
  /** The effective value as --check-config and the startup log show it; default: as parsed. */
  show?(value: T): unknown;
}

// Parsers: each throws ConfigError naming the variable and the value (never a secret's).

const INTEGER = /^-?\d+$/;
const SUBJECT = /^[^\s*>]+$/;
const NAME = /^[A-Za-z0-9_-]+$/;

function integer(min: number, max = Number.MAX_SAFE_INTEGER) {
  return (raw: string, name: string): number => {
    if (!INTEGER.test(raw)) {
      throw new ConfigError(`Cannot parse ${name} as an integer: current value is "${raw}"`);
    }
    const value = Number(raw);
    if (value < min || value > max) {
      throw new ConfigError(`${name} must be between ${min} and ${max}: current value is "${raw}"`);
    }
    return value;
  };
}

const TRUE_WORDS = ["true", "1", "yes", "on"];
const FALSE_WORDS = ["false", "0", "no", "off"];

function boolean(raw: string, name: string): boolean {
  const word = raw.toLowerCase();
  if (TRUE_WORDS.includes(word)) return true;
  if (FALSE_WORDS.includes(word)) return false;
  throw new ConfigError(`${name} must be true or false: current value is "${raw}"`);
}

function oneOf<const T extends string>(...words: readonly T[]) {
  return (raw: string, name: string): T => {
    const word = raw.toLowerCase();
    if (!(words as readonly string[]).includes(word)) {
      throw new ConfigError(
        `${name} must be one of ${words.join(", ")}: current value is "${raw}"`,
      );
    }
    return word as T;
  };
}

function matching(pattern: RegExp, what: string) {
  return (raw: string, name: string): string => {
    if (raw !== "" && !pattern.test(raw)) {
      throw new ConfigError(`${name} must be ${what}: current value is "${raw}"`);
    }
    return raw;
  };
}

const text = (raw: string): string => raw;

export function parseHost(raw: string, name: string): string {
  const bracketed = raw.includes(":") && !raw.startsWith("[") ? `[${raw}]` : raw;
  let valid = false;
  try {
    valid = new URL(`http://${bracketed}:1/`).hostname !== "";
  } catch {
    valid = false;
  }
  if (!valid) {
    throw new ConfigError(`${name} must be a host name or IP address: current value is "${raw}"`);
  }
  return raw;
}

/** GATEWAY_ADMIN_PORT: `PORT` or `HOST:PORT` (like nats-server's `http: host:port`). */
export interface AdminListen {
  /** "" when not given: the public listen address (GATEWAY_HOST). */
  readonly host: string;
  /** -1: no admin port. */
  readonly port: number;
}

function adminListen(raw: string, name: string): AdminListen {
  if (raw === "") return { host: "", port: -1 };
  const colon = raw.lastIndexOf(":");
  const host = colon < 0 ? "" : raw.slice(0, colon).replace(/^\[(.*)\]$/, "$1");
  if (colon >= 0) parseHost(host, name);
  return { host, port: integer(0, 65535)(raw.slice(colon + 1), name) };
}

/** The most isolates GATEWAY_WORKERS may ask for. */
const MAX_WORKERS = 256;

/** "auto" is resolved by lib/config/config.ts (it knows the CPU count): 0 here. */
function workers(raw: string, name: string): number {
  if (raw.toLowerCase() === "auto") return 0;
  if (!INTEGER.test(raw)) {
    throw new ConfigError(
      `${name} must be a number of workers or "auto": current value is "${raw}"`,
    );
  }
  return integer(1, MAX_WORKERS)(raw, name);
}

/** Shortest accepted auth token: long enough that guessing is hopeless. */
const MIN_TOKEN_LENGTH = 16;

/** Tokens are secrets: errors say which entry is wrong, never its value. */
function authTokens(raw: string, name: string): readonly string[] {
  if (raw === "") return [];
  const tokens = raw.split(",").map((t) => t.trim());
  tokens.forEach((token, index) => {
    if (token.length < MIN_TOKEN_LENGTH || !/^[\x21-\x7e]+$/.test(token)) {
      throw new ConfigError(
        `${name} must be a comma-separated list of tokens of at least ${MIN_TOKEN_LENGTH} printable characters without spaces: entry ${
          index + 1
        } of ${tokens.length} is not (its value is not shown: it is a secret)`,
      );
    }
  });
  return Object.freeze(tokens);
}

function jwtSecret(raw: string, name: string): string {
  if (raw !== "" && new TextEncoder().encode(raw).length < MIN_JWT_SECRET_BYTES) {
    throw new ConfigError(
      `${name} must be at least ${MIN_JWT_SECRET_BYTES} bytes (RFC 7518: an HMAC key as long as its hash): the value set is shorter (its value is not shown: it is a secret)`,
    );
  }
  return raw;
}

/** GATEWAY_ALLOWED_ORIGINS: lib/auth/origins.ts, which applies them, knows what an origin is. */
function origins(raw: string): readonly string[] {
  try {
    return Object.freeze(parseAllowedOrigins(raw));
  } catch (err) {
    throw err instanceof AuthConfigError ? new ConfigError(err.message, { cause: err }) : err;
  }
}

function routes(raw: string, name: string): readonly RouteSpec[] {
  return Object.freeze(parseRoutes(raw, name));
}

/** A route as one writes it in GATEWAY_ROUTES. */
export function routeText(route: RouteSpec): string {
  return `${route.path}=${route.subject}${route.stream ? `@${route.stream}` : ""}`;
}

/** "auto" (0): min(3, JetStream cluster size). */
function replicas(raw: string, name: string): number {
  return raw.toLowerCase() === "auto" ? 0 : integer(1, 5)(raw, name);
}

/** A typed table entry; `satisfies` below keeps each parser's type for lib/config/config.ts. */
function setting<T>(entry: Setting<T>): Setting<T> {
  return entry;
}

export const SETTINGS = {
  // NATS: where the messages come from, and how the gateway logs in (as the `nats` CLI names them).
  NATS_URL: setting({
    group: "NATS",
    level: "basic",
    default: "nats://localhost:4222",
    help: "NATS server(s), comma-separated, nats:// or tls://; may hold user:password@",
    parse: text,
    show: redactUrl,
  }),
  NATS_USER: setting({
    group: "NATS",
    level: "basic",
    default: "",
    help: "NATS user (overrides one written in NATS_URL)",
    parse: text,
  }),
  NATS_PASSWORD: setting({
    group: "NATS",
    level: "basic",
    default: "",
    help: "password of NATS_USER",
    secret: true,
    untrimmed: true,
    parse: text,
  }),
  NATS_TOKEN: setting({
    group: "NATS",
    level: "basic",
    default: "",
    help: "NATS token",
    secret: true,
    parse: text,
  }),
  NATS_CREDS: setting({
    group: "NATS",
    level: "basic",
    default: "",
    help: "path to a .creds file (user JWT and nkey seed)",
    file: true,
    parse: text,
  }),
  NATS_NKEY: setting({
    group: "NATS",
    level: "tuning",
    default: "",
    help: "path to a user nkey seed file",
    file: true,
    parse: text,
  }),
  NATS_CA: setting({
    group: "NATS",
    level: "tuning",
    default: "",
    help: "path to a PEM CA bundle the NATS server's certificate must chain to",
    file: true,
    parse: text,
  }),
  NATS_CERT: setting({
    group: "NATS",
    level: "tuning",
    default: "",
    help: "path to a PEM client certificate for TLS client auth (with NATS_KEY)",
    file: true,
    parse: text,
  }),
  NATS_KEY: setting({
    group: "NATS",
    level: "tuning",
    default: "",
    help: "path to the PEM private key of NATS_CERT",
    file: true,
    parse: text,
  }),
  GATEWAY_CREATE_STREAMS: setting({
    group: "NATS",
    level: "tuning",
    default: "true",
    help: "create the routes' streams when missing; false: create and change nothing in NATS",
    parse: boolean,
  }),
  GATEWAY_STREAM_REPLICAS: setting({
    group: "NATS",
    level: "tuning",
    default: "auto",
    help: "replicas of the streams the gateway creates; auto: min(3, JetStream cluster size)",
    parse: replicas,
    show: (n) => n === 0 ? "auto" : n,
  }),
  GATEWAY_DURABLE: setting({
    group: "NATS",
    level: "tuning",
    default: "",
    help: "durable consumer name (one route only); unset: an ordered consumer per gateway",
    parse: matching(NAME, "a consumer name (letters, digits, _ and -)"),
  }),
  GATEWAY_NATS_CONNECT_TIMEOUT_MS: setting({
    group: "NATS",
    level: "tuning",
    default: "10000",
    help: "how long startup keeps trying to reach NATS before exiting 1",
    parse: integer(100),
  }),
  GATEWAY_NATS_MAX_OUTAGE_MS: setting({
    group: "NATS",
    level: "tuning",
    default: "120000",
    help: "a NATS outage longer than this exits 1 so a supervisor restarts; 0: wait forever",
    parse: integer(0),
  }),

  // Routes: which subjects reach which WebSocket paths.
  GATEWAY_ROUTES: setting({
    group: "Routes",
    level: "basic",
    default: "/ws/stream=levels.signals@LEVEL_SIGNALS",
    help: "PATH=SUBJECT[@STREAM], comma-separated; {name} in both matches one segment",
    parse: routes,
    show: (specs) => specs.map(routeText).join(","),
  }),
  GATEWAY_ROUTE_MAX_VALUES: setting({
    group: "Routes",
    level: "tuning",
    default: "1000",
    help: "values a templated route holds; past it the least recently used idle one is dropped",
    parse: integer(1, 1_000_000),
  }),
  GATEWAY_MAX_PAYLOAD_BYTES: setting({
    group: "Routes",
    level: "tuning",
    default: "1048576",
    help: "larger NATS payloads are skipped and counted",
    parse: integer(1, 64 * 1024 * 1024),
  }),
  GATEWAY_DEAD_LETTER_SUBJECT: setting({
    group: "Routes",
    level: "tuning",
    default: "",
    help: "invalid payloads are also published here, with headers saying why; unset: only counted",
    parse: matching(SUBJECT, "a NATS subject without wildcards"),
  }),

  // Listen: where browsers and probes reach the gateway.
  GATEWAY_HOST: setting({
    group: "Listen",
    level: "basic",
    default: "0.0.0.0",
    help: "listen address (all interfaces by default)",
    parse: parseHost,
  }),
  GATEWAY_PORT: setting({
    group: "Listen",
    level: "basic",
    default: "8000",
    help: "listen port (PORT is read when this is unset); 0 picks a free one",
    parse: integer(0, 65535),
  }),
  PORT: setting({
    group: "Listen",
    level: "basic",
    default: "",
    help: "listen port when GATEWAY_PORT is unset (what container platforms set)",
    parse: (raw, name) => raw === "" ? -1 : integer(0, 65535)(raw, name),
    show: (port) => port < 0 ? "" : port,
  }),
  GATEWAY_ADMIN_PORT: setting({
    group: "Listen",
    level: "basic",
    default: "",
    help:
      "[HOST:]PORT of its own for /health, /readyz, /metrics; unset: the public port serves them",
    parse: adminListen,
    show: ({ host, port }) => port < 0 ? "" : host === "" ? String(port) : `${host}:${port}`,
  }),
  GATEWAY_WORKERS: setting({
    group: "Listen",
    level: "basic",
    default: "1",
    help: "isolates serving the port together, each with its own consumer; auto: one per CPU",
    parse: workers,
  }),
  GATEWAY_MAX_CONNECTIONS: setting({
    group: "Listen",
    level: "tuning",
    default: "10000",
    help: "past it, upgrades get HTTP 503 (lowered to fit the fd limit when known); 0: no limit",
    parse: integer(0),
  }),
  GATEWAY_VIEWER: setting({
    group: "Listen",
    level: "tuning",
    default: "true",
    help: "serve the live viewer page at /; false: / is 404",
    parse: boolean,
  }),

  // Who may connect.
  GATEWAY_AUTH_TOKENS: setting({
    group: "Who may connect",
    level: "basic",
    default: "",
    help: "comma-separated tokens (16+ characters); set: clients must present one; unset: open",
    secret: true,
    parse: authTokens,
    show: (tokens) => tokens.join(","),
  }),
  GATEWAY_JWT_SECRET: setting({
    group: "Who may connect",
    level: "basic",
    default: "",
    help: "HMAC secret (32+ bytes) for HS256/384/512 JWTs; set: clients need a valid JWT",
    secret: true,
    parse: jwtSecret,
  }),
  GATEWAY_JWT_PUBLIC_KEY: setting({
    group: "Who may connect",
    level: "basic",
    default: "",
    help: "path to a PEM public key (RSA, EC, Ed25519) that verifies JWTs",
    file: true,
    parse: text,
  }),
  GATEWAY_ALLOWED_ORIGINS: setting({
    group: "Who may connect",
    level: "basic",
    default: "*",
    help: "browser origins that may connect, comma-separated (https://app.example.com); *: any",
    parse: origins,
    show: (list) => list.join(","),
  }),
  GATEWAY_JWT_JWKS: setting({
    group: "Who may connect",
    level: "tuning",
    default: "",
    help: "path to a JWKS file of public keys that verify JWTs (chosen by kid)",
    file: true,
    parse: text,
  }),
  GATEWAY_JWT_AUDIENCE: setting({
    group: "Who may connect",
    level: "tuning",
    default: "",
    help: "the aud a JWT must name; unset: not checked",
    parse: text,
  }),
  GATEWAY_JWT_ISSUER: setting({
    group: "Who may connect",
    level: "tuning",
    default: "",
    help: "the iss a JWT must carry; unset: not checked",
    parse: text,
  }),
  GATEWAY_JWT_CLOCK_SKEW_S: setting({
    group: "Who may connect",
    level: "tuning",
    default: "30",
    help: "seconds of clock difference allowed on exp and nbf",
    parse: integer(0, 300),
  }),
  GATEWAY_AUTH_REJECT: setting({
    group: "Who may connect",
    level: "tuning",
    default: "close",
    help: "close: accept, then close with 1008 before any data; http: refuse with 401/403",
    parse: oneOf("close", "http"),
  }),

  // Clients: how far behind a client may fall (freshness) and how idle ones are found.
  // 1 s: one TCP retransmission (Linux's minimum RTO is 200 ms) or a browser tab's hiccup must
  // not cost a client a snapshot, and a queue a second old is four snapshots at the 250 ms
  // cadence. Overload is not this bound's job: a route behind its stream sheds at the source
  // (lib/relay/route.ts MAX_BEHIND_MS). 100 ms lost readers' snapshots whenever a loaded machine
  // stalled them (tests/load/isolation_test.ts in a parallel suite).
  GATEWAY_CLIENT_MAX_QUEUE_MS: setting({
    group: "Clients",
    level: "tuning",
    default: "1000",
    help:
      "freshness: a client whose oldest unsent snapshot waited longer gets only the newest; 0: off",
    parse: integer(0, 60_000),
  }),
  GATEWAY_CLIENT_BUFFER_BYTES: setting({
    group: "Clients",
    level: "tuning",
    default: "262144",
    help: "memory: bytes a client may have queued before it gets only the newest snapshot",
    parse: integer(1),
  }),
  GATEWAY_SLOW_CLIENT_TIMEOUT_MS: setting({
    group: "Clients",
    level: "tuning",
    default: "10000",
    help: "a client over either bound this long is closed with 4008; 0: at once",
    parse: integer(0),
  }),
  GATEWAY_IDLE_TIMEOUT_S: setting({
    group: "Clients",
    level: "tuning",
    default: "30",
    help: "ping interval; a client that does not answer in time is closed; 0: no pings",
    parse: integer(0, 3600),
  }),

  // Lifecycle: logs, shutdown, where the configuration comes from.
  GATEWAY_LOG_LEVEL: setting({
    group: "Lifecycle",
    level: "basic",
    default: "info",
    help: "debug, info, warn or error (JSON lines on stderr)",
    parse: oneOf<LogLevel>("debug", "info", "warn", "error"),
  }),
  GATEWAY_SHUTDOWN_TIMEOUT_MS: setting({
    group: "Lifecycle",
    level: "tuning",
    default: "5000",
    help: "bound on a graceful shutdown (clients closed with 1001, NATS drained)",
    parse: integer(100),
  }),
  GATEWAY_ENV_FILE: setting({
    group: "Lifecycle",
    level: "tuning",
    default: "",
    help: "env file filling variables the environment leaves unset; unset: .env when present",
    parse: text,
  }),
} as const;

export type SettingName = keyof typeof SETTINGS;

/** Every variable the gateway reads, in table order; the permission flags list the same. */
export const ENV_VARIABLES = Object.keys(SETTINGS) as readonly SettingName[];

/** Each setting's parsed value. */
export type SettingValues = {
  readonly [K in SettingName]: ReturnType<(typeof SETTINGS)[K]["parse"]>;
};

/** The value a variable is given, or its default; "" and blanks count as unset. */
export function rawValue(name: SettingName, env: Readonly<Record<string, string | undefined>>) {
  const entry: Setting<unknown> = SETTINGS[name];
  const given = env[name];
  const value = entry.untrimmed ? given : given?.trim();
  return value === undefined || value.trim() === "" ? entry.default : value;
}

/** Parses every setting on its own (defaults included); throws ConfigError on the first bad one. */
export function readSettings(env: Readonly<Record<string, string | undefined>>): SettingValues {
  const values: Record<string, unknown> = {};
  for (const name of ENV_VARIABLES) {
    values[name] = (SETTINGS[name] as Setting<unknown>).parse(rawValue(name, env), name);
  }
  return values as SettingValues;
}

/**
 * Names the gateway once read, and what to write now. A name here stops the gateway (exit 2)
 * with this text, wherever it is set: a setting silently ignored is worse than none.
 */
export const REMOVED_VARIABLES: Readonly<Record<string, string>> = {
  LOG_LEVEL: "use GATEWAY_LOG_LEVEL",
  GATEWAY_SUBJECT:
    "use GATEWAY_ROUTES=/ws/stream=SUBJECT@LEVEL_SIGNALS (GATEWAY_ROUTES names the subject and stream of each path)",
  GATEWAY_STREAM:
    "use GATEWAY_ROUTES=/ws/stream=levels.signals@STREAM (GATEWAY_ROUTES names the subject and stream of each path)",
  GATEWAY_ADMIN_HOST: "use GATEWAY_ADMIN_PORT=HOST:PORT",
  GATEWAY_STRICT_CONFIG:
    "unset it: an unknown GATEWAY_* variable now always stops the gateway (unknown NATS_* ones are warned about)",
  GATEWAY_FD_LIMIT:
    "unset it: `deno task start` reads the limit itself; elsewhere GATEWAY_MAX_CONNECTIONS is the cap (keep it below LimitNOFILE / ulimit -n)",
  GATEWAY_CLIENT_MAX_QUEUED_SNAPSHOTS:
    "unset it: a client's queue is bounded by GATEWAY_CLIENT_MAX_QUEUE_MS (age) and GATEWAY_CLIENT_BUFFER_BYTES (bytes)",
  GATEWAY_LISTEN_BACKLOG:
    "unset it: the accept queue is as deep as the kernel allows (net.core.somaxconn); the startup log says how deep",
  GATEWAY_CLIENT_MAX_FRAME_BYTES:
    "unset it: clients only send pings; a frame over 4096 bytes always closes with 1009",
  GATEWAY_CLIENT_MAX_FRAMES_PER_S:
    "unset it: clients only send pings; more than 20 frames a second always closes with 1008",
};
