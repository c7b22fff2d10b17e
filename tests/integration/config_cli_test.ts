/**
 * main.ts's configuration checks and stop signals through the real process: exit codes, the
 * lines an operator reads, and that no secret is ever among them.
 */
import assert from "node:assert/strict";
import { NatsServer } from "../helpers/nats_server.ts";
import { Client, eventually, Publisher, signal } from "../helpers/fixtures.ts";
import { GatewayProcess } from "../helpers/process.ts";
import { ENV_VARIABLES } from "../../lib/config.ts";

const TOKEN = "s3cret-token-0123456789abcdef";
/** Full permissions: the environment's names can be listed (the start task's cannot). */
const ALL_PERMISSIONS = ["run", "--allow-all", "main.ts"];

/** A NATS URL nothing listens on, so a gateway that passed its config checks exits 1 fast. */
function unreachableNats(): Record<string, string> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  return { NATS_URL: `nats://127.0.0.1:${port}`, GATEWAY_NATS_CONNECT_TIMEOUT_MS: "100" };
}

/** Runs main.ts until it exits and its last line (matching `lastLine`) has been read. */
async function runToExit(
  env: Record<string, string>,
  args: string[] | undefined,
  lastLine: RegExp,
): Promise<{ code: number; output: string }> {
  await using gateway = await GatewayProcess.spawn(env, args);
  const status = await gateway.status;
  await eventually(() => lastLine.test(gateway.output), `a line matching ${lastLine}`);
  return { code: status.code, output: gateway.output };
}

/** Writes an env file in a fresh temp dir; returns its path and the dir. */
async function writeEnvFile(text: string): Promise<{ dir: string; path: string }> {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/gateway.env`;
  await Deno.writeTextFile(path, text);
  return { dir, path };
}

const INVALID = /"msg":"invalid configuration"/;

Deno.test("main: GATEWAY_WORKERS=2 with GATEWAY_DURABLE exits 2 saying what to do", async () => {
  const { code, output } = await runToExit(
    { GATEWAY_WORKERS: "2", GATEWAY_DURABLE: "gateway_levels", ...unreachableNats() },
    undefined,
    INVALID,
  );
  assert.equal(code, 2, output);
  assert.match(
    output,
    /GATEWAY_WORKERS=2 cannot be used with GATEWAY_DURABLE=\\"gateway_levels\\".*1\/2 of the messages.*Unset GATEWAY_DURABLE.*or set GATEWAY_WORKERS=1/,
  );
});

Deno.test("main: SIGHUP closes every client with 1001 and exits 0, like SIGTERM", async () => {
  await using nats = await NatsServer.start();
  await using gateway = await GatewayProcess.spawn({ NATS_URL: nats.url });
  const addr = await gateway.listening;
  await using publisher = await Publisher.connect(nats.url);
  const clients = await Promise.all(Array.from({ length: 3 }, () => Client.open(addr)));
  await publisher.publish(signal(1));
  await Promise.all(clients.map((c) => c.waitFor(1)));

  gateway.kill("SIGHUP");
  const closes = await Promise.all(clients.map((c) => c.closed));
  for (const close of closes) assert.equal(close.code, 1001);
  const status = await gateway.status;
  assert.equal(status.code, 0, gateway.output);
  await eventually(() => /"msg":"gateway stopped"/.test(gateway.output), "the stopped line");
  assert.match(gateway.output, /"msg":"signal received","signal":"SIGHUP"/);
});

Deno.test("main: an env file line `NAME: token` exits 2 naming the line, never the token", async () => {
  const file = await writeEnvFile(`# gateway\nGATEWAY_AUTH_TOKENS: ${TOKEN}\n`);
  const { code, output } = await runToExit(
    { GATEWAY_ENV_FILE: file.path, ...unreachableNats() },
    undefined,
    INVALID,
  );
  assert.equal(code, 2, output);
  assert.match(
    output,
    /gateway\.env, line 2: expected NAME=value, found \\"GATEWAY_AUTH_TOKENS:\\"/,
  );
  assert.ok(!output.includes(TOKEN), output);
  await Deno.remove(file.dir, { recursive: true });
});

Deno.test("main: a quoted token with a trailing comment in the env file lets clients in", async () => {
  await using nats = await NatsServer.start();
  const file = await writeEnvFile(`GATEWAY_AUTH_TOKENS="${TOKEN}" # rotated monthly\n`);
  await using gateway = await GatewayProcess.spawn(
    { NATS_URL: nats.url, GATEWAY_ENV_FILE: file.path },
    undefined,
  );
  const addr = await gateway.listening;
  await using publisher = await Publisher.connect(nats.url);
  await publisher.publish(signal(1));
  const base = `ws://${addr.hostname}:${addr.port}/ws/stream`;
  await using client = new Client(new WebSocket(`${base}?token=${TOKEN}`));
  assert.deepEqual(await client.waitFor(1), [signal(1)]);
  const refused = new Client(new WebSocket(base));
  assert.equal((await refused.closed).code, 1008);
  assert.ok(!gateway.output.includes(TOKEN));
  await Deno.remove(file.dir, { recursive: true });
});

