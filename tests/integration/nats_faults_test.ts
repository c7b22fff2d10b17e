/** NATS faults: outages, restarts, deleted streams, outages past the bound. */
import assert from "node:assert/strict";
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { nanos } from "@nats-io/nats-core";
import { startGateway } from "../../lib/gateway.ts";
import { NatsServer } from "../../tools/nats_server.ts";
import {
  Client,
  eventually,
  health,
  Publisher,
  recordingLogger,
  signal,
  testConfig,
} from "../helpers/fixtures.ts";
import { GatewayProcess } from "../../tools/gateway_process.ts";

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

Deno.test("durable: a message redelivered after its ack was lost never reaches clients after newer ones", async () => {
  await using nats = await NatsServer.start();
  await using publisher = await Publisher.connect(nats.url);
  const jsm = await jetstreamManager(publisher.nc);
  await jsm.streams.add({ name: "LEVEL_SIGNALS", subjects: ["levels.*"] });
  // The durable the gateway will bind; a first reader takes message 1 and never acks it, as
  // if its ack was lost at a disconnect: the server redelivers it after ack_wait.
  await jsm.consumers.add("LEVEL_SIGNALS", {
    durable_name: "gateway_levels",
    ack_policy: AckPolicy.Explicit,
    ack_wait: nanos(3_000),
    filter_subject: "levels.signals",
    deliver_policy: DeliverPolicy.All,
  });
  await publisher.publish(signal(1));
  const durable = await jetstream(publisher.nc).consumers.get("LEVEL_SIGNALS", "gateway_levels");
  assert.equal((await durable.next())?.seq, 1);

  await using gateway = await startGateway(
    testConfig(nats.url, { GATEWAY_DURABLE: "gateway_levels" }),
    { logger: recordingLogger() },
  );
  await using client = await Client.open(gateway.addr);
  await publisher.publish(signal(2));
  await publisher.publish(signal(3));
  assert.deepEqual(await client.waitFor(3), [signal(1), signal(2), signal(3)]);
  const skipped = () =>
    gateway.metrics.messagesSkipped.get({ reason: "superseded" }) +
    gateway.metrics.messagesSkipped.get({ reason: "duplicate" });
  await eventually(() => skipped() >= 1, "message 1 redelivered and skipped", 10_000);
  assert.deepEqual(client.messages, [signal(1), signal(2), signal(3)]);
  await using late = await Client.open(gateway.addr);
  assert.deepEqual(await late.waitFor(1), [signal(3)], "the cache keeps the newest");
});

Deno.test("stream recreated with fewer messages: they are relayed and lag counts against the new stream", async () => {
  await using nats = await NatsServer.start();
  await using publisher = await Publisher.connect(nats.url);
  {
    // Ten messages stored before the gateway starts: it is seeded at sequence 10.
    await using _gateway = await startGateway(testConfig(nats.url), { logger: recordingLogger() });
    for (let i = 1; i <= 10; i++) await publisher.publish(signal(i));
  }
  await using gateway = await startGateway(testConfig(nats.url), {
    logger: recordingLogger(),
    lagPollMs: 300,
  });
  await using client = await Client.open(gateway.addr);
  assert.deepEqual(await client.waitFor(1), [signal(10)]);
  const jsm = await jetstreamManager(publisher.nc);
  const { config } = await jsm.streams.info("LEVEL_SIGNALS");
  await jsm.streams.delete("LEVEL_SIGNALS");
  await jsm.streams.add(config).catch(() => {}); // the gateway may have recreated it already
  await eventually(async () => (await health(gateway.addr)).status === 200, "health 200");
  // Sequences 1–3 of the new stream: below the old stream's 10, never taken for old news.
  for (let i = 11; i <= 13; i++) await publisher.publish(signal(i));
  assert.deepEqual(await client.waitFor(4), [signal(10), signal(11), signal(12), signal(13)]);
  await eventually(async () => (await health(gateway.addr)).body.consumer_lag === 0, "lag 0");
});

Deno.test("health is unhealthy while the consumer cannot be recreated, healthy once it is", async () => {
  await using nats = await NatsServer.start();
  await using publisher = await Publisher.connect(nats.url);
  const jsm = await jetstreamManager(publisher.nc);
  await jsm.streams.add({ name: "LEVEL_SIGNALS", subjects: ["levels.*"] });
  await using gateway = await startGateway(
    testConfig(nats.url, { GATEWAY_CREATE_STREAMS: "false" }),
    { logger: recordingLogger(), lagPollMs: 300 },
  );
  await using client = await Client.open(gateway.addr);
  await publisher.publish(signal(1));
  await client.waitFor(1);
  // Nothing may recreate it: every attempt to recreate the consumer fails.
  await jsm.streams.delete("LEVEL_SIGNALS");
  await eventually(() => gateway.metrics.consumerRestarts.get() >= 2, "failed recreations");
  for (let i = 0; i < 5; i++) {
    assert.equal((await health(gateway.addr)).status, 503);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  await jsm.streams.add({ name: "LEVEL_SIGNALS", subjects: ["levels.*"] });
  await eventually(async () => (await health(gateway.addr)).status === 200, "health 200");
  await publisher.publish(signal(2));
  assert.deepEqual(await client.waitFor(2), [signal(1), signal(2)]);
});
