/**
 * The gateway's two notions of "behind", on fake clocks:
 * - LoopLag: how late the loop runs, and how much of that the process was not running at all
 *   (a stall that no client is to blame for);
 * - BehindWatch: a message that waited past the bound while newer ones are known is only
 *   cached; a burst handled soon after it was stored reaches clients whole.
 */
import assert from "node:assert/strict";
import { LoopLag } from "../../lib/relay/loop_lag.ts";
import { BehindWatch } from "../../lib/relay/progress.ts";

/** A LoopLag on fake wall and CPU clocks, ticking every 50 ms. */
function clocks() {
  let now = 0;
  let cpu = 0;
  const lag = new LoopLag({ intervalMs: 50, now: () => now, cpuNow: () => cpu });
  return {
    lag,
    /** `ms` of wall time of which the process ran `running` ms, then the tick. */
    tick(ms: number, running: number) {
      now += ms;
      cpu += running;
      lag.tick();
    },
    /** Time passes before the next tick has run. */
    pass(ms: number, running: number) {
      now += ms;
      cpu += running;
    },
  };
}

Deno.test("LoopLag: lateness while the process was not running is a stall", () => {
  const c = clocks();
  c.tick(50, 1);
  assert.equal(c.lag.stalledMs(), 0, "on time: nothing stalled");
  c.tick(350, 5); // descheduled: 300 ms late, it ran 5 ms of it
  assert.equal(c.lag.stalledMs(), 300);
  assert.equal(c.lag.worstLateMs, 300);
});

Deno.test("LoopLag: lateness while the gateway was busy with its own work is not a stall", () => {
  const c = clocks();
  c.tick(350, 350); // one 350 ms task of its own
  assert.equal(c.lag.stalledMs(), 0);
  assert.equal(c.lag.worstLateMs, 300, "still late: the gauge says so");
  c.tick(250, 150); // busy half the time, not running the rest: 100 of the 200 ms late
  assert.equal(c.lag.stalledMs(), 100);
});

Deno.test("LoopLag: a stall just ended counts before its tick has run", () => {
  const c = clocks();
  c.tick(50, 1);
  c.pass(400, 2);
  assert.equal(c.lag.stalledMs(), 350, "350 ms late, not running: counted already");
  c.tick(0, 0);
  assert.equal(c.lag.stalledMs(), 350, "and not twice once the tick runs");
});

Deno.test("LoopLag: stalledSince counts only the stalls after a given time", () => {
  let now = 0;
  let cpu = 0;
  let wall = 1_000_000;
  const lag = new LoopLag({
    intervalMs: 50,
    now: () => now,
    cpuNow: () => cpu,
    wallNow: () => wall,
  });
  const tick = (ms: number, running: number) => {
    now += ms;
    wall += ms;
    cpu += running;
    lag.tick();
  };
  tick(250, 0); // stalled 200 ms, ending at wall 1_000_250
  tick(50, 50);
  tick(350, 50); // stalled 300 ms, ending at wall 1_000_650
  assert.equal(lag.stalledSince(1_000_300), 300, "only the second stall");
  assert.equal(lag.stalledSince(1_000_000), 500, "both");
  assert.equal(lag.stalledSince(wall), 0);
});

/** A watch that has measured `msPerMessage` per message sent with a backlog behind it. */
function measured(msPerMessage: number, floorWindowMs = 30_000, offset = 0) {
  const w = new BehindWatch(150, 100, floorWindowMs);
  // Fresh messages, each sent while another waited, `msPerMessage` apart; our clock runs
  // `offset` ms ahead of the stream's.
  for (let i = 0; i < 40; i++) w.shed(1, i * msPerMessage, i * msPerMessage + offset);
  w.shed(0, 40 * msPerMessage, 40 * msPerMessage + offset); // caught up: the stream idles
  return { w, t: 40 * msPerMessage };
}

Deno.test("BehindWatch: a burst handled soon after it was stored is sent whole", () => {
  const { w, t } = measured(10);
  for (let newer = 300; newer >= 0; newer--) {
    // 301 messages stored at once, each handled within 40 ms of being stored
    const at = t + (300 - newer) * 10;
    assert.equal(w.shed(newer, at, at + 40), false);
  }
  assert.equal(w.shedding, false);
});

Deno.test("BehindWatch: an old backlog that takes long to send is shed, the newest sent", () => {
  const { w, t } = measured(10); // 10 ms a message: 20 waiting take 200 ms
  assert.equal(w.shed(20, t, t + 149), false, "149 ms old: sent");
  assert.equal(w.shed(20, t, t + 160), true, "160 ms old, 200 ms of sending behind it: shed");
  assert.equal(w.shedding, true);
  assert.equal(w.shed(0, t, t + 5000), false, "the newest is always sent");
  assert.equal(w.shedding, false);
});

Deno.test("BehindWatch: an old backlog the gateway clears at once is sent whole", () => {
  // The gateway was busy 300 ms (hostile frames); six snapshots waited; each takes 0.1 ms to send.
  const { w, t } = measured(0.1);
  for (let newer = 5; newer >= 0; newer--) {
    assert.equal(w.shed(newer, t, t + 300 + (5 - newer) * 0.1), false, `shed at newer=${newer}`);
  }
});

Deno.test("BehindWatch: the clocks' offset is not age; the process's stalls are not either", () => {
  // Our clock runs 10 s ahead of the stream's: every delay is 10 s and more.
  const { w, t } = measured(10, 30_000, 10_000);
  assert.equal(w.shed(30, t, t + 10_099), false, "99 ms after the floor");
  assert.equal(w.shed(30, t, t + 10_300), true, "299 ms after the floor");
  // The same wait, 200 ms of it a stall that ended before the message was handled.
  const stalls = (since: number) => (since <= t + 10_100 ? 200 : 0);
  assert.equal(w.shed(30, t, t + 10_300, stalls), false, "99 ms of running time");
});

Deno.test("BehindWatch: the offset's floor is forgotten after two windows", () => {
  const { w, t } = measured(10, 1000);
  w.shed(0, t, t - 5000); // our clock was 5 s behind: a floor of -5 s
  w.shed(0, t + 2000, t + 2001); // corrected: 1 ms from now on, once the old floor is gone
  w.shed(0, t + 3100, t + 3101);
  w.shed(30, t + 3000, t + 3290); // a backlog begins: sent, 10 ms before the next
  assert.equal(w.shed(30, t + 3000, t + 3300), true, "299 ms old by the corrected clock");
});

Deno.test("BehindWatch: a moment spent elsewhere before a backlog does not make it look slow", () => {
  const { w, t } = measured(10);
  // Caught up at t; the gateway then spends 400 ms on something else (72 MB of hostile frames)
  // while six snapshots arrive; sending each takes 0.1 ms: the backlog's own rate.
  for (let newer = 5; newer >= 0; newer--) {
    const at = t + 400 + (5 - newer) * 0.1;
    assert.equal(w.shed(newer, t + 50, at), false, `shed at newer=${newer}`);
  }
});

Deno.test("BehindWatch: the rate is the backlog's own, from its first message on", () => {
  const w = new BehindWatch(150, 100);
  w.shed(0, 0, 0); // a fresh message: the clocks agree
  assert.equal(w.shed(40, 0, 400), false, "the first of a backlog: no rate yet, sent");
  assert.equal(w.shed(39, 0, 412), true, "12 ms a message, 39 waiting: 468 ms to send; shed");
  assert.equal(w.shed(0, 0, 413), false, "the newest");
});
