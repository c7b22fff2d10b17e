/**
 * The gateway's command line: a few flags, parsed before any configuration is read, so
 * `--help` and `--version` work with a broken environment and no permissions at all.
 */
import { ENV_VARIABLES } from "./config.ts";
import { VERSION } from "./version.ts";

/** What one invocation does. */
export type CliMode =
  | { readonly kind: "run" }
  | { readonly kind: "help" }
  | { readonly kind: "version" }
  /** Exit 0 when the local /health says healthy (readiness: NATS included). */
  | { readonly kind: "health-check" }
  /** Exit 0 when the local /livez answers (liveness: the process serves HTTP). */
  | { readonly kind: "live-check" }
  | { readonly kind: "invalid"; readonly message: string };

const CHECKS = { "--health-check": "health-check", "--live-check": "live-check" } as const;

/** Reads the arguments; --help wins over everything, then --version. */
export function parseArgs(args: readonly string[]): CliMode {
  if (args.includes("--help") || args.includes("-h")) return { kind: "help" };
  if (args.includes("--version")) return { kind: "version" };
  const unknown = args.find((arg) => !Object.hasOwn(CHECKS, arg));
  if (unknown !== undefined) {
    return { kind: "invalid", message: `unknown argument "${unknown}" (see gateway --help)` };
  }
  const checks = [...new Set(args)] as (keyof typeof CHECKS)[];
  if (checks.length > 1) {
    return { kind: "invalid", message: `use one of ${checks.join(", ")}, not both` };
  }
  return checks.length === 1 ? { kind: CHECKS[checks[0]] } : { kind: "run" };
}

/** `gateway --version`. */
export function versionText(): string {
  return `gateway ${VERSION} (deno ${Deno.version.deno})\n`;
}

/**
 * One line per variable: its default and meaning. lib/config.ts is the reference (its doc
 * comments and parseConfig); tests/unit/cli_test.ts checks this names every ENV_VARIABLES entry.
 */
