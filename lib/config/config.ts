/**
 * Gateway configuration: the settings of lib/config/settings.ts (where each default is written, once)
 * parsed from the environment, checked against each other, frozen. No I/O: files named here are
 * read when the modules that use them start (lib/auth/keys.ts, lib/nats/connection.ts) and by
 * `--check-config` (lib/check_config.ts).
 */

import { ConfigError } from "./config_error.ts";
import { routeReceives, type RouteSpec } from "../relay/route_table.ts";
import { REDACTED, redactUrl } from "./redact.ts";
import {
  ENV_VARIABLES,
  type LogLevel,
  readSettings,
  type Setting,
  type SettingName,
  SETTINGS,
  type SettingValues,
} from "./settings.ts";

/**
 * What the rest of lib/ reads. Each field says the variable it comes from; what the variable
 * means and its default are in lib/config/settings.ts (and docs/configuration.md, made from it).
 */
export interface Config {
  /** Every setting as parsed (GATEWAY_WORKERS=auto resolved); describeConfig shows them. */
  readonly settings: SettingValues;
  /** NATS_URL as given (may hold credentials: never show it; show natsUrlRedacted). */
  readonly natsUrl: string;
  /** NATS_URL with passwords and tokens replaced by [REDACTED]: what /health and logs show. */
  readonly natsUrlRedacted: string;
  /** NATS_URL split on commas, credentials removed: `nats://h:p`, `tls://h:p` or `h:p`. */
  readonly natsServers: readonly string[];
  /** NATS_USER, else the user written in NATS_URL; "" for none. */
  readonly natsUser: string;
  /** NATS_PASSWORD, else the password written in NATS_URL. A secret. */
  readonly natsPassword: string;
  /** NATS_TOKEN, else a lone token written in NATS_URL (`nats://token@host`). A secret. */
  readonly natsToken: string;
  /** NATS_NKEY; "" for none (so for every path below). */
  readonly natsNkeyPath: string;
  /** NATS_CREDS. */
  readonly natsCredsPath: string;
  /** NATS_CA. */
  readonly natsCaPath: string;
  /** NATS_CERT. */
  readonly natsCertPath: string;
  /** NATS_KEY. */
  readonly natsKeyPath: string;
  /** GATEWAY_CREATE_STREAMS. */
  readonly createStreams: boolean;
  /** GATEWAY_STREAM_REPLICAS; 0 for auto. */
  readonly streamReplicas: number;
  /**
   * Not a setting: the process's open-file limit when the launcher knows it (`deno task start`
   * passes `--fd-limit`, since Deno reads /proc/self/limits only with --allow-all); 0: the
   * gateway reads it if it may, else GATEWAY_MAX_CONNECTIONS alone caps connections.
   */
  readonly fdLimit: number;
  /** GATEWAY_HOST. */
  readonly host: string;
  /** GATEWAY_PORT, else PORT. */
  readonly port: number;
  /** The HOST of GATEWAY_ADMIN_PORT=HOST:PORT, else GATEWAY_HOST. */
  readonly adminHost: string;
  /** The PORT of GATEWAY_ADMIN_PORT; -1: none (the public port serves the admin endpoints). */
  readonly adminPort: number;
  /** GATEWAY_ROUTES (lib/relay/route_table.ts). */
  readonly routes: readonly RouteSpec[];
  /** GATEWAY_ROUTE_MAX_VALUES. */
  readonly routeMaxValues: number;
  /** GATEWAY_VIEWER. */
  readonly viewer: boolean;
  /** GATEWAY_DURABLE; "" for an ordered consumer per instance. */
  readonly durableName: string;
  /** GATEWAY_MAX_PAYLOAD_BYTES. */
  readonly maxPayloadBytes: number;
  /** GATEWAY_CLIENT_BUFFER_BYTES. */
  readonly clientBufferBytes: number;
  /** GATEWAY_SLOW_CLIENT_TIMEOUT_MS. */
  readonly slowClientTimeoutMs: number;
  /** GATEWAY_CLIENT_MAX_QUEUE_MS; 0: the byte bound alone. */
  readonly clientMaxQueueMs: number;
  /** GATEWAY_MAX_CONNECTIONS; 0: no limit. */
  readonly maxConnections: number;
  /** GATEWAY_IDLE_TIMEOUT_S; 0: no pings. */
  readonly idleTimeoutSeconds: number;
  /** GATEWAY_NATS_CONNECT_TIMEOUT_MS. */
  readonly natsConnectTimeoutMs: number;
  /** GATEWAY_NATS_MAX_OUTAGE_MS; 0: wait forever. */
  readonly natsMaxOutageMs: number;
  /** GATEWAY_SHUTDOWN_TIMEOUT_MS. */
  readonly shutdownTimeoutMs: number;
  /** GATEWAY_LOG_LEVEL. */
  readonly logLevel: LogLevel;
  /** GATEWAY_WORKERS, `auto` resolved to the CPU count. */
  readonly workers: number;
  /** GATEWAY_AUTH_TOKENS. Secrets. */
  readonly authTokens: readonly string[];
  /** GATEWAY_JWT_SECRET. A secret. */
  readonly jwtSecret: string;
  /** GATEWAY_JWT_PUBLIC_KEY (read by lib/auth/keys.ts when it starts). */
  readonly jwtPublicKeyPath: string;
  /** GATEWAY_JWT_JWKS (read by lib/auth/keys.ts when it starts). */
  readonly jwtJwksPath: string;
  /** GATEWAY_JWT_AUDIENCE; "" not checked. */
  readonly jwtAudience: string;
  /** GATEWAY_JWT_ISSUER; "" not checked. */
  readonly jwtIssuer: string;
  /** GATEWAY_JWT_CLOCK_SKEW_S. */
  readonly jwtClockSkewSeconds: number;
  /** GATEWAY_AUTH_REJECT. */
  readonly authReject: "close" | "http";
  /** GATEWAY_ALLOWED_ORIGINS; `["*"]` for any. */
  readonly allowedOrigins: readonly string[];
  /** GATEWAY_DEAD_LETTER_SUBJECT; "" for none. */
  readonly deadLetterSubject: string;
}

