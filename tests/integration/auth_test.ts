/** GATEWAY_AUTH_TOKENS with real WebSocket clients: no token, no data; a valid one, the stream. */
import assert from "node:assert/strict";
import { startGateway } from "../../lib/gateway.ts";
import { NatsServer } from "../helpers/nats_server.ts";
import { Client, Publisher, recordingLogger, signal, testConfig } from "../helpers/fixtures.ts";

const TOKEN = "dashboard-token-7f3a9c41e2";

Deno.test("auth: a client without a valid token is closed with 1008; one with it gets the stream", async () => {
  await using nats = await NatsServer.start();
  await using gateway = await startGateway(
    testConfig(nats.url, { GATEWAY_AUTH_TOKENS: `${TOKEN},second-token-0123456789` }),
    { logger: recordingLogger() },
  );
  await using publisher = await Publisher.connect(nats.url);
  await publisher.publish(signal(1));
  const base = `ws://127.0.0.1:${gateway.addr.port}/ws/stream`;

  for (const url of [base, `${base}?token=not-the-token-000000`]) {
    const refused = new Client(new WebSocket(url));
    const close = await refused.closed;
    assert.equal(close.code, 1008);
    assert.equal(close.reason, "unauthorized");
    assert.deepEqual(refused.messages, []);
  }

  await using client = new Client(new WebSocket(`${base}?token=${TOKEN}`));
  assert.deepEqual(await client.waitFor(1), [signal(1)]);
  await publisher.publish(signal(2));
  assert.deepEqual(await client.waitFor(2), [signal(1), signal(2)]);
  assert.equal(gateway.metrics.connectionsRejected.get({ reason: "unauthorized" }), 2);
  // /health stays open for load balancers and orchestrators.
  const health = await fetch(`http://127.0.0.1:${gateway.addr.port}/health`);
  assert.equal(health.status, 200);
  await health.body?.cancel();
});
