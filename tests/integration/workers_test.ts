/**
 * GATEWAY_WORKERS=2 through the real main.ts with the start task's flags: two isolates share
 * one port, each with its own consumer and cache, and the process still looks like one gateway.
 */
import assert from "node:assert/strict";
import { NatsServer } from "../helpers/nats_server.ts";
import { Client, eventually, Publisher, signal } from "../helpers/fixtures.ts";
import { scrape, value } from "../helpers/metrics.ts";
import { GatewayProcess } from "../helpers/process.ts";

const CLIENTS = 24;

Deno.test("workers: two isolates on one port relay everything and report as one gateway", async () => {
  await using nats = await NatsServer.start();
  await using gateway = await GatewayProcess.spawn({ NATS_URL: nats.url, GATEWAY_WORKERS: "2" });
  const addr = await gateway.listening;
  await using publisher = await Publisher.connect(nats.url);
  await publisher.publish(signal(1));
  // last_message_ts stays null until every worker has relayed (and cached) a message.
  await eventually(
    async () =>
      (await (await fetch(`http://127.0.0.1:${addr.port}/health`)).json()).last_message_ts !==
        null,
    "both workers to cache the first message",
  );

  const clients = await Promise.all(Array.from({ length: CLIENTS }, () => Client.open(addr)));
  // Every client, whichever worker took it, gets the cached snapshot, then each message in order.
  await Promise.all(clients.map((c) => c.waitFor(1)));
  await publisher.publish(signal(2));
  await publisher.publish(signal(3));
  for (const client of clients) {
    assert.deepEqual(await client.waitFor(3), [signal(1), signal(2), signal(3)]);
  }

  // Many at once: each answer gathers every worker's report, none mistaken for another's.
  const concurrent = await Promise.all(
    Array.from({ length: 20 }, async () => {
      const r = await fetch(`http://127.0.0.1:${addr.port}/health`);
      return (await r.json()).status;
    }),
  );
  assert.deepEqual(concurrent, Array(20).fill("healthy"));
  const response = await fetch(`http://127.0.0.1:${addr.port}/health`);
  const health = await response.json();
  assert.equal(response.status, 200);
  assert.equal(health.status, "healthy");
  assert.equal(health.connections, CLIENTS);
  assert.equal(health.workers.length, 2);
  assert.equal(
    health.workers.reduce((sum: number, w: { connections: number }) => sum + w.connections, 0),
    CLIENTS,
  );
  // The kernel spreads connections; 24 all landing on one worker would mean no spreading.
  for (const worker of health.workers) assert.ok(worker.connections > 0, JSON.stringify(health));

  const metrics = await scrape(addr);
  assert.equal(value(metrics, "gateway_ws_connections"), CLIENTS);
  assert.equal(value(metrics, "gateway_ws_messages_sent_total"), CLIENTS * 3);
  // Each worker consumes the subject; NATS-side counters count messages, not copies.
  assert.equal(value(metrics, "gateway_messages_relayed_total"), 3);
  assert.equal(value(metrics, "gateway_nats_connected"), 1);

  gateway.kill("SIGTERM");
  const closes = await Promise.all(clients.map((c) => c.closed));
  assert.deepEqual(closes.map((c) => c.code), Array(CLIENTS).fill(1001));
  assert.equal((await gateway.status).code, 0, gateway.output.slice(-2000));
  assert.doesNotMatch(gateway.output, /"level":"error"|Uncaught|panicked/);
});

Deno.test("workers: a NATS outage past the limit stops every worker, exit 1", async () => {
  await using nats = await NatsServer.start();
  await using gateway = await GatewayProcess.spawn({
    NATS_URL: nats.url,
    GATEWAY_WORKERS: "2",
    GATEWAY_NATS_MAX_OUTAGE_MS: "1000",
  });
  const addr = await gateway.listening;
  const clients = await Promise.all(Array.from({ length: 8 }, () => Client.open(addr)));
  await nats.kill();
  await eventually(async () => {
    const response = await fetch(`http://127.0.0.1:${addr.port}/health`).catch(() => undefined);
    await response?.body?.cancel();
    return response?.status === 503;
  }, "health to say unhealthy");
  const closes = await Promise.all(clients.map((c) => c.closed));
  assert.deepEqual(closes.map((c) => c.code), Array(8).fill(1001));
  assert.equal((await gateway.status).code, 1);
  assert.match(gateway.output, /"msg":"gateway cannot go on".*GATEWAY_NATS_MAX_OUTAGE_MS/);
});

Deno.test("workers: a worker that cannot start fails the whole start, exit 1", async () => {
  await using nats = await NatsServer.start();
  // Something else holds the port without SO_REUSEPORT, so no worker can bind it.
  using taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  await using gateway = await GatewayProcess.spawn({
    NATS_URL: nats.url,
    GATEWAY_WORKERS: "2",
    GATEWAY_PORT: String(taken.addr.port),
  });
  assert.equal((await gateway.status).code, 1);
  assert.match(gateway.output, /"msg":"gateway failed to start".*(AddrInUse|in use)/i);
});
