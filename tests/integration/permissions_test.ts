/** The runtime permission flags: one set in deno.json, shared by `start` and `compile`. */
import assert from "node:assert/strict";
import { ENV_VARIABLES } from "../../lib/config.ts";
import { compileArgs } from "../../scripts/compile.ts";
import { permissionFlags, readPermissionSet } from "../../scripts/permissions.ts";
import { NatsServer } from "../helpers/nats_server.ts";
import { Client, Publisher, signal } from "../helpers/fixtures.ts";
import { GatewayProcess, LISTENING_LINE, startTaskArgs } from "../helpers/process.ts";

Deno.test("the permission set allows exactly the variables the gateway reads", async () => {
  const set = await readPermissionSet();
  assert.deepEqual([...set.env].sort(), [...ENV_VARIABLES].sort());
  assert.deepEqual(await startTaskArgs(), ["run", "-P=gateway", "main.ts"]);
});

Deno.test("compile uses the same set, widened only by the build-time host lists", async () => {
  const set = await readPermissionSet();
  const plain = await compileArgs({});
  for (const flag of permissionFlags(set)) assert.ok(plain.includes(flag), flag);
  assert.ok(plain.includes("--unstable-net"), "SO_REUSEPORT for GATEWAY_WORKERS");
  assert.ok(plain.includes("--exclude-unused-npm"), "no test-only npm packages in the binary");
  assert.equal(plain[plain.indexOf("--include") + 1], "lib/worker.ts");
  assert.ok(!plain.some((a) => a === "-A" || a === "--allow-all" || a.startsWith("--allow-run")));
  const widened = await compileArgs({ GATEWAY_NATS_HOSTS: "nats-1.internal,10.0.0.7" });
  const net = widened.find((a) => a.startsWith("--allow-net="))!;
  assert.ok(net.includes(",nats-1.internal,10.0.0.7"), net);
  await assert.rejects(
    () => compileArgs({ GATEWAY_NATS_HOSTS: "nats:4222" }),
    /GATEWAY_NATS_HOSTS must be a comma-separated list of host names or IPs without ports: current value is "nats:4222"/,
  );
});

Deno.test("start flags: a NATS host outside the allowed set fails with what to rebuild", async () => {
  await using gateway = await GatewayProcess.spawn({
    NATS_URL: "nats://nats.example.invalid:4222",
  });
  const status = await gateway.status;
  assert.equal(status.code, 1);
  assert.match(
    gateway.output,
    /NATS_URL names nats\.example\.invalid:4222, which this build may not reach/,
  );
  assert.match(gateway.output, /GATEWAY_NATS_HOSTS=nats\.example\.invalid deno task compile/);
  assert.doesNotMatch(gateway.output, /^\s+at /m, "no stack trace");
});

Deno.test("start flags: works against NATS on any port of an allowed host, by name", async () => {
  await using nats = await NatsServer.start();
  await using gateway = await GatewayProcess.spawn({ NATS_URL: `nats://localhost:${nats.port}` });
  const addr = await gateway.listening;
  await using publisher = await Publisher.connect(nats.url);
  await using client = await Client.open(addr);
  await publisher.publish(signal(1));
  assert.deepEqual(await client.waitFor(1), [signal(1)]);
  const health = await (await fetch(`http://127.0.0.1:${addr.port}/health`)).json();
  assert.equal(health.nats_connected, true);
});

const denort = Deno.env.get("DENORT_BIN");
Deno.test({
  name: "compile: the binary starts two workers, reports health and relays a message",
  ignore: !denort,
  async fn() {
    await using nats = await NatsServer.start();
    const dir = await Deno.makeTempDir();
    const output = `${dir}/gateway`;
    const compile = await new Deno.Command(Deno.execPath(), {
      args: ["task", "compile"],
      cwd: new URL("../..", import.meta.url).pathname,
      env: { GATEWAY_COMPILE_OUTPUT: output },
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(compile.success, new TextDecoder().decode(compile.stderr));
    const binary = new Deno.Command(output, {
      env: {
        NATS_URL: nats.url,
        GATEWAY_HOST: "127.0.0.1",
        GATEWAY_PORT: "0",
        GATEWAY_WORKERS: "2",
      },
      clearEnv: true,
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const reader = binary.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    let match: RegExpExecArray | null = null;
    while (!match) {
      const { value, done } = await reader.read();
      if (done) break;
      text += value;
      match = LISTENING_LINE.exec(text);
    }
    assert.ok(match, text);
    const addr: Deno.NetAddr = { transport: "tcp", hostname: "127.0.0.1", port: Number(match[2]) };
    const health = await (await fetch(`http://127.0.0.1:${addr.port}/health`)).json();
    assert.equal(health.status, "healthy");
    assert.equal(health.workers.length, 2);
    await using publisher = await Publisher.connect(nats.url);
    await using client = await Client.open(addr);
    await publisher.publish(signal(1));
    assert.deepEqual(await client.waitFor(1), [signal(1)]);
    binary.kill("SIGTERM");
    assert.equal((await binary.status).code, 0);
    await reader.cancel();
    await binary.stderr.cancel();
    await Deno.remove(dir, { recursive: true });
  },
});
if (!denort) {
  console.log(
    "compile smoke test skipped: DENORT_BIN is not set, and deno compile cannot download its runtime base binary (denort) here; set DENORT_BIN=/path/to/denort to run it",
  );
}
