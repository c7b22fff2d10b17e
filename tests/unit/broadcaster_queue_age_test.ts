/**
 * GATEWAY_CLIENT_MAX_QUEUE_MS: a client whose oldest queued payload has waited past the bound
 * gets only the newest one once its queue moves again, even while it is far below its byte bound.
 */
import assert from "node:assert/strict";
import { Broadcaster } from "../../lib/relay/broadcaster.ts";
import { CloseCode } from "../../lib/close_codes.ts";
import { FakeSocket } from "../helpers/fake_socket.ts";

/** A broadcaster with a fake clock and drain ticks run by hand. */
function setup(clientMaxQueueMs: number, extra: { stalledMs?: () => number } = {}) {
  let now = 0;
  let tick: (() => void) | undefined;
  const counts = { conflated: 0, slowClosed: 0 };
  const b = new Broadcaster(
    {
      clientBufferBytes: 1_000_000, // far above anything queued here: only time bounds it
      slowClientTimeoutMs: 1000,
      clientMaxQueueMs,
      ...extra,
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

Deno.test("time the gateway spent stalled is not a client's wait: it is not conflated for it", () => {
  // A busy machine deschedules the gateway for 300 ms: nothing is written to anyone meanwhile.
  let stalled = 0;
  const { b, counts, advance } = setup(100, { stalledMs: () => stalled });
  const s = new FakeSocket();
  b.add(s);
  s.stalled = true;
  b.broadcast(payload(1)); // queued at t=0
  advance(300);
  stalled += 290; // all but 10 ms of it the gateway was not running
  b.broadcast(payload(2)); // waited 10 ms of the gateway's running time: sent
  assert.equal(s.sent.length, 2);
  advance(100); // the gateway runs, the client still does not read: its own slowness
  b.broadcast(payload(3)); // held back: waited 110 ms of running time
  b.broadcast(payload(4)); // supersedes 3
  assert.equal(s.sent.length, 2);
  assert.equal(counts.conflated, 1);
  b.closeAll(1001, "done");
});

Deno.test("sendLatest sends the cached payload once to each client lacking it, none twice", () => {
  const { b } = setup(100);
  const early = new FakeSocket();
  b.add(early);
  b.seed(payload(1)); // cached while the route was behind: not sent
  const late = new FakeSocket();
  b.add(late); // a new client gets the cache at once
  assert.deepEqual(late.sent, [payload(1)]);
  assert.deepEqual(early.sent, []);
  b.sendLatest();
  b.sendLatest();
  assert.deepEqual(early.sent, [payload(1)]);
  assert.deepEqual(late.sent, [payload(1)]);
  b.closeAll(1001, "done");
});
