/**
 * `deno task compile`: builds dist/gateway with `deno compile`, with the binary permission scope of
 * lib/config/permissions.ts (buildScope), widened by GATEWAY_NATS_HOSTS / GATEWAY_LISTEN_HOSTS /
 * GATEWAY_READ_PATHS when given. Deno downloads its runtime base binary (denort) on first use;
 * where that cannot be downloaded, point DENORT_BIN at a local copy. GATEWAY_COMPILE_TARGET
 * cross-compiles.
 */
import { buildScope, permissionFlags } from "../lib/config/permissions.ts";
import { parseHostList, parsePathList, readUnstableFlags } from "./permissions.ts";

export async function compileArgs(env: Record<string, string | undefined>): Promise<string[]> {
  const flags = permissionFlags(buildScope({
    natsHosts: parseHostList("GATEWAY_NATS_HOSTS", env.GATEWAY_NATS_HOSTS),
    listenHosts: parseHostList("GATEWAY_LISTEN_HOSTS", env.GATEWAY_LISTEN_HOSTS),
    readPaths: parsePathList("GATEWAY_READ_PATHS", env.GATEWAY_READ_PATHS),
  }));
  const output = env.GATEWAY_COMPILE_OUTPUT || "dist/gateway";
  const target = env.GATEWAY_COMPILE_TARGET ? ["--target", env.GATEWAY_COMPILE_TARGET] : [];
  return [
    "compile",
    "--no-prompt",
    // Only the npm packages the gateway imports; test tools in deno.json would add 13 MB.
    "--exclude-unused-npm",
    ...flags,
    ...(await readUnstableFlags()),
    // Loaded with `new Worker` when GATEWAY_WORKERS > 1, so not found by static analysis.
    "--include",
    "lib/cluster/worker.ts",
    ...target,
    "--output",
    output,
    "main.ts",
  ];
}

if (import.meta.main) {
  const env = Deno.env.toObject();
  const args = await compileArgs(env);
  const root = new URL("..", import.meta.url).pathname;
  console.error(`deno ${args.join(" ")}`);
  const denort = env.DENORT_BIN;
  if (denort) console.error(`using DENORT_BIN=${denort}`);
  const { code } = await new Deno.Command(Deno.execPath(), { args, cwd: root }).spawn().status;
  Deno.exit(code);
}
