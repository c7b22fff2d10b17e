/** The real main.ts, run with the start task's permission flags, as an operator runs it. */
import assert from "node:assert/strict";
import { NatsServer } from "../../tools/nats_server.ts";
import { Client, eventually, Publisher, signal } from "../helpers/fixtures.ts";
import { GatewayProcess } from "../../tools/gateway_process.ts";

Deno.test("main: SIGTERM closes every client with 1001, drains NATS and exits 0", async () => {
  await using nats = await NatsServer.start();
  await using gateway = await GatewayProcess.spawn({ NATS_URL: nats.url });
  const addr = await gateway.listening;
  await using publisher = await Publisher.connect(nats.url);
  const clients = await Promise.all(Array.from({ length: 10 }, () => Client.open(addr)));
  await publisher.publish(signal(1));
  await Promise.all(clients.map((c) => c.waitFor(1)));
  const health = await fetch(`http://${addr.hostname}:${addr.port}/health`);
  assert.equal((await health.json()).connections, 10);

  gateway.kill("SIGTERM");
  const closes = await Promise.all(clients.map((c) => c.closed));
  for (const close of closes) {
    assert.equal(close.code, 1001);
    // Not Deno's own "Server shutting down": the gateway's handshake completed first.
    assert.equal(close.reason, "gateway shutting down");
    assert.equal(close.wasClean, true);
  }
  const status = await gateway.status;
  assert.equal(status.code, 0, gateway.output);
  // The process has exited, but its last lines may still be in the pipe: wait for them.
  await eventually(() => /"msg":"gateway stopped"/.test(gateway.output), "the last log line");
});

Deno.test("main: NATS unreachable at startup exits 1 within the connect timeout", async () => {
  // A port nothing listens on: take a free one and close it.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  const started = Date.now();
  await using gateway = await GatewayProcess.spawn({
    NATS_URL: `nats://127.0.0.1:${port}`,
    GATEWAY_NATS_CONNECT_TIMEOUT_MS: "1000",
  });
  const status = await gateway.status;
  const elapsed = Date.now() - started;
  assert.equal(status.code, 1);
  assert.match(
    gateway.output,
    /Cannot connect to NATS at (?:nats:\/\/)?127\.0\.0\.1:\d+ after \d+ attempts in 1000 ms/,
  );
  assert.ok(elapsed < 10_000, `took ${elapsed} ms`);
  assert.doesNotMatch(gateway.output, /^\s+at /m, "no stack trace");
});

Deno.test("main: a bad variable stops startup with exit 2 naming it and its value", async () => {
  await using gateway = await GatewayProcess.spawn({ GATEWAY_PORT: "eighty" });
  const status = await gateway.status;
  assert.equal(status.code, 2);
  assert.match(
    gateway.output,
    /Cannot parse GATEWAY_PORT as an integer: current value is \\"eighty\\"/,
  );
});

Deno.test("main: an env file fills unset variables, the environment wins", async () => {
  await using nats = await NatsServer.start();
  const dir = await Deno.makeTempDir();
  const envFile = `${dir}/gateway.env`;
  await Deno.writeTextFile(
    envFile,
    `NATS_URL=${nats.url}\nGATEWAY_ROUTES=/ws/stream=levels.other@LEVEL_SIGNALS\nGATEWAY_HOST=0.0.0.0\n`,
  );
  // The start task derives its read scope from GATEWAY_ENV_FILE, wherever the file is.
  await using gateway = await GatewayProcess.spawn({ GATEWAY_ENV_FILE: envFile });
  const addr = await gateway.listening;
  assert.equal(addr.hostname, "127.0.0.1", "GATEWAY_HOST from the environment wins");
  await using publisher = await Publisher.connect(nats.url);
  await using client = await Client.open(addr);
  await publisher.publish(signal(1), "levels.other");
  assert.deepEqual(await client.waitFor(1), [signal(1)]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("main: a taken port is reported with its address before NATS is contacted", async () => {
  using taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (taken.addr as Deno.NetAddr).port;
  const started = Date.now();
  await using gateway = await GatewayProcess.spawn({
    // Nothing listens there: contacting it would take the whole connect timeout.
    NATS_URL: "nats://127.0.0.1:1",
    GATEWAY_NATS_CONNECT_TIMEOUT_MS: "20000",
    GATEWAY_PORT: String(port),
  });
  const status = await gateway.status;
  assert.equal(status.code, 1);
  assert.ok(Date.now() - started < 15_000, "did not wait for NATS");
  assert.match(
    gateway.output,
    new RegExp(`127\\.0\\.0\\.1:${port} \\(GATEWAY_HOST/GATEWAY_PORT\\) is already in use`),
  );
  assert.doesNotMatch(gateway.output, /nats not reachable|nats connected/);
});
