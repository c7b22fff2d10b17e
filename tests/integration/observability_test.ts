/** /metrics parsed by a real Prometheus text-format parser; values move as traffic flows. */
import assert from "node:assert/strict";
import { startGateway } from "../../lib/gateway.ts";
import { NatsServer } from "../../tools/nats_server.ts";
import { scrape, value } from "../helpers/metrics.ts";
import {
  Client,
  eventually,
  Publisher,
  recordingLogger,
  signal,
  testConfig,
} from "../helpers/fixtures.ts";

const EXPECTED = [
  ["gateway_ws_connections", "GAUGE"],
  ["gateway_ws_connections_opened_total", "COUNTER"],
  ["gateway_ws_connections_closed_total", "COUNTER"],
  ["gateway_nats_messages_received_total", "COUNTER"],
  ["gateway_messages_relayed_total", "COUNTER"],
  ["gateway_ws_messages_sent_total", "COUNTER"],
  ["gateway_ws_sent_bytes_total", "COUNTER"],
  ["gateway_ws_send_errors_total", "COUNTER"],
  ["gateway_invalid_payloads_total", "COUNTER"],
  ["gateway_slow_client_conflations_total", "COUNTER"],
  ["gateway_slow_client_disconnects_total", "COUNTER"],
  ["gateway_nats_connected", "GAUGE"],
  ["gateway_nats_reconnects_total", "COUNTER"],
  ["gateway_last_message_timestamp_seconds", "GAUGE"],
  ["gateway_nats_consumer_pending_messages", "GAUGE"],
] as const;

Deno.test("/metrics: every family has HELP and TYPE, and values follow the traffic", async () => {
  await using nats = await NatsServer.start();
  await using gateway = await startGateway(testConfig(nats.url), {
    logger: recordingLogger(),
    lagPollMs: 100,
  });
  const before = await scrape(gateway.addr);
  for (const [name, type] of EXPECTED) {
    assert.equal(before.get(name)?.type, type, name);
    assert.ok(before.get(name)!.help.length > 0, `${name} has HELP`);
  }
  assert.equal(value(before, "gateway_nats_connected"), 1);
  assert.equal(value(before, "gateway_ws_connections"), 0);

  await using publisher = await Publisher.connect(nats.url);
  const clients = await Promise.all([1, 2, 3].map(() => Client.open(gateway.addr)));
  for (let i = 1; i <= 4; i++) await publisher.publish(signal(i));
  await publisher.publish("not json");
  await Promise.all(clients.map((c) => c.waitFor(4)));
  await clients[2].close();
  await eventually(() => gateway.metrics.connections.get() === 2, "a client to leave");

  const after = await scrape(gateway.addr);
  assert.equal(value(after, "gateway_ws_connections"), 2);
  assert.equal(value(after, "gateway_ws_connections_opened_total"), 3);
  assert.equal(value(after, "gateway_ws_connections_closed_total", { reason: "client" }), 1);
  assert.equal(value(after, "gateway_nats_messages_received_total"), 5);
  assert.equal(value(after, "gateway_messages_relayed_total"), 4);
  assert.equal(value(after, "gateway_ws_messages_sent_total"), 12);
  const bytes = [1, 2, 3, 4].reduce((sum, i) => sum + signal(i).length, 0) * 3;
  assert.equal(value(after, "gateway_ws_sent_bytes_total"), bytes);
  assert.equal(value(after, "gateway_invalid_payloads_total", { reason: "invalid_json" }), 1);
  const lastTs = value(after, "gateway_last_message_timestamp_seconds");
  assert.ok(Math.abs(lastTs - Date.now() / 1000) < 60, `last message ts ${lastTs}`);
  const healthUrl = `http://127.0.0.1:${gateway.addr.port}/health`;
  let health: Record<string, number> = {};
  await eventually(async () => {
    health = await (await fetch(healthUrl)).json();
    return health.consumer_lag === 0;
  }, "the first lag measurement");
  assert.equal(value(await scrape(gateway.addr), "gateway_nats_consumer_pending_messages"), 0);
  assert.equal(health.messages_relayed, 4);
  assert.equal(health.connections, 2);
  assert.equal(health.consumer_lag, 0);
  assert.ok(Math.abs(health.last_message_ts - Date.now()) < 60_000);
  await Promise.all(clients.map((c) => c.close()));
});

Deno.test("logs are JSON lines with ts, level and msg, and nothing per message at info", async () => {
  await using nats = await NatsServer.start();
  const logger = recordingLogger();
  await using gateway = await startGateway(testConfig(nats.url), { logger });
  await using publisher = await Publisher.connect(nats.url);
  await using client = await Client.open(gateway.addr);
  const linesBefore = logger.lines.filter((l) => l.level !== "debug").length;
  for (let i = 1; i <= 50; i++) await publisher.publish(signal(i));
  for (let i = 1; i <= 50; i++) await publisher.publish("bad");
  await publisher.publish(signal(51));
  await client.waitFor(51);
  for (const line of logger.lines) {
    assert.equal(typeof line.ts, "string");
    assert.ok(!Number.isNaN(Date.parse(line.ts as string)));
    assert.ok(["debug", "info", "warn", "error"].includes(line.level as string));
    assert.equal(typeof line.msg, "string");
  }
  const newLines = logger.lines.filter((l) => l.level !== "debug").slice(linesBefore);
  // 50 invalid payloads: one warning, the rest rate-limited.
  assert.equal(newLines.length, 1, JSON.stringify(newLines));
  assert.equal(newLines[0].msg, "invalid payload skipped");
});