export const VARIABLE_HELP: Readonly<Record<string, readonly [string, string]>> = {
  NATS_URL: ["nats://localhost:4222", "NATS server(s), comma-separated; nats:// or tls://"],
  NATS_USER: ["", "NATS user (overrides one written in NATS_URL)"],
  NATS_PASSWORD: ["", "password of NATS_USER (a secret)"],
  NATS_TOKEN: ["", "NATS token (a secret)"],
  NATS_NKEY: ["", "path to a user nkey seed file"],
  NATS_CREDS: ["", "path to a .creds file (user JWT + seed)"],
  NATS_CA: ["", "path to a PEM CA bundle the NATS server's certificate must chain to"],
  NATS_CERT: ["", "path to a PEM client certificate for TLS client auth (with NATS_KEY)"],
  NATS_KEY: ["", "path to the PEM private key of NATS_CERT"],
  GATEWAY_CREATE_STREAMS: ["true", "create missing streams; false: create and change nothing"],
  GATEWAY_STREAM_REPLICAS: ["0", "replicas of created streams; 0 = min(3, cluster size)"],
  GATEWAY_STRICT_CONFIG: ["false", "true: an unknown GATEWAY_*/NATS_* variable exits 2"],
  GATEWAY_FD_LIMIT: ["0", "the process's fd limit (ulimit -n), capping connections; 0 = read it"],
  GATEWAY_HOST: ["0.0.0.0", "listen address"],
  GATEWAY_PORT: ["8000", "listen port; 0 picks a free one"],
  PORT: ["8000", "listen port when GATEWAY_PORT is unset"],
  GATEWAY_ADMIN_HOST: ["0.0.0.0", "listen address of GATEWAY_ADMIN_PORT; unset = GATEWAY_HOST"],
  GATEWAY_ADMIN_PORT: ["-1", "own port for /health, /readyz, /metrics; -1 = none, 0 = free"],
  GATEWAY_ROUTES: [
    "/ws/stream=levels.signals@LEVEL_SIGNALS",
    "routes PATH=SUBJECT[@STREAM], comma-separated; {name} = one segment/token",
  ],
  GATEWAY_ROUTE_MAX_VALUES: ["1000", "values a templated route holds; past it, LRU idle dropped"],
  GATEWAY_VIEWER: ["true", "serve the live viewer page at /; false: / is 404"],
  GATEWAY_SUBJECT: ["levels.signals", "subject of /ws/stream when GATEWAY_ROUTES is unset"],
  GATEWAY_STREAM: ["LEVEL_SIGNALS", "stream of /ws/stream when GATEWAY_ROUTES is unset"],
  GATEWAY_DURABLE: ["", "durable consumer name; empty: an ordered consumer per gateway"],
  GATEWAY_MAX_PAYLOAD_BYTES: ["1048576", "larger NATS payloads are skipped and counted"],
  GATEWAY_CLIENT_BUFFER_BYTES: ["262144", "bytes a client may have queued before conflation"],
  GATEWAY_SLOW_CLIENT_TIMEOUT_MS: ["10000", "a client over its buffer this long is closed (4008)"],
  GATEWAY_CLIENT_MAX_QUEUE_MS: ["100", "a snapshot queued longer conflates the client; 0 = off"],
  GATEWAY_MAX_CONNECTIONS: ["10000", "past it, upgrades get HTTP 503; 0 = no limit"],
  GATEWAY_IDLE_TIMEOUT_S: ["30", "ping interval; no pong in time closes the client; 0 = off"],
  GATEWAY_CLIENT_MAX_FRAME_BYTES: ["4096", "a larger client frame closes with 1009"],
  GATEWAY_CLIENT_MAX_FRAMES_PER_S: ["20", "more client frames per second close with 1008"],
  GATEWAY_NATS_CONNECT_TIMEOUT_MS: ["10000", "how long startup retries NATS before exiting 1"],
  GATEWAY_NATS_MAX_OUTAGE_MS: ["120000", "a longer NATS outage exits 1; 0 = wait forever"],
  GATEWAY_SHUTDOWN_TIMEOUT_MS: ["5000", "bound on a graceful shutdown"],
  GATEWAY_LOG_LEVEL: ["info", "debug, info, warn or error"],
  LOG_LEVEL: ["info", "log level when GATEWAY_LOG_LEVEL is unset"],
  GATEWAY_WORKERS: ["1", "isolates serving the port together; auto = one per CPU"],
  GATEWAY_AUTH_TOKENS: ["", "comma-separated tokens (16+ characters); set: /ws/stream needs one"],
  GATEWAY_JWT_SECRET: ["", "HMAC secret (32+ bytes) for HS256/384/512 tokens (a secret)"],
  GATEWAY_JWT_PUBLIC_KEY: ["", "path to a PEM public key (RSA, EC, Ed25519) for JWTs"],
  GATEWAY_JWT_JWKS: ["", "path to a JWKS file; the key is chosen by kid"],
  GATEWAY_JWT_AUDIENCE: ["", "the aud a token must name; empty: not checked"],
  GATEWAY_JWT_ISSUER: ["", "the iss a token must carry; empty: not checked"],
  GATEWAY_JWT_CLOCK_SKEW_S: ["30", "seconds of clock difference allowed on exp and nbf"],
  GATEWAY_AUTH_REJECT: ["close", "close: accept, then close with 1008; http: 401/403 instead"],
  GATEWAY_ALLOWED_ORIGINS: ["*", "browser origins that may connect, comma-separated; * = any"],
  GATEWAY_DEAD_LETTER_SUBJECT: ["", "invalid NATS payloads are also published here"],
  GATEWAY_ENV_FILE: [".env", "env file read at startup; fills only unset variables"],
};

/** `gateway --help`: usage, flags, exit codes, and every variable with its default. */
export function helpText(variables: readonly string[] = ENV_VARIABLES): string {
  const width = Math.max(...variables.map((name) => name.length));
  const rows = variables.map((name) => {
    const [fallback, meaning] = VARIABLE_HELP[name] ?? ["", 'see README "Configuration"'];
    const shown = fallback === "" ? "(empty)" : fallback;
    return `  ${name.padEnd(width)}  ${meaning} (default ${shown})`;
  });
  return [
    `gateway ${VERSION}: relays NATS JetStream messages to browser WebSocket clients.`,
    "",
    "Usage: gateway [--help | --version | --health-check | --live-check]",
    "       deno task start [same flags]",
    "",
    "With no flag it starts the gateway, configured by environment variables (and an env file).",
    "",
    "Flags:",
    "  --help, -h      print this help and exit 0",
    "  --version       print the version and exit 0",
    "  --health-check  exit 0 when the local /health says healthy (NATS included), else 1",
    "  --live-check    exit 0 when the local /livez answers (the process serves), else 1;",
    "                  what Docker's HEALTHCHECK runs, so a NATS outage restarts nothing",
    "",
    "Exit codes:",
    "  0  stopped gracefully (SIGINT, SIGTERM, SIGHUP), or a flag above succeeded",
    "  1  cannot start or cannot go on (NATS unreachable too long, port taken, ...)",
    "  2  bad configuration or arguments: restarting will not help",
    "",
    "Environment variables:",
    ...rows,
    "",
  ].join("\n");
}
