/**
 * Compressed frames (`?encoding=deflate-raw`) end to end: a real gateway, nats-server and Deno
 * WebSockets. A plain and a compressed client of one route get byte-identical payloads once the
 * compressed frames are inflated (node:zlib), over many of the publisher's snapshots, the
 * snapshot on connect and after a reconnect included; a payload that would not shrink comes as a
 * text frame; an unknown encoding is refused with 400 before any upgrade.
 */
import assert from "node:assert/strict";
import { inflateRawSync } from "node:zlib";
import { startGateway } from "../../lib/gateway.ts";
import { SyntheticMarket } from "../../scripts/publisher.ts";
import { NatsServer } from "../../tools/nats_server.ts";
import { Publisher, recordingLogger, testConfig } from "../helpers/fixtures.ts";

/** One frame as received: its kind, its bytes on the wire, and the payload text it carries. */
interface Received {
  readonly binary: boolean;
  readonly wireBytes: number;
  readonly text: string;
}

/** A raw WebSocket client recording frames; binary ones are inflated as raw DEFLATE. */
class FrameRecorder implements AsyncDisposable {
  readonly frames: Received[] = [];
  readonly socket: WebSocket;
  readonly opened: Promise<void>;
  readonly closed: Promise<void>;
  #waiters: { count: number; resolve: () => void }[] = [];

  constructor(url: string) {
    this.socket = new WebSocket(url);
    this.socket.binaryType = "arraybuffer";
    this.opened = new Promise((resolve, reject) => {
      this.socket.addEventListener("open", () => resolve(), { once: true });
      this.socket.addEventListener("error", () => reject(new Error(`cannot open ${url}`)), {
        once: true,
      });
    });
    this.closed = new Promise((resolve) => this.socket.addEventListener("close", () => resolve()));
    this.socket.addEventListener("message", ({ data }) => {
      this.frames.push(
        typeof data === "string"
          ? { binary: false, wireBytes: new TextEncoder().encode(data).length, text: data }
          : {
            binary: true,
            wireBytes: (data as ArrayBuffer).byteLength,
            text: new TextDecoder().decode(inflateRawSync(new Uint8Array(data as ArrayBuffer))),
          },
      );
      this.#waiters = this.#waiters.filter((w) => {
        if (this.frames.length < w.count) return true;
        w.resolve();
        return false;
      });
    });
  }

  /** Resolves once `count` frames have arrived in all; fails after `timeoutMs`. */
  async waitFor(count: number, timeoutMs = 15_000): Promise<Received[]> {
    if (this.frames.length >= count) return this.frames;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      new Promise<void>((resolve) => this.#waiters.push({ count, resolve })),
      new Promise<void>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`got ${this.frames.length} of ${count} frames`)),
          timeoutMs,
        );
      }),
    ]).finally(() => clearTimeout(timer));
    return this.frames;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (this.socket.readyState <= WebSocket.OPEN) this.socket.close();
    await this.closed;
  }
}

async function open(url: string): Promise<FrameRecorder> {
  const recorder = new FrameRecorder(url);
  await recorder.opened;
  return recorder;
}

/** The publisher's snapshots (scripts/publisher.ts), repeatable. */
function snapshots(count: number): string[] {
  let seed = 7;
  const market = new SyntheticMarket(() => ((seed = (seed * 16807) % 2147483647) / 2147483647));
  return Array.from(
    { length: count },
    (_, i) => JSON.stringify(market.next(1_733_000_000_000 + i)),
  );
}

