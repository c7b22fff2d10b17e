/**
 * Entry point: read config from the environment (and an optional env file), start the
 * gateway, stop it gracefully on SIGINT/SIGTERM. Exit codes: 0 after a graceful stop,
 * 1 when the gateway cannot start or cannot go on, 2 for bad configuration.
 */
import { ConfigError, ENV_VARIABLES, parseConfig, parseEnvFile } from "./lib/config.ts";
import { startCluster } from "./lib/cluster.ts";
import { type RunningGateway, startGateway } from "./lib/gateway.ts";
import { createLogger } from "./lib/log.ts";

type Env = Record<string, string | undefined>;

/** The process environment, with values from the env file filling what it leaves unset. */
export function readEnvironment(): Env {
  const env: Env = {};
  for (const name of ENV_VARIABLES) env[name] = Deno.env.get(name);
  const explicitPath = env.GATEWAY_ENV_FILE?.trim();
  const path = explicitPath || ".env";
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (err) {
    if (!explicitPath && err instanceof Deno.errors.NotFound) return env;
    throw new ConfigError(
      `Cannot read GATEWAY_ENV_FILE: current value is "${path}" (${
        err instanceof Error ? err.message : String(err)
      })`,
      { cause: err },
    );
  }
  for (const [name, value] of Object.entries(parseEnvFile(text, path))) {
    if (env[name] === undefined && (ENV_VARIABLES as readonly string[]).includes(name)) {
      env[name] = value;
    }
  }
  return env;
}

/** `gateway --health-check`: exit 0 when the local gateway's /health says healthy (Docker). */
async function healthCheck(port: number): Promise<number> {
  try {
    const response = await fetch(`http://127.0.0.1:${port}/health`, {
      signal: AbortSignal.timeout(3_000),
    });
    const body = await response.json();
    console.log(JSON.stringify(body));
    return response.ok && body.status === "healthy" ? 0 : 1;
  } catch (err) {
    console.error(`health check failed: ${err instanceof Error ? err.message : String(err)}`);
    return 1;
  }
}

export async function main(args: readonly string[] = Deno.args): Promise<number> {
  let config;
  try {
    config = parseConfig(readEnvironment());
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    createLogger("info").error("invalid configuration", { error: err.message });
    return 2;
  }
  if (args.includes("--health-check")) return await healthCheck(config.port);
  const logger = createLogger(config.logLevel);
  let gateway: RunningGateway;
  try {
    gateway = config.workers > 1
      ? await startCluster(config, logger)
      : await startGateway(config, { logger });
  } catch (err) {
    logger.error("gateway failed to start", { error: err });
    return 1;
  }

  const stopSignal = new Promise<Deno.Signal>((resolve) => {
    for (const signal of ["SIGINT", "SIGTERM"] as const) {
      Deno.addSignalListener(signal, () => resolve(signal));
    }
  });
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
