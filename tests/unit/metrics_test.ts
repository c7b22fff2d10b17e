import assert from "node:assert/strict";
import { GatewayMetrics, renderMetrics } from "../../lib/metrics.ts";

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
