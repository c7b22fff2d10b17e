/** Bad input from NATS and from clients: skipped or closed, counted, never a crash. */
import assert from "node:assert/strict";
import { startGateway } from "../../lib/gateway.ts";
import { NatsServer } from "../../tools/nats_server.ts";
import {
  Client,
  eventually,
  Publisher,
  recordingLogger,
  signal,
  testConfig,
} from "../helpers/fixtures.ts";
import { RawPeer } from "../helpers/raw_ws.ts";

/** A small deterministic PRNG, so a failing fuzz case can be replayed from its seed. */
function prng(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const encoder = new TextEncoder();
const FUZZ_CASES = 3000;
const SEED = Number(Deno.env.get("FUZZ_SEED") ?? 20261126);

/** Random bytes, mutated valid payloads, truncations, non-objects, oversize and empty ones. */
function fuzzPayload(random: () => number, n: number): Uint8Array {
  const valid = encoder.encode(
    signal(n, { note: "ünïcödé ✓", nested: { a: [1, 2, { b: null }] } }),
  );
  switch (Math.floor(random() * 8)) {
    case 0:
      return crypto.getRandomValues(new Uint8Array(Math.floor(random() * 300)));
    case 1: { // flip a few bytes
      const copy = valid.slice();
      for (let i = 0; i < 1 + random() * 4; i++) {
        copy[Math.floor(random() * copy.length)] = Math.floor(random() * 256);
      }
      return copy;
    }
    case 2:
      return valid.slice(0, Math.floor(random() * valid.length));
    case 3:
      return encoder.encode(
        [
          "[]",
          "null",
          "true",
          "1e309",
          '"s"',
          "[{}]",
          "{",
          "}",
          "{}}",
          " ",
        ][Math.floor(random() * 10)],
      );
    case 4:
      return new Uint8Array(
        [0xc0, 0x80, 0xed, 0xa0, 0x80, 0xf8].slice(0, 1 + Math.floor(random() * 6)),
      );
    case 5:
      return new Uint8Array(0);
    case 6:
      return encoder.encode(
        JSON.stringify({ big: "x".repeat(5000 + Math.floor(random() * 5000)) }),
      );
    default:
      return valid;
  }
}

function isJsonObject(bytes: Uint8Array): boolean {
  try {
    const text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    const value = JSON.parse(text);
    return value !== null && typeof value === "object" && !Array.isArray(value);
  } catch {
    return false;
  }
}

Deno.test(`fuzz: ${FUZZ_CASES} random and mutated NATS payloads never reach a client or crash the relay`, async () => {
  await using nats = await NatsServer.start();
  await using gateway = await startGateway(
    // The client shares this isolate: its own work ages its queue, and the age bound would
    // conflate it by design (tests/unit/broadcaster_queue_age_test.ts); this test checks every
    // valid payload arrives intact.
    testConfig(nats.url, {
      GATEWAY_MAX_PAYLOAD_BYTES: "4096",
      GATEWAY_CLIENT_MAX_QUEUE_MS: "0",
    }),
    { logger: recordingLogger() },
  );
  await using publisher = await Publisher.connect(nats.url);
  await using client = await Client.open(gateway.addr);
  const random = prng(SEED);
  const relayable: string[] = [];
  for (let i = 0; i < FUZZ_CASES; i += 50) {
    const batch = Array.from({ length: 50 }, (_, j) => fuzzPayload(random, i + j));
    await Promise.all(batch.map((p) => publisher.publish(p)));
    for (const p of batch) {
      if (p.length > 0 && p.length <= 4096 && isJsonObject(p)) {
        relayable.push(new TextDecoder().decode(p));
      }
    }
  }
  const last = signal(999_999);
  await publisher.publish(last);
  relayable.push(last);
  assert.deepEqual(await client.waitFor(relayable.length, 30_000), relayable, `seed ${SEED}`);
  const m = gateway.metrics;
  const invalid = ["empty", "too_large", "invalid_utf8", "invalid_json", "not_object"]
    .reduce((sum, reason) => sum + m.invalidPayloads.get({ reason }), 0);
  assert.equal(invalid, FUZZ_CASES + 1 - relayable.length);
  assert.equal(m.messagesRelayed.get(), relayable.length);
  assert.equal(gateway.metrics.messagesReceived.get(), FUZZ_CASES + 1);
  console.log(
    `fuzz: ${FUZZ_CASES} payloads (seed ${SEED}), ${
      relayable.length - 1
    } valid, ${invalid} skipped`,
  );
});

Deno.test("fuzz: random client frames close only the offending clients, relay goes on", async () => {
  await using nats = await NatsServer.start();
  await using gateway = await startGateway(testConfig(nats.url), { logger: recordingLogger() });
  await using publisher = await Publisher.connect(nats.url);
  await using good = await Client.open(gateway.addr);
  const random = prng(SEED);
  const peers: RawPeer[] = [];
  for (let i = 0; i < 60; i++) {
    const peer = await RawPeer.connect(gateway.addr);
    assert.equal(peer.response.status, 101);
    peers.push(peer);
    const frames = 1 + Math.floor(random() * 30);
    for (let f = 0; f < frames; f++) {
      const opcode = [0x1, 0x2, 0x0, 0x9, 0xa, 0x3, 0xb, 0x1][Math.floor(random() * 8)];
      const payload = crypto.getRandomValues(new Uint8Array(Math.floor(random() * 6000)));
      await peer.sendFrame(opcode, payload, random() > 0.1).catch(() => {});
    }
  }
  // Garbage straight after the handshake, too.
  for (let i = 0; i < 20; i++) {
    const peer = await RawPeer.connect(gateway.addr);
    peers.push(peer);
    await peer.conn.write(crypto.getRandomValues(new Uint8Array(1 + Math.floor(random() * 2000))))
      .catch(() => 0);
  }
  await publisher.publish(signal(1));
  assert.deepEqual(await good.waitFor(1), [signal(1)]);
  const closedCount = () =>
    ["protocol", "client"].reduce(
      (sum, reason) => sum + gateway.metrics.connectionsClosed.get({ reason }),
      0,
    );
  await eventually(() => closedCount() >= 60, "fuzzing clients to be closed");
  for (const peer of peers) peer.close();
  assert.equal(good.socket.readyState, WebSocket.OPEN);
  await publisher.publish(signal(2));
  assert.deepEqual(await good.waitFor(2), [signal(1), signal(2)]);
});

Deno.test("malformed upgrade requests get a 4xx, never a crash", async () => {
  await using nats = await NatsServer.start();
  await using gateway = await startGateway(testConfig(nats.url), { logger: recordingLogger() });
  const { hostname, port } = gateway.addr;
  const host = `Host: ${hostname}:${port}\r\n`;
  const requests = [
    `GET /ws/stream HTTP/1.1\r\n${host}\r\n`,
    `GET /ws/stream HTTP/1.1\r\n${host}Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n`,
    `GET /ws/stream HTTP/1.1\r\n${host}Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n`,
    `GET /ws/stream HTTP/1.1\r\n${host}Upgrade: h2c\r\nConnection: Upgrade\r\nSec-WebSocket-Key: x\r\n\r\n`,
    `POST /ws/stream HTTP/1.1\r\n${host}Content-Length: 0\r\n\r\n`,
    `GET /ws/stream HTTP/1.1\r\n${host}Upgrade: websocket\r\nConnection: keep-alive\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`,
    `BREW /ws/stream HTCPCP/1.0\r\n\r\n`,
  ];
  for (const request of requests) {
    await using peer = await RawPeer.connect(gateway.addr, request);
    assert.ok(
      peer.response.status >= 400 && peer.response.status < 500,
      `${JSON.stringify(request)} → ${peer.response.head.split("\r\n")[0]}`,
    );
  }
  await using client = await Client.open(gateway.addr);
  assert.equal(client.socket.readyState, WebSocket.OPEN);
});

Deno.test("past the connection limit new clients get 503; existing ones are unaffected", async () => {
  await using nats = await NatsServer.start();
  await using gateway = await startGateway(
    testConfig(nats.url, { GATEWAY_MAX_CONNECTIONS: "3" }),
    { logger: recordingLogger() },
  );
  await using publisher = await Publisher.connect(nats.url);
  const clients = await Promise.all(Array.from({ length: 3 }, () => Client.open(gateway.addr)));
  await using refused = await RawPeer.connect(gateway.addr);
  assert.equal(refused.response.status, 503);
  assert.match(refused.response.head, /retry-after: 5/i);
  await publisher.publish(signal(1));
  for (const client of clients) assert.deepEqual(await client.waitFor(1), [signal(1)]);
  await clients[0].close();
  await eventually(() => gateway.metrics.connections.get() === 2, "a free slot");
  await using admitted = await Client.open(gateway.addr);
  assert.deepEqual(await admitted.waitFor(1), [signal(1)]);
  await Promise.all(clients.map((c) => c.close()));
});

Deno.test("half-open connections (no pong) are reaped and counted", async () => {
  await using nats = await NatsServer.start();
  await using gateway = await startGateway(
    testConfig(nats.url, { GATEWAY_IDLE_TIMEOUT_S: "1" }),
    { logger: recordingLogger() },
  );
  await using alive = await Client.open(gateway.addr);
  await using silent = await RawPeer.connect(gateway.addr);
  assert.equal(silent.response.status, 101);
  await eventually(
    () => gateway.metrics.connectionsClosed.get({ reason: "idle_timeout" }) === 1,
    "the silent peer to be reaped",
    10_000,
  );
  assert.equal(gateway.metrics.connections.get(), 1);
  assert.equal(alive.socket.readyState, WebSocket.OPEN, "a client that answers pings stays");
});
