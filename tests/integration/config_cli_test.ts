/**
 * main.ts's configuration checks and stop signals through the real process: exit codes, the
 * lines an operator reads, and that no secret is ever among them.
 */
import assert from "node:assert/strict";
import { NatsServer } from "../../tools/nats_server.ts";
import { Client, eventually, Publisher, signal } from "../helpers/fixtures.ts";
import { GatewayProcess, startTaskArgs } from "../../tools/gateway_process.ts";
import { ENV_VARIABLES } from "../../lib/config/settings.ts";

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
    /GATEWAY_AUTH_TOKEN is not a variable the gateway reads; did you mean GATEWAY_AUTH_TOKENS\?.*values are not shown/;
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

Deno.test("main: an unknown GATEWAY_PROT exits 2 with the closest name; an unknown NATS_* warns", async () => {
  const refused = await runToExit(
    { GATEWAY_PROT: "9000", ...unreachableNats() },
    ALL_PERMISSIONS,
    INVALID,
  );
  assert.equal(refused.code, 2, refused.output);
  assert.match(
    refused.output,
    /"level":"error","msg":"unknown variable","name":"GATEWAY_PROT","source":"environment","closest":"GATEWAY_PORT","hint":"GATEWAY_PROT is not a variable the gateway reads; did you mean GATEWAY_PORT\?"/,
  );
  assert.doesNotMatch(refused.output, /9000/, "values are never shown");

  const warned = await runToExit(
    { NATS_URLS: "nats://127.0.0.1:4222", ...unreachableNats() },
    ALL_PERMISSIONS,
    /Cannot connect to NATS/,
  );
  assert.equal(warned.code, 1, "it went on to connect to NATS");
  assert.match(warned.output, /"level":"warn","msg":"unknown variable","name":"NATS_URLS"/);
});

Deno.test("main: the start task reports the environment's unknown names once", async () => {
  const { code, output } = await runToExit(
    { NATS_URLS: "nats://127.0.0.1:4222", ...unreachableNats() },
    undefined,
    /Cannot connect to NATS/,
  );
  assert.equal(code, 1, output);
  assert.equal(output.match(/"msg":"unknown variable","name":"NATS_URLS"/g)?.length, 1, output);
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

/** A TCP listener that counts the connections it accepts (a stand-in NATS, a taken port). */
function countingListener(): { port: number; accepted: () => number } & Disposable {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let accepted = 0;
  (async () => {
    for await (const conn of listener) {
      accepted++;
      conn.close();
    }
  })().catch(() => {});
  return {
    port: listener.addr.port,
    accepted: () => accepted,
    [Symbol.dispose]: () => listener.close(),
  };
}

/** `deno task start --check-config` with `env`: exit code, stdout lines, whole output. */
async function checkConfig(env: Record<string, string>) {
  await using gateway = await GatewayProcess.spawn(env, [
    ...await startTaskArgs(),
    "--check-config",
  ]);
  const { code } = await gateway.status;
  return { code, stdout: gateway.lines, output: gateway.output };
}

Deno.test("--check-config: a valid configuration prints its effective settings as one JSON object, secrets redacted, contacting nothing", async () => {
  using nats = countingListener();
  using taken = countingListener();
  const keys = await writeEnvFile("");
  const { publicKey } = await crypto.subtle.generateKey("Ed25519", true, [
    "sign",
    "verify",
  ]) as CryptoKeyPair;
  const spki = btoa(String.fromCharCode(
    ...new Uint8Array(await crypto.subtle.exportKey("spki", publicKey as CryptoKey)),
  ));
  const pem = `${keys.dir}/public.pem`;
  await Deno.writeTextFile(pem, `-----BEGIN PUBLIC KEY-----\n${spki}\n-----END PUBLIC KEY-----\n`);
  const started = performance.now();
  const { code, stdout, output } = await checkConfig({
    NATS_URL: `nats://gw:pa55word-secret@127.0.0.1:${nats.port}`,
    GATEWAY_PORT: String(taken.port),
    GATEWAY_AUTH_TOKENS: TOKEN,
    GATEWAY_JWT_PUBLIC_KEY: pem,
    GATEWAY_ROUTES: "/ws/stream=levels.signals@LEVEL_SIGNALS,/ws/levels/{s}=levels.{s}.signals",
  });
  const elapsedMs = performance.now() - started;
  await Deno.remove(keys.dir, { recursive: true });
  assert.equal(code, 0, output);
  assert.equal(stdout.length, 1, output);
  const settings = JSON.parse(stdout[0]);
  assert.deepEqual(Object.keys(settings), [...ENV_VARIABLES]);
  assert.equal(settings.NATS_URL, `nats://gw:[REDACTED]@127.0.0.1:${nats.port}`);
  assert.equal(settings.GATEWAY_AUTH_TOKENS, "[REDACTED]");
  assert.equal(settings.GATEWAY_PORT, taken.port);
  assert.equal(settings.GATEWAY_JWT_PUBLIC_KEY, pem);
  assert.ok(!output.includes(TOKEN) && !output.includes("pa55word-secret"), output);
  assert.equal(nats.accepted(), 0, "NATS was contacted");
  // A start would have failed on the taken port; nothing tried to bind or connect to it.
  assert.equal(taken.accepted(), 0);
  console.log(`deno task start --check-config took ${Math.round(elapsedMs)} ms`);
});

Deno.test("--check-config: a bad value, an unknown or removed name, a missing key file: exit 2 saying why", async () => {
  using nats = countingListener();
  const base = { NATS_URL: `nats://127.0.0.1:${nats.port}` };
  const cases: [Record<string, string>, RegExp][] = [
    [
      { GATEWAY_PORT: "eighty" },
      /Cannot parse GATEWAY_PORT as an integer: current value is \\"eighty\\"/,
    ],
    [
      { GATEWAY_PROT: "9000" },
      /GATEWAY_PROT is not a variable the gateway reads; did you mean GATEWAY_PORT\?/,
    ],
    [{ LOG_LEVEL: "debug" }, /LOG_LEVEL \(environment\) is no longer read: use GATEWAY_LOG_LEVEL/],
    [
      { GATEWAY_SUBJECT: "a.b" },
      /GATEWAY_SUBJECT \(environment\) is no longer read: use GATEWAY_ROUTES=/,
    ],
    [
      { GATEWAY_CLIENT_MAX_QUEUED_SNAPSHOTS: "8" },
      /GATEWAY_CLIENT_MAX_QUEUED_SNAPSHOTS .* no longer read/,
    ],
    [
      { GATEWAY_JWT_JWKS: "/nonexistent/jwks.json" },
      /GATEWAY_JWT_JWKS names \/nonexistent\/jwks\.json, which this process may not read|GATEWAY_JWT_JWKS names a file that cannot be used/,
    ],
    [{ GATEWAY_ROUTES: "/ws/a=a.*" }, /GATEWAY_ROUTES entry 1/],
  ];
  for (const [env, message] of cases) {
    const { code, stdout, output } = await checkConfig({ ...base, ...env });
    assert.equal(code, 2, `${JSON.stringify(env)}: ${output}`);
    assert.deepEqual(stdout, [], "nothing on stdout");
    assert.match(output, message);
  }
  assert.equal(nats.accepted(), 0, "NATS was contacted");
});
