/**
 * The count bound (GATEWAY_CLIENT_MAX_QUEUED_SNAPSHOTS) holds only while the gateway's loop is
 * behind (lib/loop_lag.ts): a burst on a loop that keeps up reaches every client whole.
 */
import assert from "node:assert/strict";
import { Broadcaster } from "../../lib/broadcaster.ts";
import { LoopLag } from "../../lib/loop_lag.ts";
import { FakeSocket } from "../helpers/fake_socket.ts";

/** A LoopLag on a fake clock: `run(ms)` advances it, ticking every 50 ms as a loop on time. */
function clock(lateMs = 100, holdMs = 1000) {
  let now = 0;
  const changes: boolean[] = [];
  const lag = new LoopLag({
    lateMs,
    holdMs,
    intervalMs: 50,
    now: () => now,
    changed: (behind) => changes.push(behind),
  });
  return {
    lag,
    changes,
    /** Ticks on time for `ms`. */
    run(ms: number) {
      for (let t = 0; t < ms; t += 50) {
        now += 50;
        lag.tick();
      }
    },
    /** One tick `late` ms after it was due (the loop was blocked). */
    block(late: number) {
      now += 50 + late;
      lag.tick();
    },
    advance: (ms: number) => (now += ms),
    now: () => now,
  };
}

/** 100 bytes whatever n (up to 4 digits). */
const payload = (n: number) => `{"n":"${String(n).padStart(4, "0")}","pad":"${"x".repeat(79)}"}`;

/** A broadcaster whose drain check runs when the test calls `drain()`; `now`: its clock. */
function broadcaster(loop: LoopLag, now?: () => number) {
  let tick: (() => void) | undefined;
  const b = new Broadcaster({
    clientBufferBytes: 1_000_000, // far above anything here: only the count bound holds back
    slowClientTimeoutMs: 10_000,
    clientMaxQueuedPayloads: 4,
    loop,
    ...(now ? { now } : {}),
    setInterval: (f) => (tick = f),
    clearInterval: () => (tick = undefined),
  });
  return Object.assign(b, { drain: () => tick?.() });
}

Deno.test("LoopLag: behind after a tick later than lateMs, for holdMs, then caught up", () => {
  const c = clock(100, 1000);
  c.run(500);
  assert.equal(c.lag.behind, false);
  c.block(90); // late, but within the bound
  assert.equal(c.lag.behind, false);
  c.block(150);
  assert.equal(c.lag.behind, true);
  assert.ok(c.lag.worstLateMs >= 150);
  c.run(950);
  assert.equal(c.lag.behind, true, "held for holdMs after the late tick");
  c.run(100);
  assert.equal(c.lag.behind, false);
  assert.deepEqual(c.changes, [true, false]);
  c.run(2000);
  assert.equal(c.lag.worstLateMs, 0, "the worst lateness is forgotten after two windows");
});

Deno.test("LoopLag: kept behind while most deliveries are held back, not while a few are", () => {
  const c = clock(100, 1000);
  c.block(200);
  for (let i = 0; i < 40; i++) {
    c.lag.record(1000, 850, 0); // overload: the bound holds back most of every payload's fan-out
    c.run(100);
  }
  assert.equal(c.lag.behind, true, "4 s after the late tick");
  for (let i = 0; i < 8; i++) {
    c.lag.record(1000, 200, 0); // near the edge: a fifth held back is not overload
    c.run(100);
  }
  assert.equal(c.lag.behind, true, "within holdMs of the last window that shed enough");
  for (let i = 0; i < 4; i++) {
    c.lag.record(1000, 200, 0);
    c.run(100);
  }
  assert.equal(c.lag.behind, false);
  assert.deepEqual(c.changes, [true, false]);
});

Deno.test("LoopLag: a fan-out while Deno's queues hold too much makes it behind at once", () => {
  const c = clock(100, 1000);
  c.run(200);
  c.lag.record(1000, 0, 64 * 1024 * 1024); // at the budget: not yet
  assert.equal(c.lag.behind, false);
  c.lag.record(1000, 0, 64 * 1024 * 1024 + 1);
  assert.equal(c.lag.behind, true, "before any tick is late");
  c.run(1000);
  assert.equal(c.lag.behind, false, "nothing held back since: caught up after holdMs");
});

