/**
 * The gateway's command line: a few flags, parsed before any configuration is read, so
 * `--help` and `--version` work with a broken environment and no permissions at all.
 */
import { ENV_VARIABLES, type Setting, SETTINGS } from "./settings.ts";
import { VERSION } from "../version.ts";

/** What one invocation does. */
export type CliMode =
  /** `fdLimit`: `--fd-limit N` (what `deno task start` passes), else 0. */
  | { readonly kind: "run"; readonly fdLimit: number }
  | { readonly kind: "help" }
  | { readonly kind: "version" }
  /** Validate the configuration, print the effective settings as JSON, exit 0 or 2. */
  | { readonly kind: "check-config" }
  /** Exit 0 when the local /health says healthy (readiness: NATS included). */
  | { readonly kind: "health-check" }
  /** Exit 0 when the local /livez answers (liveness: the process serves HTTP). */
  | { readonly kind: "live-check" }
  | { readonly kind: "invalid"; readonly message: string };

const ACTIONS = {
  "--check-config": "check-config",
  "--health-check": "health-check",
  "--live-check": "live-check",
} as const;

const FD_LIMIT = /^--fd-limit=(\d+)$/;

/** Reads the arguments; --help wins over everything, then --version. */
export function parseArgs(args: readonly string[]): CliMode {
  if (args.includes("--help") || args.includes("-h")) return { kind: "help" };
  if (args.includes("--version")) return { kind: "version" };
  const unknown = args.find((arg) => !Object.hasOwn(ACTIONS, arg) && !FD_LIMIT.test(arg));
  if (unknown !== undefined) {
    return { kind: "invalid", message: `unknown argument "${unknown}" (see gateway --help)` };
  }
  const actions = [...new Set(args.filter((arg) => Object.hasOwn(ACTIONS, arg)))] as (
    keyof typeof ACTIONS
  )[];
  if (actions.length > 1) {
    return { kind: "invalid", message: `use one of ${actions.join(", ")}, not both` };
  }
  if (actions.length === 1) return { kind: ACTIONS[actions[0]] };
  const fdLimit = args.map((arg) => FD_LIMIT.exec(arg)?.[1]).findLast((n) => n !== undefined);
  return { kind: "run", fdLimit: fdLimit === undefined ? 0 : Number(fdLimit) };
}

/** `gateway --version`. */
export function versionText(): string {
  return `gateway ${VERSION} (deno ${Deno.version.deno})\n`;
}

/** One line per variable, made from lib/config/settings.ts: its default and meaning. */
export const VARIABLE_HELP: Readonly<Record<string, readonly [string, string]>> = Object.freeze(
  Object.fromEntries(
    ENV_VARIABLES.map((name) => [name, [SETTINGS[name].default, helpOf(SETTINGS[name])] as const]),
  ),
);

function helpOf(setting: Setting<unknown>): string {
  return setting.secret ? `${setting.help} (a secret)` : setting.help;
}

/** `gateway --help`: usage, flags, exit codes, and every variable with its default. */
export function helpText(variables: readonly string[] = ENV_VARIABLES): string {
  const width = Math.max(...variables.map((name) => name.length));
  const rows = (level: "basic" | "tuning") =>
    variables.filter((name) => SETTINGS[name as keyof typeof SETTINGS]?.level === level).map(
      (name) => {
        const [fallback, meaning] = VARIABLE_HELP[name];
        const shown = fallback === "" ? "" : ` (default ${fallback})`;
        return `  ${name.padEnd(width)}  ${meaning}${shown}`;
      },
    );
  return [
    `gateway ${VERSION}: relays NATS JetStream messages to browser WebSocket clients.`,
    "",
    "Usage: gateway [--help | --version | --check-config | --health-check | --live-check]",
    "       deno task start [same flags]",
    "",
    "With no flag it starts the gateway, configured by environment variables (and an env file).",
    "",
    "Flags:",
    "  --help, -h      print this help and exit 0",
    "  --version       print the version and exit 0",
    "  --check-config  check the configuration as a start would (files and permissions too),",
    "                  print the effective settings as one JSON object (secrets [REDACTED]);",
    "                  exit 0, or 2 when it is bad; contacts no NATS, opens no port",
    "  --health-check  exit 0 when the local /health says healthy (NATS included), else 1",
    "  --live-check    exit 0 when the local /livez answers (the process serves), else 1;",
    "                  what Docker's HEALTHCHECK runs, so a NATS outage restarts nothing",
    "  --fd-limit=N    the open-file limit, which caps connections (deno task start passes it)",
    "",
    "Exit codes:",
    "  0  stopped gracefully (SIGINT, SIGTERM, SIGHUP), or a flag above succeeded",
    "  1  cannot start or cannot go on (NATS unreachable too long, port taken, ...)",
    "  2  bad configuration or arguments: restarting will not help",
    "",
    "Environment variables (docs/configuration.md says more):",
    ...rows("basic"),
    "",
    "Tuning:",
    ...rows("tuning"),
    "",
  ].join("\n");
}