Deno.test("compression: plain and compressed clients get byte-identical payloads, reconnect included", async () => {
  await using nats = await NatsServer.start();
  await using publisher = await Publisher.connect(nats.url);
  await using gateway = await startGateway(testConfig(nats.url), { logger: recordingLogger() });
  const base = `ws://127.0.0.1:${gateway.addr.port}/ws/stream`;
  const payloads = snapshots(201);
  await publisher.publish(payloads[0]);
  // The cache seeded from the stream: the snapshot on connect, in either encoding.
  await using plain = await open(`${base}?encoding=text`);
  await using compressed = await open(`${base}?encoding=deflate-raw`);
  await plain.waitFor(1);
  await compressed.waitFor(1);
  for (const payload of payloads.slice(1, 101)) await publisher.publish(payload);
  await plain.waitFor(101);
  await compressed.waitFor(101);

  // A reconnect: the cached latest first, compressed, then what follows.
  await compressed[Symbol.asyncDispose]();
  await using again = await open(`${base}?encoding=deflate-raw`);
  await again.waitFor(1);
  for (const payload of payloads.slice(101)) await publisher.publish(payload);
  await plain.waitFor(201);
  await again.waitFor(101);

  const texts = (frames: Received[]) => frames.map((f) => f.text);
  assert.deepEqual(texts(plain.frames), payloads);
  assert.deepEqual(texts(compressed.frames), payloads.slice(0, 101));
  assert.deepEqual(texts(again.frames), payloads.slice(100));
  assert.ok(plain.frames.every((f) => !f.binary));
  assert.ok([...compressed.frames, ...again.frames].every((f) => f.binary));
  const sum = (frames: Received[]) => frames.reduce((total, f) => total + f.wireBytes, 0);
  const ratio = sum(compressed.frames) / sum(plain.frames.slice(0, 101));
  assert.ok(ratio < 0.3, `compressed frames are ${ratio.toFixed(3)} of the text`);

  // Bytes sent count what was queued: text for one client, compressed for the other.
  const metrics = await (await fetch(`http://127.0.0.1:${gateway.addr.port}/metrics`)).text();
  const sent = Number(
    /^gateway_ws_sent_bytes_total\{route="\/ws\/stream"\} (\d+)/m.exec(metrics)![1],
  );
  assert.equal(sent, sum(plain.frames) + sum(compressed.frames) + sum(again.frames));
});

Deno.test("compression: a payload that would not shrink reaches a compressed client as text", async () => {
  await using nats = await NatsServer.start();
  await using publisher = await Publisher.connect(nats.url);
  await using gateway = await startGateway(testConfig(nats.url), { logger: recordingLogger() });
  await using client = await open(
    `ws://127.0.0.1:${gateway.addr.port}/ws/stream?encoding=deflate-raw`,
  );
  const tiny = '{"ts":1}'; // raw DEFLATE of 8 bytes is 10
  const big = snapshots(1)[0];
  await publisher.publish(tiny);
  await publisher.publish(big);
  const frames = await client.waitFor(2);
  assert.deepEqual(frames.map((f) => [f.binary, f.text]), [[false, tiny], [true, big]]);
});

Deno.test("compression: an unknown encoding gets 400 before the upgrade, counted", async () => {
  await using nats = await NatsServer.start();
  const logger = recordingLogger();
  await using gateway = await startGateway(testConfig(nats.url), { logger });
  const origin = `http://127.0.0.1:${gateway.addr.port}`;
  const response = await fetch(`${origin}/ws/stream?encoding=gzip`, {
    headers: {
      upgrade: "websocket",
      connection: "Upgrade",
      "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
      "sec-websocket-version": "13",
    },
  });
  assert.equal(response.status, 400);
  assert.equal(await response.text(), 'unknown encoding "gzip": use text or deflate-raw\n');
  // A WebSocket asking for it never opens.
  const socket = new WebSocket(`ws://127.0.0.1:${gateway.addr.port}/ws/stream?encoding=br`);
  const outcome = await new Promise<string>((resolve) => {
    socket.onopen = () => resolve("open");
    socket.onerror = () => resolve("error");
  });
  assert.equal(outcome, "error");
  await new Promise<void>((resolve) => {
    if (socket.readyState === WebSocket.CLOSED) resolve();
    else socket.onclose = () => resolve();
  });
  const metrics = await (await fetch(`${origin}/metrics`)).text();
  assert.match(metrics, /^gateway_ws_connections_rejected_total\{reason="bad_request"\} 2$/m);
  assert.ok(
    logger.lines.some((l) => l.msg === "websocket upgrade with an unknown encoding refused"),
  );
});
