/**
 * Entry point: read the flags (lib/config/cli.ts), then config from the environment (and an optional
 * env file), start the gateway, stop it gracefully on SIGINT, SIGTERM or SIGHUP. Exit codes: 0
 * after a graceful stop, 1 when the gateway cannot start or cannot go on, 2 for bad configuration.
 */
import { type CliMode, helpText, parseArgs, versionText } from "./lib/config/cli.ts";
import { checkConfigFiles } from "./lib/config/config_files.ts";
import { type Config, describeConfig, parseConfig } from "./lib/config/config.ts";
import { ConfigError } from "./lib/config/config_error.ts";
import {
  describeUnknown,
  isFatal,
  type LoadedEnvironment,
  loadEnvironment,
  refuseUnknown,
} from "./lib/config/env_file.ts";
import { checkPermissions, PermissionScopeError } from "./lib/config/permissions.ts";
import { startCluster } from "./lib/cluster/supervisor.ts";
import { type RunningGateway, startGateway } from "./lib/gateway.ts";
import { createLogger, type Logger } from "./lib/observe/log.ts";

/**
 * SIGHUP stops the gateway like SIGTERM: the config is frozen at startup, so a "reload" is a
 * restart by the supervisor; and a closed terminal should close clients with 1001, not EOF.
 */
const STOP_SIGNALS = ["SIGINT", "SIGTERM", "SIGHUP"] as const;

/**
 * Reads and checks the configuration, logging every problem; undefined when the gateway must
 * not start (exit 2). Removed names and unknown GATEWAY_* names are errors, other unknown names
 * (NATS_*, near misses of PORT) warnings. Reads no file but the env file.
 */
export function loadConfig(load: () => LoadedEnvironment = loadEnvironment): Config | undefined {
  let loaded: LoadedEnvironment;
  let config: Config;
  try {
    loaded = load();
  } catch (err) {
    return reportInvalid(createLogger("info"), err);
  }
  const refusal = refuseUnknown(loaded.unknown, loaded.removed);
  try {
    config = parseConfig(loaded.env);
  } catch (err) {
    // Unknown names first: a misspelt variable often explains the error that follows.
    reportUnknown(createLogger("info"), loaded);
    if (refusal) reportInvalid(createLogger("info"), new ConfigError(refusal));
    return reportInvalid(createLogger("info"), err);
  }
  const logger = createLogger(config.logLevel);
  reportUnknown(logger, loaded);
  return refusal ? reportInvalid(logger, new ConfigError(refusal)) : config;
}

/**
 * What a start checks before it connects, beyond parsing: the permissions cover what the
 * configuration names, and the files it names can be used. Undefined when all is well.
 */
export async function checkBeforeStart(config: Config): Promise<Error | undefined> {
  try {
    await checkPermissions(config);
    checkConfigFiles(config);
    return undefined;
  } catch (err) {
    if (err instanceof ConfigError || err instanceof PermissionScopeError) return err;
    throw err;
  }
}

function reportUnknown(logger: Logger, loaded: LoadedEnvironment): void {
  if (!loaded.environmentListed) {
    logger.debug("environment names not checked", {
      reason:
        "listing them needs full env permission (`deno task start` lists them before it starts this process); only the env file was checked",
    });
  }
  for (const variable of loaded.unknown) {
    logger[isFatal(variable) ? "error" : "warn"]("unknown variable", {
      name: variable.name,
      source: variable.source,
      closest: variable.closest,
      hint: describeUnknown(variable),
    });
  }
}

function reportInvalid(logger: Logger, err: unknown): undefined {
  if (!(err instanceof ConfigError || err instanceof PermissionScopeError)) throw err;
  logger.error("invalid configuration", { error: err.message });
  return undefined;
}

const PROBES = {
  "health-check": { path: "/health", status: "healthy", failure: "health check failed" },
  "live-check": { path: "/livez", status: "alive", failure: "live check failed" },
} as const;

/**
 * `--health-check` (readiness: /health, NATS included) or `--live-check` (liveness: /livez, what
 * Docker's HEALTHCHECK runs): exit 0 when the local gateway answers as hoped, else 1.
 */
async function probe(kind: keyof typeof PROBES, config: Config, logger: Logger): Promise<number> {
  const { path, status, failure } = PROBES[kind];
  // With GATEWAY_ADMIN_PORT, /health is served there (and /livez on both).
  const admin = kind === "health-check" && config.adminPort > 0;
  const [listenHost, port] = admin
    ? [config.adminHost, config.adminPort]
    : [config.host, config.port];
  // A gateway listening on every address is asked on loopback, which the permissions grant.
  const host = ["0.0.0.0", "::", "[::]"].includes(listenHost) ? "127.0.0.1" : listenHost;
  const authority = host.includes(":") && !host.startsWith("[") ? `[${host}]` : host;
  try {
    const response = await fetch(`http://${authority}:${port}${path}`, {
      signal: AbortSignal.timeout(3_000),
    });
    const body = await response.json();
    console.log(JSON.stringify(body));
    return response.ok && body.status === status ? 0 : 1;
  } catch (err) {
    logger.error(failure, { error: err });
    return 1;
  }
}

/** The modes that end before any configuration is read: they need no permission at all. */
function answerWithoutConfig(mode: CliMode): number | undefined {
  switch (mode.kind) {
    case "help":
      console.log(helpText().trimEnd());
      return 0;
    case "version":
      console.log(versionText().trimEnd());
      return 0;
    case "invalid":
      createLogger("info").error("invalid arguments", { error: mode.message });
      return 2;
    default:
      return undefined;
  }
}

export async function main(args: readonly string[] = Deno.args): Promise<number> {
  const mode = parseArgs(args);
  const answered = answerWithoutConfig(mode);
  if (answered !== undefined) return answered;
  const loaded = loadConfig();
  if (loaded === undefined) return 2;
  if (mode.kind === "health-check" || mode.kind === "live-check") {
    return await probe(mode.kind, loaded, createLogger(loaded.logLevel));
  }
  const logger = createLogger(loaded.logLevel);
  const refused = await checkBeforeStart(loaded);
  if (refused) return reportInvalid(logger, refused) ?? 2;
  if (mode.kind === "check-config") {
    console.log(JSON.stringify(describeConfig(loaded)));
    return 0;
  }
  const fdLimit = mode.kind === "run" ? mode.fdLimit : 0;
  const config: Config = Object.freeze({ ...loaded, fdLimit });
  logger.info("configuration", describeConfig(config));
  // Listening from the start: a signal during startup stops the gateway as soon as it is up,
  // instead of killing the process (the default action) with clients half-attached.
  const stopSignal = new Promise<Deno.Signal>((resolve) => {
    for (const signal of STOP_SIGNALS) {
      Deno.addSignalListener(signal, () => resolve(signal));
    }
  });
  let gateway: RunningGateway;
  try {
    gateway = config.workers > 1
      ? await startCluster(config, logger)
      : await startGateway(config, { logger });
  } catch (err) {
    logger.error("gateway failed to start", { error: err });
    return 1;
  }
  const outcome = await Promise.race([
    stopSignal.then((signal) => ({ signal, error: undefined })),
    gateway.failed.then((error) => ({ signal: undefined, error })),
  ]);
  if (outcome.signal) logger.info("signal received", { signal: outcome.signal });
  else logger.error("gateway cannot go on", { error: outcome.error });
  await gateway.shutdown();
  return outcome.error ? 1 : 0;
}

if (import.meta.main) {
  Deno.exit(await main());
}
