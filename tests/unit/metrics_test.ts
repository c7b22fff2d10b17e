import assert from "node:assert/strict";
import { GatewayMetrics, renderMetrics } from "../../lib/metrics.ts";
import { combineHealth, type HealthReport } from "../../lib/server.ts";

Deno.test("renderMetrics combines workers: clients add up, NATS-side counts do not", () => {
  const a = new GatewayMetrics(() => 3);
  const b = new GatewayMetrics(() => 4);
  for (const m of [a, b]) m.messagesRelayed.inc(undefined, 10);
  a.deliveries.inc(undefined, 30);
  b.deliveries.inc(undefined, 40);
  a.connectionsClosed.inc({ reason: "slow_consumer" });
  a.natsConnected.set(1);
  b.natsConnected.set(0);
  a.consumerPending.set(2);
  b.consumerPending.set(7);
  const text = renderMetrics([a.snapshot(), b.snapshot()]);
  const sample = (name: string) => new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1];
  assert.equal(sample("gateway_ws_connections"), "7");
  assert.equal(sample("gateway_ws_messages_sent_total"), "70");
  assert.equal(sample("gateway_messages_relayed_total"), "10");
  assert.equal(sample("gateway_nats_connected"), "0");
  assert.equal(sample("gateway_nats_consumer_pending_messages"), "7");
  assert.match(text, /^gateway_ws_connections_closed_total\{reason="slow_consumer"\} 1$/m);
  assert.equal(text.match(/^# TYPE gateway_ws_connections gauge$/gm)?.length, 1);
  // One isolate renders exactly as before.
  assert.equal(a.render(), renderMetrics([a.snapshot()]));
});

Deno.test("combineHealth: healthy only when every worker is; one report passes through", () => {
  const base: HealthReport = {
    service: "gateway",
    status: "healthy",
    version: "test",
    nats_url: "nats://localhost:4222",
    nats_connected: true,
    connections: 5,
    last_message_ts: 2_000,
    messages_relayed: 9,
    consumer_lag: 0,
    uptime_s: 60,
  };
  assert.equal(combineHealth([base]), base);
  const behind = { ...base, connections: 2, last_message_ts: 1_000, messages_relayed: 8 };
  const both = combineHealth([base, behind]);
  assert.equal(both.status, "healthy");
  assert.equal(both.connections, 7);
  assert.equal(both.last_message_ts, 1_000, "the stalest worker's");
  assert.equal(both.messages_relayed, 9);
  assert.equal(both.workers?.length, 2);
  const down = combineHealth([base, { ...behind, status: "unhealthy", nats_connected: false }]);
  assert.equal(down.status, "unhealthy");
  assert.equal(down.nats_connected, false);
});
