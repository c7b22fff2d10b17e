/** End-to-end relay: a real nats-server, the gateway on port 0, real WebSocket clients. */
import assert from "node:assert/strict";
import { jetstreamManager } from "@nats-io/jetstream";
import { startGateway } from "../../lib/gateway.ts";
import { NatsServer } from "../../tools/nats_server.ts";
import {
  Client,
  eventually,
  Publisher,
  recordingLogger,
  signal,
  testConfig,
} from "../helpers/fixtures.ts";

Deno.test("relay delivers each payload's bytes unchanged, in order, to many clients", async () => {
  await using nats = await NatsServer.start();
  await using gateway = await startGateway(testConfig(nats.url), { logger: recordingLogger() });
  await using publisher = await Publisher.connect(nats.url);
  const clients = await Promise.all(Array.from({ length: 20 }, () => Client.open(gateway.addr)));
  // Odd spacing and key order must survive: the gateway never re-serialises.
  const payloads = Array.from({ length: 50 }, (_, i) => `{"seq": ${i},  "z":1,"a":[ ], "é":"ü"}`);
  for (const payload of payloads) await publisher.publish(payload);
  for (const client of clients) {
    assert.deepEqual(await client.waitFor(payloads.length), payloads);
  }
  await Promise.all(clients.map((c) => c.close()));
});

Deno.test("a new client gets the cached latest payload first, then every later one", async () => {
  await using nats = await NatsServer.start();
  await using gateway = await startGateway(testConfig(nats.url), { logger: recordingLogger() });
  await using publisher = await Publisher.connect(nats.url);
  await using first = await Client.open(gateway.addr);
  await publisher.publish(signal(1));
  await publisher.publish(signal(2));
  await first.waitFor(2);

  await using late = await Client.open(gateway.addr);
  assert.deepEqual(await late.waitFor(1), [signal(2)]);
  await publisher.publish(signal(3));
  assert.deepEqual(await late.waitFor(2), [signal(2), signal(3)]);
  assert.deepEqual(await first.waitFor(3), [signal(1), signal(2), signal(3)]);
});

Deno.test("a gateway started after messages were stored seeds its cache from the stream", async () => {
  await using nats = await NatsServer.start();
  {
    await using gateway = await startGateway(testConfig(nats.url), { logger: recordingLogger() });
    await using publisher = await Publisher.connect(nats.url);
    await using client = await Client.open(gateway.addr);
    for (let i = 1; i <= 5; i++) await publisher.publish(signal(i));
    await client.waitFor(5);
  }
  await using restarted = await startGateway(testConfig(nats.url), { logger: recordingLogger() });
  await using client = await Client.open(restarted.addr);
  // Only the newest stored snapshot, never the backlog.
  assert.deepEqual(await client.waitFor(1), [signal(5)]);
  await using publisher = await Publisher.connect(nats.url);
  await publisher.publish(signal(6));
  assert.deepEqual(await client.waitFor(2), [signal(5), signal(6)]);
});

Deno.test("malformed payloads are skipped and counted while the next valid one arrives", async () => {
  await using nats = await NatsServer.start();
  await using gateway = await startGateway(
    testConfig(nats.url, { GATEWAY_MAX_PAYLOAD_BYTES: "1000" }),
    { logger: recordingLogger() },
  );
  await using publisher = await Publisher.connect(nats.url);
  await using client = await Client.open(gateway.addr);
  const bad: (string | Uint8Array)[] = [
    "not json",
    "[1,2,3]",
    "42",
    '"a string"',
    "null",
    new Uint8Array(),
    new Uint8Array([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x3a, 0x31, 0x7d]),
    JSON.stringify({ big: "x".repeat(2000) }),
  ];
  for (const payload of bad) await publisher.publish(payload);
  await publisher.publish(signal(1));
  assert.deepEqual(await client.waitFor(1), [signal(1)]);
  const invalid = gateway.metrics.invalidPayloads;
  assert.equal(invalid.get({ reason: "invalid_json" }), 1);
  assert.equal(invalid.get({ reason: "not_object" }), 4);
  assert.equal(invalid.get({ reason: "empty" }), 1);
  assert.equal(invalid.get({ reason: "invalid_utf8" }), 1);
  assert.equal(invalid.get({ reason: "too_large" }), 1);
  assert.equal(gateway.metrics.messagesRelayed.get(), 1);
  // A new client gets the valid payload, never a skipped one.
  await using late = await Client.open(gateway.addr);
  assert.deepEqual(await late.waitFor(1), [signal(1)]);
});

