/**
 * `deno task start`: reads the configuration as main.ts does, derives the gateway's permissions
 * from it (lib/config/permissions.ts launchScope) and runs main.ts with exactly those, passing stdio,
 * SIGINT/SIGTERM/SIGHUP and the exit code through. The launcher itself may only read the
 * environment and files (the env file can be anywhere) and run `deno`; it never touches the
 * network. Arguments after the task name go to main.ts (e.g. `--check-config`, `--health-check`).
 */
import { parseArgs } from "../lib/config/cli.ts";
import { type Config } from "../lib/config/config.ts";
import { ConfigError } from "../lib/config/config_error.ts";
import { type LoadedEnvironment, loadEnvironment } from "../lib/config/env_file.ts";
import { createLogger } from "../lib/observe/log.ts";
import { launchScope, permissionFlags, type PermissionScope } from "../lib/config/permissions.ts";
import { loadConfig } from "../main.ts";

const FORWARDED_SIGNALS = ["SIGINT", "SIGTERM", "SIGHUP"] as const;

/**
 * The configuration as main.ts reads it, logged as main.ts logs it. Only this launcher may list
 * the environment's names (main.ts's --allow-env names variables), so it reports unknown ones
 * found there and leaves those in the env file to main.ts, which reports them again otherwise.
 */
export function readConfig(
  load: () => LoadedEnvironment = loadEnvironment,
): Config | undefined {
  return loadConfig(() => {
    const loaded = load();
    return { ...loaded, unknown: loaded.unknown.filter((v) => v.source === "environment") };
  });
}

/** What main.ts may do under this configuration; throws ConfigError for an unusable path. */
export function deriveScope(config: Config, args: readonly string[]): PermissionScope {
  return launchScope(config, {
    envFile: Deno.env.get("GATEWAY_ENV_FILE")?.trim() || ".env",
    libDir: decodeURIComponent(new URL("../lib", import.meta.url).pathname),
    healthCheck: args.includes("--health-check") || args.includes("--live-check"),
  });
}

/**
 * The `deno` arguments that run main.ts with `scope`, then `args`; with no scope, main.ts gets
 * no permission at all (--help, --version: they read neither config nor files).
 */
export function gatewayArgs(scope: PermissionScope | undefined, args: readonly string[]): string[] {
  const path = (relative: string) =>
    decodeURIComponent(new URL(relative, import.meta.url).pathname);
  return [
    "run",
    // No prompts, no "Download"/"Check"/warning lines: only the gateway's JSON lines.
    "--quiet",
    "--no-prompt",
    "--config",
    path("../deno.json"),
    ...(scope ? permissionFlags(scope) : []),
    path("../main.ts"),
    ...args,
  ];
}

export async function launch(args: readonly string[]): Promise<number> {
  // Help, version and bad arguments are answered before any configuration is read, so a broken
  // environment cannot hide them; main.ts answers them without permissions.
  if (["help", "version", "invalid"].includes(parseArgs(args).kind)) {
    return await runMain(gatewayArgs(undefined, args));
  }
  const config = readConfig();
  if (config === undefined) return 2;
  let scope: PermissionScope;
  try {
    scope = deriveScope(config, args);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    createLogger("info").error("invalid configuration", { error: err.message });
    return 2;
  }
  // Deno refuses /proc/self/limits without --allow-all, so the gateway learns its fd limit here.
  const fdLimit = await softFdLimit();
  return await runMain(
    gatewayArgs(scope, [...args, ...(fdLimit ? [`--fd-limit=${fdLimit}`] : [])]),
  );
}

/** Runs `deno denoArgs`, passing stdio and signals through; its exit code. */
async function runMain(denoArgs: string[]): Promise<number> {
  // `deno` from PATH: the launcher's --allow-run names it, while Deno.execPath() may be the
  // target of a symlink that the grant does not cover.
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command("deno", {
      args: denoArgs,
      stdin: "inherit",
      stdout: "inherit",
      stderr: "inherit",
    }).spawn();
  } catch (err) {
    createLogger("info").error("cannot run deno", { error: err });
    return 1;
  }
  const forward = (signal: Deno.Signal) => () => {
    try {
      child.kill(signal);
    } catch {
      // Already exited; its status is on the way.
    }
  };
  const listeners = FORWARDED_SIGNALS.map((signal) => [signal, forward(signal)] as const);
  for (const [signal, listener] of listeners) Deno.addSignalListener(signal, listener);
  const status = await child.status;
  for (const [signal, listener] of listeners) Deno.removeSignalListener(signal, listener);
  return status.code;
}

/** `ulimit -Sn` as a number string, or "" when unlimited or unknown (the cap then stays as set). */
async function softFdLimit(): Promise<string> {
  try {
    const { stdout, success } = await new Deno.Command("sh", {
      args: ["-c", "ulimit -Sn"],
      stdin: "null",
      stdout: "piped",
      stderr: "null",
    }).output();
    const text = new TextDecoder().decode(stdout).trim();
    return success && /^\d+$/.test(text) ? text : "";
  } catch {
    return "";
  }
}

if (import.meta.main) {
  Deno.exit(await launch(Deno.args));
}