type Env = Readonly<Record<string, string | undefined>>;

/** The most isolates GATEWAY_WORKERS=auto asks for. */
const MAX_WORKERS = 256;

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
  for (const server of raw.split(",").map((s) => s.trim())) {
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

type NatsLogin = Pick<Config, "natsServers" | "natsUser" | "natsPassword" | "natsToken">;

/** NATS_USER/NATS_PASSWORD/NATS_TOKEN, else what NATS_URL holds. */
function natsLogin(values: SettingValues): NatsLogin {
  const nats = parseNatsServers(values.NATS_URL);
  const natsUser = values.NATS_USER || nats.user;
  const natsPassword = values.NATS_PASSWORD || (values.NATS_USER ? "" : nats.password);
  if (natsPassword !== "" && natsUser === "") {
    throw new ConfigError(
      `NATS_PASSWORD is set without NATS_USER: set NATS_USER too (the password is not shown)`,
    );
  }
  return {
    natsServers: Object.freeze(nats.servers),
    natsUser,
    natsPassword,
    natsToken: values.NATS_TOKEN || nats.token,
  };
}

/** Invalid payloads published to a subject a route relays would come back to it, forever. */
function checkDeadLetterSubject(subject: string, routes: readonly RouteSpec[]): void {
  const relaying = routes.find((route) => routeReceives(route, subject));
  if (subject !== "" && relaying !== undefined) {
    throw new ConfigError(
      `GATEWAY_DEAD_LETTER_SUBJECT must not be a subject a route relays (route "${relaying.path}" relays "${relaying.subject}"), or invalid payloads would be relayed again: current value is "${subject}"`,
    );
  }
}

/** GATEWAY_ADMIN_PORT must not be the public port, or the admin endpoints would not be apart. */
function checkAdminPort(adminPort: number, port: number, raw: string | undefined): void {
  if (adminPort !== -1 && adminPort !== 0 && adminPort === port) {
    throw new ConfigError(
      `GATEWAY_ADMIN_PORT must differ from the public port (GATEWAY_PORT/PORT), or the admin endpoints would not be separate: current value is "${raw}"`,
    );
  }
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
 * Reads no file. `cpus` is what GATEWAY_WORKERS=auto resolves to.
 */
export function parseConfig(env: Env, cpus = navigator.hardwareConcurrency): Config {
  const parsed = readSettings(env);
  const values: SettingValues = {
    ...parsed,
    GATEWAY_WORKERS: parsed.GATEWAY_WORKERS || Math.max(1, Math.min(cpus, MAX_WORKERS)),
  };
  const host = values.GATEWAY_HOST;
  const port = env.GATEWAY_PORT?.trim() || values.PORT < 0 ? values.GATEWAY_PORT : values.PORT;
  const admin = values.GATEWAY_ADMIN_PORT;
  checkAdminPort(admin.port, port, env.GATEWAY_ADMIN_PORT);
  checkDeadLetterSubject(values.GATEWAY_DEAD_LETTER_SUBJECT, values.GATEWAY_ROUTES);
  const config: Config = Object.freeze({
    settings: Object.freeze(values),
    natsUrl: values.NATS_URL,
    natsUrlRedacted: redactUrl(values.NATS_URL),
    ...natsLogin(values),
    natsNkeyPath: values.NATS_NKEY,
    natsCredsPath: values.NATS_CREDS,
    natsCaPath: values.NATS_CA,
    natsCertPath: values.NATS_CERT,
    natsKeyPath: values.NATS_KEY,
    createStreams: values.GATEWAY_CREATE_STREAMS,
    streamReplicas: values.GATEWAY_STREAM_REPLICAS,
    fdLimit: 0,
    host,
    port,
    adminHost: admin.host || host,
    adminPort: admin.port,
    routes: values.GATEWAY_ROUTES,
    routeMaxValues: values.GATEWAY_ROUTE_MAX_VALUES,
    viewer: values.GATEWAY_VIEWER,
    durableName: values.GATEWAY_DURABLE,
    maxPayloadBytes: values.GATEWAY_MAX_PAYLOAD_BYTES,
    clientBufferBytes: values.GATEWAY_CLIENT_BUFFER_BYTES,
    slowClientTimeoutMs: values.GATEWAY_SLOW_CLIENT_TIMEOUT_MS,
    clientMaxQueueMs: values.GATEWAY_CLIENT_MAX_QUEUE_MS,
    maxConnections: values.GATEWAY_MAX_CONNECTIONS,
    idleTimeoutSeconds: values.GATEWAY_IDLE_TIMEOUT_S,
    natsConnectTimeoutMs: values.GATEWAY_NATS_CONNECT_TIMEOUT_MS,
    natsMaxOutageMs: values.GATEWAY_NATS_MAX_OUTAGE_MS,
    shutdownTimeoutMs: values.GATEWAY_SHUTDOWN_TIMEOUT_MS,
    logLevel: values.GATEWAY_LOG_LEVEL,
    workers: values.GATEWAY_WORKERS,
    authTokens: values.GATEWAY_AUTH_TOKENS,
    jwtSecret: values.GATEWAY_JWT_SECRET,
    jwtPublicKeyPath: values.GATEWAY_JWT_PUBLIC_KEY,
    jwtJwksPath: values.GATEWAY_JWT_JWKS,
    jwtAudience: values.GATEWAY_JWT_AUDIENCE,
    jwtIssuer: values.GATEWAY_JWT_ISSUER,
    jwtClockSkewSeconds: values.GATEWAY_JWT_CLOCK_SKEW_S,
    authReject: values.GATEWAY_AUTH_REJECT,
    allowedOrigins: values.GATEWAY_ALLOWED_ORIGINS,
    deadLetterSubject: values.GATEWAY_DEAD_LETTER_SUBJECT,
  });
  refuseSplitStream(config);
  return config;
}

/** Whether any way of authenticating clients is configured. */
export function authConfigured(config: Config): boolean {
  return config.authTokens.length > 0 || config.jwtSecret !== "" ||
    config.jwtPublicKeyPath !== "" || config.jwtJwksPath !== "";
}

/**
 * The effective settings, one entry per variable of lib/config/settings.ts as one would set it:
 * what `--check-config` prints and the startup `configuration` line logs. A secret that is set
 * shows as [REDACTED]; NATS_URL with its credentials redacted.
 */
export function describeConfig(config: Config): Record<string, unknown> {
  const described: Record<string, unknown> = {};
  for (const name of ENV_VARIABLES) {
    const entry = SETTINGS[name] as Setting<unknown>;
    const value = config.settings[name as SettingName];
    const shown = entry.show ? entry.show(value) : value;
    described[name] = entry.secret && shown !== "" ? REDACTED : shown;
  }
  return described;
}
