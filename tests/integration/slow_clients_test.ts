/** Slow and stalled clients: bounded memory, conflation, 4008, fast clients unaffected. */
import assert from "node:assert/strict";
import { NatsServer } from "../helpers/nats_server.ts";
import { scrape, value } from "../helpers/metrics.ts";
import { Client, eventually, Publisher } from "../helpers/fixtures.ts";
import { GatewayProcess } from "../helpers/process.ts";
import { RawPeer } from "../helpers/raw_ws.ts";
import { levelsSignal } from "../helpers/signals.ts";

const NORMAL = 10;
const STALLED = 12;
const MESSAGES = 3000;

async function rssBytes(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) * 1024;
}

async function metric(addr: Deno.NetAddr, name: string): Promise<number> {
  return value(await scrape(addr), name);
}

Deno.test("stalled clients are bounded, conflated and closed; normal clients get everything", async () => {
  await using nats = await NatsServer.start();
  await using gateway = await GatewayProcess.spawn({
    NATS_URL: nats.url,
    GATEWAY_SLOW_CLIENT_TIMEOUT_MS: "1500",
    // Published 4 at a time: on a loaded CI machine the gateway can fall behind, and normal
    // clients with 4+ unwritten snapshots, or one older than 100 ms, are then conflated by design
    // (the count and age bounds: tests/integration/overload_test.ts, tests/unit/loop_lag_test.ts);
    // this test is about the byte bound.
    GATEWAY_CLIENT_MAX_QUEUE_MS: "3000",
    GATEWAY_CLIENT_MAX_QUEUED_SNAPSHOTS: "0",
  });
  const addr = await gateway.listening;
  await using publisher = await Publisher.connect(nats.url);
  const normal = await Promise.all(Array.from({ length: NORMAL }, () => Client.open(addr)));
  const stalled = await Promise.all(Array.from({ length: STALLED }, () => RawPeer.connect(addr)));
  for (const peer of stalled) assert.equal(peer.response.status, 101);
  const rssBefore = await rssBytes(await gateway.gatewayPid());

  const payloads = Array.from({ length: MESSAGES }, (_, i) => levelsSignal(i));
  // A high but sustainable rate (~400 msg/s, 3.3 MB/s per client): normal clients keep up.
  for (let i = 0; i < MESSAGES; i += 4) {
    await Promise.all(payloads.slice(i, i + 4).map((p) => publisher.publish(p)));
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  for (const client of normal) {
    const received = await client.waitFor(MESSAGES, 60_000);
    assert.equal(received.length, MESSAGES);
    for (let i = 0; i < MESSAGES; i++) {
      if (received[i] !== payloads[i]) assert.fail(`client got message ${i} out of order`);
    }
  }
  const rssAfter = await rssBytes(await gateway.gatewayPid());
  const growth = rssAfter - rssBefore;
  // Unbounded, each stalled client would hold ~(MESSAGES × 8 KB − kernel buffers) ≈ 14+ MB.
  assert.ok(growth < 60 * 1024 * 1024, `gateway RSS grew by ${(growth / 1048576).toFixed(1)} MB`);
  assert.ok(await metric(addr, "gateway_slow_client_conflations_total") > 0);
  await eventually(
    async () => (await metric(addr, "gateway_slow_client_disconnects_total")) === STALLED,
    "every stalled client to be closed as a slow consumer",
  );
  assert.equal(await metric(addr, "gateway_ws_connections"), NORMAL);
  console.log(
    `slow clients: ${NORMAL} normal + ${STALLED} stalled, ${MESSAGES} × ${
      payloads[0].length
    } B; RSS ${(rssBefore / 1048576).toFixed(1)} → ${(rssAfter / 1048576).toFixed(1)} MB`,
  );
  for (const peer of stalled) peer.close();
  await Promise.all(normal.map((c) => c.close()));
});
