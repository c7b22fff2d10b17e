import assert from "node:assert/strict";
import { Broadcaster } from "../../lib/relay/broadcaster.ts";
import { CloseCode } from "../../lib/close_codes.ts";
import { inflateRawSync } from "node:zlib";
import { FakeSocket } from "../helpers/fake_socket.ts";

/**
 * A broadcaster on a fake clock whose drain ticks the test runs itself (`tick`): what a tick
 * does is asserted at once, never after a sleep a busy machine could outlast.
 */
function broadcaster(overrides: Partial<ConstructorParameters<typeof Broadcaster>[0]> = {}) {
  let now = 0;
  let drainTick: (() => void) | undefined;
  const counts = { delivered: 0, bytes: 0, conflated: 0, slowClosed: 0, sendFailed: 0 };
  const b = new Broadcaster(
    {
      clientBufferBytes: 100,
      slowClientTimeoutMs: 1000,
      drainCheckMs: 20,
      now: () => now,
      setInterval: (tick) => (drainTick = tick),
      clearInterval: () => (drainTick = undefined),
      ...overrides,
    },
    {
      delivered: (n, bytes) => {
        counts.delivered += n;
        counts.bytes += bytes;
      },
      conflated: () => counts.conflated++,
      slowClientClosed: () => counts.slowClosed++,
      sendFailed: () => counts.sendFailed++,
    },
  );
  return {
    b,
    counts,
    advance: (ms: number) => (now += ms),
    /** Runs one drain check, as the interval would every `drainCheckMs`. */
    tick: () => drainTick?.(),
    /** Whether a drain check is scheduled (some client is behind). */
    ticking: () => drainTick !== undefined,
  };
}

Deno.test("broadcast sends the same payload to every client, in order", () => {
  const { b, counts } = broadcaster();
  const sockets = [new FakeSocket(), new FakeSocket(), new FakeSocket()];
  sockets.forEach((s) => b.add(s));
  b.broadcast('{"a":1}');
  b.broadcast('{"a":2}');
  for (const s of sockets) assert.deepEqual(s.sent, ['{"a":1}', '{"a":2}']);
  assert.equal(counts.delivered, 6);
  assert.equal(counts.bytes, 6 * 7);
});

Deno.test("a send that throws removes only that client", () => {
  const { b, counts } = broadcaster();
  const good = new FakeSocket();
  const bad = new FakeSocket();
  b.add(good);
  b.add(bad);
  bad.failWith = new Error("broken pipe");
  b.broadcast("{}");
  assert.equal(b.size, 1);
  assert.equal(counts.sendFailed, 1);
  assert.equal(b.removalReason(bad), "send_error");
  b.broadcast('{"b":1}');
  assert.deepEqual(good.sent, ["{}", '{"b":1}']);
});

Deno.test("a closed socket is dropped at the next broadcast", () => {
  const { b } = broadcaster();
  const gone = new FakeSocket();
  b.add(gone);
  gone.readyState = 3;
  b.broadcast("{}");
  assert.equal(b.size, 0);
  assert.deepEqual(gone.sent, []);
});

Deno.test("a new client receives the cached latest payload first", () => {
  const { b } = broadcaster();
  const early = new FakeSocket();
  b.add(early);
  b.broadcast('{"n":1}');
  b.broadcast('{"n":2}');
  const late = new FakeSocket();
  b.add(late);
  b.broadcast('{"n":3}');
  assert.deepEqual(late.sent, ['{"n":2}', '{"n":3}']);
  assert.equal(b.latest, '{"n":3}');
});

Deno.test("a client added before any message gets nothing until the first", () => {
  const { b } = broadcaster();
  const s = new FakeSocket();
  b.add(s);
  assert.deepEqual(s.sent, []);
  b.seed('{"seeded":true}');
  const next = new FakeSocket();
  b.add(next);
  assert.deepEqual(next.sent, ['{"seeded":true}']);
  assert.deepEqual(s.sent, [], "seeding never sends to connected clients");
});

Deno.test("remove is idempotent and adding twice keeps one entry", () => {
  const { b } = broadcaster();
  const s = new FakeSocket();
  b.add(s);
  b.add(s);
  assert.equal(b.size, 1);
  assert.equal(b.remove(s), true);
  assert.equal(b.remove(s), false);
  assert.equal(b.size, 0);
  b.broadcast("{}");
  assert.deepEqual(s.sent, []);
});

