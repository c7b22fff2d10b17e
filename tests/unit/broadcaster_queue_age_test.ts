/**
 * GATEWAY_CLIENT_MAX_QUEUE_MS: a client whose oldest queued payload has waited past the bound
 * gets only the newest one once its queue moves again, even while it is far below its byte bound.
 */
import assert from "node:assert/strict";
import { Broadcaster, CloseCode } from "../../lib/broadcaster.ts";
import { FakeSocket } from "../helpers/fake_socket.ts";

/** A broadcaster with a fake clock and drain ticks run by hand. */
function setup(clientMaxQueueMs: number, clientMaxQueuedPayloads = 0) {
  let now = 0;
  let tick: (() => void) | undefined;
  const counts = { conflated: 0, slowClosed: 0 };
  const b = new Broadcaster(
    {
      clientBufferBytes: 1_000_000, // far above anything queued here: only time bounds it
      slowClientTimeoutMs: 1000,
      clientMaxQueueMs,
      clientMaxQueuedPayloads, // 0 unless a test is about the count bound
      now: () => now,
      setInterval: (f) => (tick = f),
      clearInterval: () => (tick = undefined),
    },
    {
      conflated: () => counts.conflated++,
      slowClientClosed: () => counts.slowClosed++,
    },
  );
  return {
    b,
    counts,
    advance: (ms: number) => (now += ms),
    tick: () => tick?.(),
    ticking: () => tick !== undefined,
  };
}

/** 100 bytes whatever n (up to 4 digits). */
const payload = (n: number) => `{"n":"${String(n).padStart(4, "0")}","pad":"${"x".repeat(79)}"}`;

Deno.test("a client whose oldest queued payload is too old gets only the newest", () => {
  const { b, counts, advance, tick } = setup(100);
  const s = new FakeSocket();
  b.add(s);
  s.stalled = true;
  b.broadcast(payload(1)); // queued at t=0
  advance(50);
  b.broadcast(payload(2)); // oldest waited 50 ms: still sent
  advance(60);
  b.broadcast(payload(3)); // oldest waited 110 ms: held back
  b.broadcast(payload(4)); // supersedes 3
  assert.equal(s.sent.length, 2);
  assert.equal(counts.conflated, 1);
  s.consume(100); // payload 1 written; payload 2 (sent at t=50) has waited 60 ms
  tick();
  assert.deepEqual(s.sent.slice(2), [payload(4)]);
  b.closeAll(1001, "done");
});

Deno.test("without the time bound (0) only bytes hold a client back", () => {
  const { b, advance } = setup(0);
  const s = new FakeSocket();
  b.add(s);
  s.stalled = true;
  for (let n = 1; n <= 5; n++) {
    b.broadcast(payload(n));
    advance(1000);
  }
  assert.equal(s.sent.length, 5);
  b.closeAll(1001, "done");
});

Deno.test("a client that keeps up is never held back, however long it stays connected", () => {
  const { b, counts, advance, ticking } = setup(100);
  const s = new FakeSocket();
  b.add(s);
  s.stalled = true;
  for (let n = 1; n <= 1000; n++) {
    b.broadcast(payload(n));
    advance(30);
    s.consume(100); // each payload is written within 30 ms
  }
  assert.equal(s.sent.length, 1000);
  assert.equal(counts.conflated, 0);
  assert.equal(ticking(), false);
  b.closeAll(1001, "done");
});

Deno.test("a client whose queue stays too old is closed with 4008 after the slow timeout", () => {
  const { b, counts, advance, tick } = setup(100);
  const s = new FakeSocket();
  b.add(s);
  s.stalled = true;
  b.broadcast(payload(1));
  advance(200);
  b.broadcast(payload(2)); // too old: held back
  advance(999);
  tick();
  assert.equal(s.readyState, 1);
  advance(1);
  tick();
  assert.deepEqual(s.closedWith, { code: CloseCode.slowConsumer, reason: "slow consumer" });
  assert.equal(counts.slowClosed, 1);
});

Deno.test("count bound: past N unwritten payloads a client is conflated, then gets the newest", () => {
  // Deno writes queued frames only after JavaScript yields: a burst of messages handled in one
  // go must not queue a copy of each for every client (each written late, then superseded).
  const { b, counts, tick } = setup(0, 2);
  const s = new FakeSocket();
  b.add(s);
  s.stalled = true;
  for (let n = 1; n <= 6; n++) b.broadcast(payload(n)); // one burst, nothing written meanwhile
  assert.deepEqual(s.sent, [payload(1), payload(2)]);
  assert.equal(counts.conflated, 3, "3, 4 and 5 were superseded while it was behind");
  tick();
  assert.equal(s.sent.length, 2, "still two unwritten: nothing more yet");
  s.consume(100); // payload 1 written: room for one more
  tick();
  assert.deepEqual(s.sent.slice(2), [payload(6)]);
  b.closeAll(1001, "done");
});

Deno.test("count bound: a client whose payloads are written before the next is never held back", () => {
  const { b, counts, ticking } = setup(0, 1);
  const s = new FakeSocket();
  b.add(s);
  s.stalled = true;
  for (let n = 1; n <= 200; n++) {
    b.broadcast(payload(n));
    s.consume(100);
  }
  assert.equal(s.sent.length, 200);
  assert.equal(counts.conflated, 0);
  assert.equal(ticking(), false);
  b.closeAll(1001, "done");
});
