/** NATS faults: outages, restarts, deleted streams, outages past the bound. */
import assert from "node:assert/strict";
import { jetstreamManager } from "@nats-io/jetstream";
import { startGateway } from "../../lib/gateway.ts";
import { NatsServer } from "../helpers/nats_server.ts";
import {
  Client,
  eventually,
  health,
  Publisher,
  recordingLogger,
  signal,
  testConfig,
} from "../helpers/fixtures.ts";
import { GatewayProcess } from "../helpers/process.ts";

const RESTARTS = 3;

Deno.test("NATS killed and restarted: health 503 while down, clients stay, delivery resumes", async () => {
  await using nats = await NatsServer.start();
  await using gateway = await startGateway(testConfig(nats.url), { logger: recordingLogger() });
  const clients = await Promise.all(Array.from({ length: 5 }, () => Client.open(gateway.addr)));
  let seq = 0;
  const expected: string[] = [];
  for (let round = 0; round <= RESTARTS; round++) {
    {
      await using publisher = await Publisher.connect(nats.url);
      for (let i = 0; i < 5; i++) {
        const payload = signal(++seq);
        await publisher.publish(payload);
        expected.push(payload);
      }
    }
    for (const client of clients) assert.deepEqual(await client.waitFor(expected.length), expected);
    if (round === RESTARTS) break;

    await nats.kill("SIGKILL");
    await eventually(async () => (await health(gateway.addr)).status === 503, "health 503");
    const down = await health(gateway.addr);
    assert.equal(down.body.nats_connected, false);
    assert.equal(down.body.status, "unhealthy");
    for (const client of clients) assert.equal(client.socket.readyState, WebSocket.OPEN);

    await nats.restart();
    await eventually(async () => (await health(gateway.addr)).status === 200, "health 200 again");
  }
  // No duplicate of the last pre-outage snapshot, no gap in what NATS holds.
  for (const client of clients) assert.deepEqual(client.messages, expected);
  assert.equal(gateway.metrics.natsReconnects.get(), RESTARTS);
  assert.equal(gateway.metrics.messagesSkipped.get({ reason: "duplicate" }), RESTARTS);
  await Promise.all(clients.map((c) => c.close()));
});

Deno.test("messages stored while the gateway reconnects: newest first, never a stale burst", async () => {
  await using nats = await NatsServer.start();
  await using gateway = await startGateway(testConfig(nats.url), { logger: recordingLogger() });
  await using client = await Client.open(gateway.addr);
  {
    await using publisher = await Publisher.connect(nats.url);
    await publisher.publish(signal(1));
  }
  await client.waitFor(1);
  await nats.kill("SIGKILL");
  await eventually(async () => (await health(gateway.addr)).status === 503, "health 503");
  await nats.restart();
  // Publish at once, racing the gateway's reconnect (it retries every 250–500 ms).
  {
    await using publisher = await Publisher.connect(nats.url);
    for (let i = 2; i <= 20; i++) await publisher.publish(signal(i));
  }
  await client.waitFor(2);
  await eventually(() => client.messages.at(-1) === signal(20), "the newest snapshot");
  const after = client.messages.slice(1).map((m) => JSON.parse(m).seq as number);
  // The first after the outage is the newest stored when the consumer came back (whichever
  // that was in this race), then every later one without a gap: never older ones after it.
  const first = after[0];
  assert.deepEqual(after, Array.from({ length: 21 - first }, (_, i) => first + i));
  await eventually(async () => (await health(gateway.addr)).status === 200, "health 200");
});

Deno.test("stream deleted and recreated while running: the gateway rebinds and resumes", async () => {
  await using nats = await NatsServer.start();
  const logger = recordingLogger();
  await using gateway = await startGateway(testConfig(nats.url), { logger, lagPollMs: 500 });
  await using publisher = await Publisher.connect(nats.url);
  await using client = await Client.open(gateway.addr);
  await publisher.publish(signal(1));
  await client.waitFor(1);

  const jsm = await jetstreamManager(publisher.nc);
  const { config } = await jsm.streams.info("LEVEL_SIGNALS");
  await jsm.streams.delete("LEVEL_SIGNALS");
  await eventually(() => gateway.metrics.consumerRestarts.get() > 0, "a consumer restart");
  await jsm.streams.add(config).catch(() => {}); // the gateway may have recreated it already
  await eventually(async () => (await health(gateway.addr)).status === 200, "health 200");
  await publisher.publish(signal(2));
  await publisher.publish(signal(3));
  assert.deepEqual(await client.waitFor(3), [signal(1), signal(2), signal(3)]);
  assert.ok(logger.lines.some((l) => l.msg === "nats consumer restarting"));
});

Deno.test("main: NATS gone longer than GATEWAY_NATS_MAX_OUTAGE_MS exits 1", async () => {
  await using nats = await NatsServer.start();
  await using gateway = await GatewayProcess.spawn({
    NATS_URL: nats.url,
    GATEWAY_NATS_MAX_OUTAGE_MS: "1000",
  });
  const addr = await gateway.listening;
  await using client = await Client.open(addr);
  await nats.kill("SIGKILL");
  const status = await gateway.status;
  assert.equal(status.code, 1);
  assert.match(gateway.output, /NATS unreachable for 1000 ms \(GATEWAY_NATS_MAX_OUTAGE_MS\)/);
  assert.equal((await client.closed).code, 1001, "clients are told the gateway is going away");
});