Deno.test("GATEWAY_DEAD_LETTER_SUBJECT gets each invalid payload unchanged, with why and whence", async () => {
  await using nats = await NatsServer.start();
  await using gateway = await startGateway(
    testConfig(nats.url, { GATEWAY_DEAD_LETTER_SUBJECT: "gateway.dead_letter" }),
    { logger: recordingLogger() },
  );
  await using publisher = await Publisher.connect(nats.url);
  const deadLetters = publisher.nc.subscribe("gateway.dead_letter", { max: 2 });
  await publisher.nc.flush();
  await using client = await Client.open(gateway.addr);
  const notJson = await publisher.publish("not json");
  const array = await publisher.publish("[1,2,3]");
  await publisher.publish(signal(1));
  assert.deepEqual(await client.waitFor(1), [signal(1)]);
  const received = [];
  for await (const m of deadLetters) {
    received.push({
      data: new TextDecoder().decode(m.data),
      reason: m.headers?.get("Gateway-Reason"),
      seq: m.headers?.get("Gateway-Stream-Sequence"),
      subject: m.headers?.get("Gateway-Subject"),
      stream: m.headers?.get("Gateway-Stream"),
    });
  }
  assert.deepEqual(received, [
    {
      data: "not json",
      reason: "invalid_json",
      seq: String(notJson),
      subject: "levels.signals",
      stream: "LEVEL_SIGNALS",
    },
    {
      data: "[1,2,3]",
      reason: "not_object",
      seq: String(array),
      subject: "levels.signals",
      stream: "LEVEL_SIGNALS",
    },
  ]);
  assert.equal(gateway.metrics.deadLetters.get(), 2);
});

Deno.test("streams are created with the platform config and left alone on a second start", async () => {
  await using nats = await NatsServer.start();
  const logger = recordingLogger();
  {
    await using _gateway = await startGateway(testConfig(nats.url), { logger });
  }
  await using publisher = await Publisher.connect(nats.url);
  const jsm = await jetstreamManager(publisher.nc);
  for (const [name, subject] of [["MARKET_DATA", "market.*"], ["LEVEL_SIGNALS", "levels.*"]]) {
    const { config } = await jsm.streams.info(name);
    assert.deepEqual(config.subjects, [subject]);
    assert.equal(config.retention, "limits");
    assert.equal(config.storage, "file");
    assert.equal(config.max_age, 24 * 60 * 60 * 1e9);
  }
  // An operator changed one: a second start keeps it and says what differs.
  const { config } = await jsm.streams.info("MARKET_DATA");
  await jsm.streams.update("MARKET_DATA", { ...config, max_age: 60 * 60 * 1e9 });
  const second = recordingLogger();
  {
    await using _gateway = await startGateway(testConfig(nats.url), { logger: second });
  }
  assert.equal((await jsm.streams.info("MARKET_DATA")).config.max_age, 60 * 60 * 1e9);
  assert.equal((await jsm.streams.info("LEVEL_SIGNALS")).config.max_age, 24 * 60 * 60 * 1e9);
  const warning = second.lines.find((l) =>
    l.msg === "stream exists with a different config; left unchanged"
  );
  assert.ok(warning, "expected a warning naming the difference");
  assert.equal(warning.stream, "MARKET_DATA");
  assert.deepEqual((warning.differences as { field: string }[]).map((d) => d.field), ["max_age"]);
  assert.equal(second.lines.filter((l) => l.msg === "stream created").length, 0);
});