Deno.test("a client over its buffer bound is conflated to the newest payload", () => {
  const { b, counts, tick, ticking } = broadcaster({ clientBufferBytes: 25 });
  const slow = new FakeSocket();
  const fast = new FakeSocket();
  b.add(slow);
  b.add(fast);
  slow.stalled = true;
  for (let i = 0; i < 10; i++) b.broadcast(`{"n":${i},"pad":"xxxx"}`);
  // One frame goes out (the queue was empty); the rest wait, superseded by each newer one.
  assert.equal(slow.sent.length, 1);
  assert.ok(slow.bufferedAmount <= 25 + 20);
  assert.equal(fast.sent.length, 10);
  assert.equal(counts.conflated, 8);
  assert.ok(ticking(), "a client behind is checked for room");
  tick(); // still no room: nothing more goes out
  assert.equal(slow.sent.length, 1);
  slow.drain();
  tick();
  assert.deepEqual(slow.sent, ['{"n":0,"pad":"xxxx"}', '{"n":9,"pad":"xxxx"}']);
  assert.ok(!ticking(), "nobody behind: the check stops");
  b.broadcast('{"n":10}');
  assert.equal(slow.sent.at(-1), '{"n":10}');
  b.closeAll(CloseCode.goingAway, "test done");
});

Deno.test("a client stuck past the slow timeout is closed with 4008", () => {
  const { b, counts, advance, tick } = broadcaster({
    clientBufferBytes: 10,
    slowClientTimeoutMs: 500,
  });
  const slow = new FakeSocket();
  b.add(slow);
  slow.stalled = true;
  b.broadcast('{"n":"first"}');
  b.broadcast('{"n":"second"}');
  assert.equal(b.size, 1);
  advance(499);
  tick();
  assert.equal(b.size, 1, "not closed before the timeout");
  assert.equal(slow.closedWith, undefined);
  advance(1);
  tick();
  assert.equal(b.size, 0);
  assert.deepEqual(slow.closedWith, { code: 4008, reason: "slow consumer" });
  assert.equal(counts.slowClosed, 1);
  assert.equal(b.removalReason(slow), "slow_consumer");
});

Deno.test("with a zero slow timeout a client over its bound is closed at once", () => {
  const { b } = broadcaster({ clientBufferBytes: 10, slowClientTimeoutMs: 0 });
  const slow = new FakeSocket();
  b.add(slow);
  slow.stalled = true;
  b.broadcast('{"n":"first"}');
  b.broadcast('{"n":"second"}');
  assert.equal(slow.closedWith?.code, 4008);
  assert.equal(b.size, 0);
});

Deno.test("closeAll closes every client with the given code", () => {
  const { b } = broadcaster();
  const sockets = [new FakeSocket(), new FakeSocket()];
  sockets.forEach((s) => b.add(s));
  b.closeAll(1001, "bye");
  for (const s of sockets) {
    assert.deepEqual(s.closedWith, { code: 1001, reason: "bye" });
    assert.equal(b.removalReason(s), "shutdown");
  }
  assert.equal(b.size, 0);
});

Deno.test("delivered bytes are the UTF-8 size, for the snapshot and catch-up sends too", () => {
  const { b, counts, tick } = broadcaster({ clientBufferBytes: 10 });
  const payload = '{"é":"ü"}'; // 9 UTF-16 units, 11 UTF-8 bytes
  b.broadcast(payload, 11);
  const late = new FakeSocket();
  b.add(late);
  assert.deepEqual([counts.delivered, counts.bytes], [1, 11]);
  late.stalled = true;
  b.broadcast(payload, 11);
  b.broadcast(payload, 11); // over the bound: kept as pending
  assert.deepEqual([counts.delivered, counts.bytes], [2, 22]);
  late.drain();
  tick();
  assert.deepEqual([counts.delivered, counts.bytes], [3, 33]);
  b.closeAll(1001, "done");
});

Deno.test("a client that fell behind and has room again gets the newest payload once", () => {
  const { b, tick } = broadcaster({ clientBufferBytes: 10 });
  const s = new FakeSocket();
  b.add(s);
  s.stalled = true;
  b.broadcast('{"n":1}'); // queue empty: sent, now 7 bytes queued
  b.broadcast('{"n":2}'); // over the bound: owed the newest
  s.drain(); // room again, before the drain tick
  b.broadcast('{"n":3}'); // sent directly; the client is owed nothing now
  tick();
  tick();
  assert.deepEqual(s.sent, ['{"n":1}', '{"n":3}']);
  b.closeAll(1001, "done");
});

/** What a client got, each frame as text: binary frames inflated (raw DEFLATE). */
function decoded(socket: FakeSocket): string[] {
  return socket.frames.map((frame) =>
    typeof frame === "string" ? frame : new TextDecoder().decode(inflateRawSync(frame))
  );
}