Deno.test("main: a misspelt GATEWAY_AUTH_TOKEN exits 2 instead of leaving auth off", async (t) => {
  const expected =
    /is set but no authentication is \(did you mean GATEWAY_AUTH_TOKENS\?\).*its value is not shown/;
  await t.step("in the environment (names listed under full permissions)", async () => {
    const { code, output } = await runToExit(
      { GATEWAY_AUTH_TOKEN: TOKEN, ...unreachableNats() },
      ALL_PERMISSIONS,
      INVALID,
    );
    assert.equal(code, 2, output);
    assert.match(output, expected);
    assert.match(output, /"level":"error","msg":"unknown variable","name":"GATEWAY_AUTH_TOKEN"/);
    assert.ok(!output.includes(TOKEN), output);
  });
  await t.step("in the env file, under the start task's scoped permissions", async () => {
    const file = await writeEnvFile(`gateway_auth_tokens=${TOKEN}\nGATEWAY_AUTH_TOKEN=${TOKEN}\n`);
    const { code, output } = await runToExit(
      { GATEWAY_ENV_FILE: file.path, ...unreachableNats() },
      undefined,
      INVALID,
    );
    assert.equal(code, 2, output);
    assert.match(
      output,
      /"source":"env file [^"]*gateway\.env line 1","closest":"GATEWAY_AUTH_TOKENS"/,
    );
    assert.match(output, /names are case-sensitive; write GATEWAY_AUTH_TOKENS/);
    assert.match(output, expected);
    assert.ok(!output.includes(TOKEN), output);
    await Deno.remove(file.dir, { recursive: true });
  });
});

Deno.test("main: an unknown GATEWAY_PROT is a warning with the closest name; strict makes it exit 2", async () => {
  const warned = await runToExit(
    { GATEWAY_PROT: "9000", ...unreachableNats() },
    ALL_PERMISSIONS,
    /Cannot connect to NATS/,
  );
  assert.equal(warned.code, 1, "it went on to connect to NATS");
  assert.match(
    warned.output,
    /"level":"warn","msg":"unknown variable","name":"GATEWAY_PROT","source":"environment","closest":"GATEWAY_PORT","hint":"GATEWAY_PROT is not a variable the gateway reads; did you mean GATEWAY_PORT\?"/,
  );
  assert.doesNotMatch(warned.output, /9000/, "values are never shown");

  const strict = await runToExit(
    { GATEWAY_PROT: "9000", GATEWAY_STRICT_CONFIG: "true", ...unreachableNats() },
    ALL_PERMISSIONS,
    INVALID,
  );
  assert.equal(strict.code, 2, strict.output);
  assert.match(strict.output, /GATEWAY_STRICT_CONFIG=true and 1 variable\(s\) set are not read/);
});

Deno.test("main: the start task reports the environment's unknown names once", async () => {
  const { code, output } = await runToExit(
    { GATEWAY_PROT: "9000", ...unreachableNats() },
    undefined,
    /Cannot connect to NATS/,
  );
  assert.equal(code, 1, output);
  assert.equal(output.match(/"msg":"unknown variable","name":"GATEWAY_PROT"/g)?.length, 1, output);
});

Deno.test("main: with scoped --allow-env the environment's names are skipped with a debug line", async () => {
  // As a compiled binary runs: it may read only the variables it knows, so it cannot list others.
  const args = ["run", "--allow-net", "--allow-read", `--allow-env=${ENV_VARIABLES}`, "main.ts"];
  const file = await writeEnvFile("NATS_URLS=nats://127.0.0.1:4222\n");
  const { code, output } = await runToExit(
    {
      GATEWAY_PROT: "9000",
      GATEWAY_LOG_LEVEL: "debug",
      GATEWAY_ENV_FILE: file.path,
      ...unreachableNats(),
    },
    args,
    /Cannot connect to NATS/,
  );
  assert.equal(code, 1, output);
  assert.match(output, /"level":"debug","msg":"environment names not checked"/);
  assert.doesNotMatch(output, /GATEWAY_PROT/);
  assert.match(
    output,
    /"msg":"unknown variable","name":"NATS_URLS","source":"env file [^"]+ line 1"/,
  );
  await Deno.remove(file.dir, { recursive: true });
});
