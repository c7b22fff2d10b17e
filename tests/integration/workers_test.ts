/**
 * GATEWAY_WORKERS=2 through the real main.ts with the start task's flags: two isolates share
 * one port, each with its own consumer and cache, and the process still looks like one gateway.
 */
import assert from "node:assert/strict";
import { NatsServer } from "../helpers/nats_server.ts";
import { Client, eventually, health, Publisher, signal } from "../helpers/fixtures.ts";
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
    async () => (await health(addr)).body.last_message_ts !== null,
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
    Array.from({ length: 20 }, async () => (await health(addr)).body.status),
  );
  assert.deepEqual(concurrent, Array(20).fill("healthy"));
  const { status, body } = await health(addr);
  assert.equal(status, 200);
  assert.equal(body.status, "healthy");
  assert.equal(body.connections, CLIENTS);
  const workers = body.workers ?? [];
  assert.equal(workers.length, 2);
  assert.equal(workers.reduce((sum, w) => sum + w.connections, 0), CLIENTS);
  // The kernel spreads connections; 24 all landing on one worker would mean no spreading.
  for (const worker of workers) assert.ok(worker.connections > 0, JSON.stringify(body));

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
  // The process may already be gone by the time a request lands: that is not a 503 yet.
  await eventually(
    async () => (await health(addr).catch(() => undefined))?.status === 503,
    "health to say unhealthy",
  );
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
