/**
 * The count bound (GATEWAY_CLIENT_MAX_QUEUED_SNAPSHOTS, default 4) against a real gateway: a
 * burst on a gateway that keeps up reaches every client whole; while the gateway's loop is
 * behind, a burst gives each client at most the bound's worth of old snapshots, then the newest.
 */
import assert from "node:assert/strict";
import { startGateway } from "../../lib/gateway.ts";
import { NatsServer } from "../helpers/nats_server.ts";
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
    // busy: nothing else runs, as when the gateway is overloaded
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

Deno.test("a burst on a gateway that keeps up reaches every client whole (count bound on)", async () => {
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

Deno.test("while the gateway is behind, a burst gives each client at most 4 queued, then the newest", async () => {
  const logger = recordingLogger();
  await using nats = await NatsServer.start();
  await using gateway = await startGateway(testConfig(nats.url), { logger });
  await using publisher = await Publisher.connect(nats.url);
  await publisher.publish(signal(0));
  const clients = await Promise.all(
    Array.from({ length: CLIENTS }, () => Client.open(gateway.addr)),
  );
  for (const client of clients) await client.waitFor(1);

  blockLoop(300); // the loop's next tick is 300 ms late: the gateway is behind for a second
  await eventually(
    () => logger.lines.some((l) => String(l.msg).startsWith("gateway behind")),
    "the gateway to say it is behind",
  );
  await burst(publisher, 1, BURST);
  blockLoop(150); // the whole burst waits in the NATS socket, as under overload
  for (const client of clients) {
    await eventually(() => client.messages.at(-1) === signal(BURST), "the newest snapshot");
    const seen = seqs(client);
    // Strictly increasing, ends with the newest, and most of the burst was never queued: the
    // bound's worth (4) before each conflation, then the newest. NATS may hand the burst over
    // in more than one read, with a drain between them (seen: 0-4, 35-39, 60), so a client can
    // be given the newest more than once; without the bound it would get all 61.
    assert.ok(seen.every((s, i) => i === 0 || s > seen[i - 1]), `in order: ${seen}`);
    assert.ok(seen.length <= 1 + BURST / 3, `most of the burst conflated: ${seen}`);
  }
  assert.ok(gateway.metrics.conflations.get() > 0);
  await eventually(
    () => logger.lines.some((l) => l.msg === "gateway caught up"),
    "the gateway to say it caught up",
  );
  await Promise.all(clients.map((c) => c.close()));
});