Deno.test("two gateways on one NATS each deliver every message", async () => {
  await using nats = await NatsServer.start();
  await using a = await startGateway(testConfig(nats.url), { logger: recordingLogger() });
  await using b = await startGateway(testConfig(nats.url), { logger: recordingLogger() });
  await using publisher = await Publisher.connect(nats.url);
  await using clientA = await Client.open(a.addr);
  await using clientB = await Client.open(b.addr);
  const payloads = Array.from({ length: 30 }, (_, i) => signal(i));
  for (const payload of payloads) await publisher.publish(payload);
  assert.deepEqual(await clientA.waitFor(30), payloads);
  assert.deepEqual(await clientB.waitFor(30), payloads);
});

Deno.test("a configured durable consumer is used and survives a gateway restart", async () => {
  await using nats = await NatsServer.start();
  const config = testConfig(nats.url, { GATEWAY_DURABLE: "gateway_levels" });
  await using publisher = await Publisher.connect(nats.url);
  {
    await using gateway = await startGateway(config, { logger: recordingLogger() });
    await using client = await Client.open(gateway.addr);
    await publisher.publish(signal(1));
    await client.waitFor(1);
  }
  const jsm = await jetstreamManager(publisher.nc);
  const info = await jsm.consumers.info("LEVEL_SIGNALS", "gateway_levels");
  assert.equal(info.config.durable_name, "gateway_levels");
  // Published while the gateway was down: after restart only the newest is relayed.
  for (let i = 2; i <= 6; i++) await publisher.publish(signal(i));
  await using gateway = await startGateway(config, { logger: recordingLogger() });
  await using client = await Client.open(gateway.addr);
  assert.deepEqual(await client.waitFor(1), [signal(6)]);
  await publisher.publish(signal(7));
  assert.deepEqual(await client.waitFor(2), [signal(6), signal(7)]);
  assert.equal(client.messages.length, 2);
});

Deno.test("dead letters: one per message across consumer restarts and across replicas", async () => {
  await using nats = await NatsServer.start();
  await using publisher = await Publisher.connect(nats.url);
  const jsm = await jetstreamManager(publisher.nc);
  // A stream capturing the dead-letter subject: replicas' copies are deduplicated by message id.
  await jsm.streams.add({ name: "DEAD_LETTERS", subjects: ["gateway.dead_letter"] });
  const env = { GATEWAY_DEAD_LETTER_SUBJECT: "gateway.dead_letter" };
  await using a = await startGateway(testConfig(nats.url, env), { logger: recordingLogger() });
  await using b = await startGateway(testConfig(nats.url, env), { logger: recordingLogger() });
  await using client = await Client.open(a.addr);
  const bad = await publisher.publish("not json");
  await eventually(
    () =>
      a.metrics.invalidPayloads.get({ reason: "invalid_json" }) === 1 &&
      b.metrics.invalidPayloads.get({ reason: "invalid_json" }) === 1,
    "both replicas saw it",
  );
  // NATS restarts: each consumer is recreated at the newest message, the invalid one.
  await nats.kill("SIGKILL");
  await nats.restart();
  await eventually(
    () => a.metrics.invalidPayloads.get({ reason: "invalid_json" }) === 2,
    "the newest (invalid) message delivered again",
  );
  await publisher.publish(signal(1)).catch(async () => await publisher.publish(signal(1)));
  await client.waitFor(1);
  await eventually(
    async () => (await jsm.streams.info("DEAD_LETTERS")).state.messages >= 1,
    "a dead letter stored",
    40_000,
  );
  const { state } = await jsm.streams.info("DEAD_LETTERS");
  assert.equal(state.messages, 1, "one dead letter, whoever published it and however often");
  const stored = await jsm.streams.getMessage("DEAD_LETTERS", { seq: state.first_seq });
  assert.equal(stored?.header.get("Nats-Msg-Id"), `LEVEL_SIGNALS:${bad}`);
  assert.equal(a.metrics.deadLetters.get() + b.metrics.deadLetters.get(), 1);
});
