/**
 * When the gateway sheds, against a real gateway and NATS: a backlog that shrinks as it is
 * handled (a publisher's burst, the burst after the process was stalled) reaches every client
 * whole; a backlog that keeps growing (more work per message than the process can do) is shed:
 * clients skip to the newest, in order, and nothing older than what they hold ever arrives.
 */
import assert from "node:assert/strict";
import { startGateway } from "../../lib/gateway.ts";
import { NatsServer } from "../../tools/nats_server.ts";
import { scrape, value } from "../helpers/metrics.ts";
import { GatewayProcess } from "../../tools/gateway_process.ts";
import {
  Client,
  eventually,
  Publisher,
  recordingLogger,
  signal,
  testConfig,
} from "../helpers/fixtures.ts";

const BURST = 60;
const CLIENTS = 3;

/** Blocks this process's event loop (gateway and clients alike) for `ms`. */
function blockLoop(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    // busy: nothing else runs
  }
}

/** Publishes `count` snapshots without waiting between them, so NATS delivers them in a batch. */
async function burst(publisher: Publisher, from: number, count: number): Promise<void> {
  for (let seq = from; seq < from + count; seq++) {
    publisher.nc.publish("levels.signals", signal(seq));
  }
  await publisher.nc.flush();
}

function seqs(client: Client): number[] {
  return client.messages.map((m) => JSON.parse(m).seq as number);
}

function assertIncreasing(seen: number[]): void {
  assert.ok(seen.every((s, i) => i === 0 || s > seen[i - 1]), `in order: ${seen}`);
}

Deno.test("a burst on a gateway that keeps up reaches every client whole", async () => {
  await using nats = await NatsServer.start();
  await using gateway = await startGateway(testConfig(nats.url), { logger: recordingLogger() });
  await using publisher = await Publisher.connect(nats.url);
  await publisher.publish(signal(0));
  const clients = await Promise.all(
    Array.from({ length: CLIENTS }, () => Client.open(gateway.addr)),
  );
  for (const client of clients) await client.waitFor(1);
  for (let round = 0; round < 3; round++) await burst(publisher, 1 + round * BURST, BURST);
  const all = Array.from({ length: 3 * BURST + 1 }, (_, i) => i);
  for (const client of clients) {
    await client.waitFor(all.length);
    assert.deepEqual(seqs(client), all);
  }
  assert.equal(gateway.metrics.conflations.get(), 0);
  await Promise.all(clients.map((c) => c.close()));
});

Deno.test("the burst after the process was stalled reaches every client whole", async () => {
  await using nats = await NatsServer.start();
  // Its own process, so that it can be stopped as a busy machine deschedules it.
  await using gateway = await GatewayProcess.spawn({ NATS_URL: nats.url });
  const addr = await gateway.listening;
  const pid = await gateway.gatewayPid();
  await using publisher = await Publisher.connect(nats.url);
  await publisher.publish(signal(0));
  const clients = await Promise.all(Array.from({ length: CLIENTS }, () => Client.open(addr)));
  for (const client of clients) await client.waitFor(1);
  Deno.kill(pid, "SIGSTOP");
  try {
    await burst(publisher, 1, BURST);
    await new Promise((resolve) => setTimeout(resolve, 400)); // the stall: what is tested
  } finally {
    Deno.kill(pid, "SIGCONT");
  }
  const all = Array.from({ length: BURST + 1 }, (_, i) => i);
  for (const client of clients) {
    await client.waitFor(all.length);
    assert.deepEqual(seqs(client), all);
  }
  const metrics = await scrape(addr);
  assert.equal(value(metrics, "gateway_slow_client_conflations_total"), 0);
  assert.equal(
    value(metrics, "gateway_nats_messages_skipped_total", { reason: "behind" }),
    0,
  );
  await Promise.all(clients.map((c) => c.close()));
});

Deno.test("a backlog that keeps growing is shed: clients skip to the newest, in order", async () => {
  const logger = recordingLogger();
  await using nats = await NatsServer.start();
  await using gateway = await startGateway(testConfig(nats.url), { logger });
  await using publisher = await Publisher.connect(nats.url);
  await publisher.publish(signal(0));
  const clients = await Promise.all(
    Array.from({ length: CLIENTS }, () => Client.open(gateway.addr)),
  );
  for (const client of clients) await client.waitFor(1);
  // Each message now costs the process 3 × 4 ms of work (clients in this isolate that take
  // long to handle a frame): at most ~80 messages/s, while ~300/s are published.
  for (const client of clients) client.socket.addEventListener("message", () => blockLoop(4));
  const MESSAGES = 600;
  const start = performance.now();
  for (let seq = 1; seq <= MESSAGES;) {
    const due = Math.min(MESSAGES, Math.floor((performance.now() - start) * 0.3));
    while (seq <= due) publisher.nc.publish("levels.signals", signal(seq++));
    await publisher.nc.flush();
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  for (const client of clients) {
    await eventually(() => seqs(client).at(-1) === MESSAGES, "the newest snapshot", 30_000);
    const seen = seqs(client);
    assertIncreasing(seen);
    // Relayed in order while the backlog was judged, then skipped to the newest: most of the
    // 600 never reached anyone (all of them would have without shedding, seconds late).
    assert.ok(seen.length < MESSAGES / 2, `most of the backlog shed: got ${seen.length}`);
  }
  const skipped = gateway.metrics.messagesSkipped.get({ route: "/ws/stream", reason: "behind" });
  assert.ok(skipped > MESSAGES / 2, `skipped as behind: ${skipped}`);
  assert.ok(logger.lines.some((l) => String(l.msg).startsWith("route behind its stream")));
  await eventually(
    () => logger.lines.some((l) => l.msg === "route caught up with its stream"),
    "the route to say it caught up",
  );
  await Promise.all(clients.map((c) => c.close()));
});
