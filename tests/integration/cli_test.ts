/** `--help` and `--version` through the real start path: they answer without starting anything. */
import assert from "node:assert/strict";
import { ENV_VARIABLES } from "../../lib/config/settings.ts";
import { VERSION } from "../../lib/version.ts";
import { GatewayProcess, startTaskArgs } from "../../tools/gateway_process.ts";

/** An environment the gateway would refuse (exit 2), and a NATS no one listens on. */
const BROKEN = {
  GATEWAY_PORT: "eighty",
  NATS_URL: "nats://127.0.0.1:1",
  GATEWAY_ENV_FILE: "/nonexistent/gateway.env",
};

async function startTask(env: Record<string, string>, ...flags: string[]) {
  return await GatewayProcess.spawn(env, [...await startTaskArgs(), ...flags]);
}

Deno.test("deno task start --help: usage and every variable, exit 0, even with a broken config", async () => {
  await using gateway = await startTask(BROKEN, "--help");
  assert.equal((await gateway.status).code, 0, gateway.output);
  const help = gateway.lines.join("\n");
  assert.match(help, /^Usage: gateway /m);
  for (const name of ENV_VARIABLES) assert.match(help, new RegExp(`^  ${name} `, "m"), name);
  assert.equal(gateway.stderr.join(""), "", "nothing logged: no config was read");
  assert.doesNotMatch(gateway.output, /listening|invalid configuration/);
});

Deno.test("deno task start --version: the version, exit 0, even with a broken config", async () => {
  await using gateway = await startTask(BROKEN, "--version");
  assert.equal((await gateway.status).code, 0, gateway.output);
  assert.deepEqual(gateway.lines, [`gateway ${VERSION} (deno ${Deno.version.deno})`]);
});

Deno.test("main.ts --help and --version need no permission at all", async () => {
  const main = new URL("../../main.ts", import.meta.url).pathname;
  for (const flag of ["--help", "--version", "-h"]) {
    // --no-prompt and no --allow-*: any env, read or net access would throw NotCapable.
    await using gateway = await GatewayProcess.spawn(BROKEN, ["run", "--no-prompt", main, flag]);
    assert.equal((await gateway.status).code, 0, gateway.output);
    assert.match(gateway.lines[0] ?? "", new RegExp(`^gateway ${VERSION.replaceAll(".", "\\.")}`));
  }
});

Deno.test("deno task start with an unknown argument exits 2 naming it, starting nothing", async () => {
  await using gateway = await startTask({ NATS_URL: "nats://127.0.0.1:1" }, "--hlep");
  assert.equal((await gateway.status).code, 2, gateway.output);
  assert.match(gateway.output, /unknown argument \\"--hlep\\"/);
  assert.doesNotMatch(gateway.output, /listening|nats/i);
});