/** A compressible payload of about `size` bytes (repetitive, like a snapshot's levels). */
function bigPayload(n: number, size = 2000): string {
  return JSON.stringify({ n, levels: "level,".repeat(Math.ceil(size / 6)) });
}

Deno.test("mixed clients: text frames to plain ones, one shared DEFLATE per message to the others", () => {
  const { b, counts } = broadcaster({ clientBufferBytes: 1 << 20 });
  const plain = new FakeSocket();
  const deflated = [new FakeSocket(), new FakeSocket()];
  const binaries = new Set<unknown>();
  for (const s of deflated) {
    const send = s.send.bind(s);
    s.send = (data) => {
      if (typeof data !== "string") binaries.add(data);
      send(data);
    };
  }
  b.seed(bigPayload(0));
  b.add(plain);
  deflated.forEach((s) => b.add(s, "deflate-raw"));
  b.broadcast(bigPayload(1));
  b.broadcast(bigPayload(2));
  const expected = [0, 1, 2].map((n) => bigPayload(n));
  assert.deepEqual(plain.frames, expected);
  for (const s of deflated) {
    assert.equal(s.sent.length, 0, "no text frame: every payload shrank");
    assert.deepEqual(decoded(s), expected);
  }
  assert.equal(binaries.size, 3, "compressed once per message, the same bytes for every client");
  const binaryBytes = deflated[0].frames.reduce((sum, f) => sum + (f as Uint8Array).byteLength, 0);
  assert.ok(binaryBytes < expected.join("").length / 10, `${binaryBytes} bytes compressed`);
  assert.equal(counts.delivered, 9);
  assert.equal(counts.bytes, expected.join("").length + 2 * binaryBytes, "bytes as queued");
  b.closeAll(1001, "done");
});

Deno.test("a payload that would not shrink goes to a compressed client as a text frame", () => {
  const { b, counts } = broadcaster();
  const s = new FakeSocket();
  b.add(s, "deflate-raw");
  b.broadcast('{"a":1}'); // raw DEFLATE of 7 bytes is 9
  b.broadcast(bigPayload(1, 200));
  assert.equal(s.frames[0], '{"a":1}');
  assert.ok(s.frames[1] instanceof Uint8Array);
  assert.deepEqual(decoded(s), ['{"a":1}', bigPayload(1, 200)]);
  assert.equal(counts.bytes, 7 + (s.frames[1] as Uint8Array).byteLength);
  b.closeAll(1001, "done");
});

Deno.test("the byte bound counts what a client queues: compressed size for a compressed client", () => {
  const { b, counts, tick } = broadcaster({ clientBufferBytes: 1000 });
  const plain = new FakeSocket();
  const compressed = new FakeSocket();
  b.add(plain);
  b.add(compressed, "deflate-raw");
  plain.stalled = compressed.stalled = true;
  for (let n = 1; n <= 5; n++) b.broadcast(bigPayload(n, 2000));
  // A 2 KB text frame fills the plain client's 1,000 bytes at once; 5 × 44 compressed do not.
  assert.deepEqual(plain.sent, [bigPayload(1, 2000)]);
  assert.deepEqual(decoded(compressed), [1, 2, 3, 4, 5].map((n) => bigPayload(n, 2000)));
  assert.equal(
    compressed.bufferedAmount,
    compressed.frames.reduce(
      (sum, f) => sum + (f as Uint8Array).byteLength,
      0,
    ),
  );
  // 2 put the plain client behind; 3, 4 and 5 superseded what it was owed.
  assert.equal(counts.conflated, 3);
  // Caught up: the drain sends the plain client the newest, as text.
  plain.drain();
  tick();
  assert.deepEqual(plain.sent, [bigPayload(1, 2000), bigPayload(5, 2000)]);
  b.closeAll(1001, "done");
});

Deno.test("compressed clients get the cached payload on join, the drain's and sendLatest's", () => {
  const { b, tick } = broadcaster({ clientBufferBytes: 60 });
  const s = new FakeSocket();
  b.seed(bigPayload(1)); // the seed at startup; 2 KB, 44 bytes compressed
  b.add(s, "deflate-raw");
  s.stalled = true;
  b.broadcast(bigPayload(2)); // queue empty: sent
  b.broadcast(bigPayload(3)); // 44 + 44 over 60: owed the newest
  b.broadcast(bigPayload(4));
  s.drain();
  tick();
  b.seed(bigPayload(5)); // the route is behind: cached only
  b.seed(bigPayload(6));
  b.sendLatest(); // caught up
  assert.deepEqual(decoded(s).map((text) => JSON.parse(text).n), [1, 2, 4, 6]);
  assert.ok(s.frames.every((f) => f instanceof Uint8Array));
  b.closeAll(1001, "done");
});
