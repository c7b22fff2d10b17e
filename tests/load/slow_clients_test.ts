/** Slow and stalled clients: bounded memory, conflation, 4008, fast clients unaffected. */
import assert from "node:assert/strict";
import { NatsServer } from "../../tools/nats_server.ts";
import { scrape, value } from "../helpers/metrics.ts";
import { Client, eventually, Publisher } from "../helpers/fixtures.ts";
import { GatewayProcess } from "../../tools/gateway_process.ts";
import { RawPeer } from "../helpers/raw_ws.ts";
import { levelsSignal } from "../../tools/signals.ts";

const NORMAL = 10;
const STALLED = 12;
const MESSAGES = 3000;
const CLIENT_BUFFER_BYTES = 256 * 1024;
/**
 * The publisher stays at most this many messages (plus the batch of 4 in flight) ahead of the
 * slowest normal client: 20 × ~8.3 KB ≈ 166 KB, under the byte bound, so however busy the
 * machine, a normal client never has its bound's worth unread and must get every message. The
 * load follows what the machine carries instead of a fixed rate a busy machine cannot keep.
 */
const WINDOW = 16;
/** RSS is sampled this often while messages flow; the peak is what is bounded. */
const RSS_SAMPLE_MS = 50;

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
    GATEWAY_CLIENT_BUFFER_BYTES: String(CLIENT_BUFFER_BYTES),
    // The byte bound alone (this test is about it): no age bound, which a stall of the test's
    // own isolate (where the normal clients read) could trip for a normal client
    // (tests/unit/broadcaster_queue_age_test.ts and tests/load/isolation_test.ts cover it).
    GATEWAY_CLIENT_MAX_QUEUE_MS: "0",
  });
  const addr = await gateway.listening;
  await using publisher = await Publisher.connect(nats.url);
  const normal = await Promise.all(Array.from({ length: NORMAL }, () => Client.open(addr)));
  const stalled = await Promise.all(Array.from({ length: STALLED }, () => RawPeer.connect(addr)));
  for (const peer of stalled) assert.equal(peer.response.status, 101);
  const pid = await gateway.gatewayPid();
  const rssBefore = await rssBytes(pid);
  let rssPeak = rssBefore;
  let sampling = true;
  // Rejects (the gateway is gone) only once awaited below, with the gateway's output.
  const sampler = (async () => {
    while (sampling) {
      rssPeak = Math.max(rssPeak, await rssBytes(pid));
      await new Promise((resolve) => setTimeout(resolve, RSS_SAMPLE_MS));
    }
  })();
  sampler.catch(() => (sampling = false));

  const payloads = Array.from({ length: MESSAGES }, (_, i) => levelsSignal(i));
  const payloadBytes = payloads[0].length;
  for (let i = 0; i < MESSAGES; i += 4) {
    // Paced by the normal clients' progress (an event), never by a timer.
    await Promise.all(normal.map((c) => c.waitFor(i - WINDOW, 60_000)));
    await Promise.all(payloads.slice(i, i + 4).map((p) => publisher.publish(p)));
  }
  for (const client of normal) {
    const received = await client.waitFor(MESSAGES, 60_000);
    // Every message, once each, in order, the newest last: nothing conflated for a reader.
    assert.equal(client.messages.length, MESSAGES);
    for (let i = 0; i < MESSAGES; i++) {
      if (received[i] !== payloads[i]) assert.fail(`client got message ${i} out of order`);
    }
    assert.equal(client.messages.at(-1), payloads.at(-1));
  }
  sampling = false;
  await sampler.catch((err) => assert.fail(`${err}; the gateway said:\n${gateway.output}`));
  const rssAfter = await rssBytes(pid);
  const growth = Math.max(rssPeak, rssAfter) - rssBefore;
  // Bounded, the gateway holds per stalled client at most its byte bound plus the newest
  // payload it owes (12 × ~264 KB ≈ 3 MB) and per normal client the window (10 × ~166 KB); the
  // rest of the allowance is V8's heap growing under ~25 MB of payloads passing through.
  // Unbounded, each stalled client would hold every message sent it until its 4008
  // (thousands × 8 KB, less what the kernel buffers): hundreds of MB across 12.
  const bound = 60 * 1024 * 1024;
  assert.ok(
    growth < bound,
    `gateway RSS grew by ${(growth / 1048576).toFixed(1)} MB at its peak`,
  );
  assert.ok(await metric(addr, "gateway_slow_client_conflations_total") > 0);
  await eventually(
    async () => (await metric(addr, "gateway_slow_client_disconnects_total")) === STALLED,
    "every stalled client to be closed as a slow consumer",
  );
  assert.equal(await metric(addr, "gateway_ws_connections"), NORMAL);
  console.log(
    `slow clients: ${NORMAL} normal + ${STALLED} stalled, ${MESSAGES} × ${payloadBytes} B; RSS ${
      (rssBefore / 1048576).toFixed(1)
    } → peak ${(rssPeak / 1048576).toFixed(1)} → ${(rssAfter / 1048576).toFixed(1)} MB`,
  );
  for (const peer of stalled) peer.close();
  await Promise.all(normal.map((c) => c.close()));
});