Deno.test("LoopLag: shedding alone never makes it behind", () => {
  const c = clock(100, 1000);
  for (let i = 0; i < 20; i++) {
    c.lag.record(1000, 1000, 0); // one slow client set, or a burst: the loop is on time
    c.run(100);
  }
  assert.equal(c.lag.behind, false);
  assert.deepEqual(c.changes, []);
});

Deno.test("count bound: a burst on a loop that keeps up is queued whole", () => {
  const c = clock();
  c.run(200);
  const b = broadcaster(c.lag);
  const s = new FakeSocket();
  b.add(s);
  s.stalled = true; // nothing written during the burst: Deno writes when JS yields
  for (let n = 1; n <= 20; n++) b.broadcast(payload(n));
  assert.deepEqual(s.sent, Array.from({ length: 20 }, (_, i) => payload(i + 1)));
  assert.equal(c.lag.behind, false);
  b.closeAll(1001, "done");
});

Deno.test("count bound: while the loop is behind a burst queues N; holding back most keeps it", () => {
  const c = clock();
  c.block(300);
  const b = broadcaster(c.lag);
  const s = new FakeSocket();
  b.add(s);
  s.stalled = true;
  for (let n = 1; n <= 20; n++) b.broadcast(payload(n));
  assert.deepEqual(s.sent, [1, 2, 3, 4].map(payload));
  c.run(900);
  s.consume(400); // Deno wrote the four
  b.drain(); // it has room: the newest
  for (let n = 21; n <= 40; n++) b.broadcast(payload(n)); // 21-23 queued, then over the bound
  assert.deepEqual(s.sent, [1, 2, 3, 4, 20, 21, 22, 23].map(payload));
  c.run(900);
  assert.equal(
    c.lag.behind,
    true,
    "1.8 s after the late tick: kept behind by the held-back payloads",
  );
  c.run(1100);
  assert.equal(c.lag.behind, false, "nothing offered for a second: caught up");
  b.closeAll(1001, "done");
});

Deno.test("count bound: clients that stopped reading do not keep it on for the others", () => {
  const c = clock();
  c.block(300);
  assert.equal(c.lag.behind, true);
  // As by default, the count bound (4 × 100 bytes) is reached long before the byte bound.
  const b = broadcaster(c.lag, c.now);
  const stuck = Array.from({ length: 10 }, () => new FakeSocket());
  for (const s of stuck) {
    b.add(s);
    s.stalled = true; // never reads: its queue only grows
  }
  const reader = new FakeSocket();
  b.add(reader);
  for (let n = 1; n <= 30; n++) {
    b.broadcast(payload(n)); // 10 of 11 clients held back, by the count bound at first
    c.run(100);
    b.drain(); // nothing written by the stuck ones since they fell behind: not load
  }
  assert.equal(c.lag.behind, false, "caught up once holdMs passed after the late tick");
  assert.deepEqual(c.changes, [true, false]);
  assert.deepEqual(reader.sent, Array.from({ length: 30 }, (_, i) => payload(i + 1)));
  b.closeAll(1001, "done");
});

Deno.test("count bound: clients that read but lag keep it on while it sheds", () => {
  const c = clock();
  c.block(300);
  const b = broadcaster(c.lag, c.now);
  const lagging = Array.from({ length: 10 }, () => new FakeSocket());
  for (const s of lagging) {
    b.add(s);
    s.stalled = true;
  }
  for (let n = 1; n <= 30; n++) {
    for (let k = 0; k < 10; k++) b.broadcast(payload(n * 10 + k)); // a burst each 100 ms
    c.run(100);
    for (const s of lagging) s.consume(200); // Deno wrote two of their queued snapshots
    b.drain();
  }
  assert.equal(c.lag.behind, true, "3 s after the late tick: still shedding for clients that read");
  b.closeAll(1001, "done");
});
