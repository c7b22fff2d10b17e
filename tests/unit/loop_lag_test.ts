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

Deno.test("BehindWatch: a burst handled soon after it was stored is sent whole", () => {
  const w = new BehindWatch(150);
  const t0 = 5_000;
  for (let newer = 300; newer >= 0; newer--) {
    // 301 messages stored at once, each handled within 40 ms of being stored
    assert.equal(w.shed(newer, t0 + (300 - newer) * 10, t0 + (300 - newer) * 10 + 40), false);
  }
  assert.equal(w.shedding, false);
});

Deno.test("BehindWatch: a message older than the bound with newer ones waiting is cached only", () => {
  const w = new BehindWatch(150);
  assert.equal(w.shed(0, 1000, 1001), false, "the clocks agree: a 1 ms floor");
  assert.equal(w.shed(5, 1100, 1250), false, "149 ms old: sent");
  assert.equal(w.shed(5, 1100, 1252), true, "151 ms old, newer ones waiting: shed");
  assert.equal(w.shedding, true);
  assert.equal(w.shed(0, 1100, 5000), false, "the newest is always sent");
  assert.equal(w.shedding, false);
});

Deno.test("BehindWatch: the clocks' offset is not age; the process's stalls are not either", () => {
  const w = new BehindWatch(150, 30_000);
  // Our clock runs 10 s ahead of the stream's: every delay is 10 s and more.
  assert.equal(w.shed(0, 1000, 11_002), false);
  assert.equal(w.shed(3, 1100, 11_200), false, "98 ms after the floor");
  assert.equal(w.shed(3, 1200, 11_500), true, "298 ms after the floor");
  // The same wait, 200 ms of it a stall that ended before the message was handled.
  const stalls = (since: number) => (since <= 11_300 ? 200 : 0);
  assert.equal(w.shed(3, 1200, 11_500, stalls), false, "98 ms of running time");
});

Deno.test("BehindWatch: the offset's floor is forgotten after two windows", () => {
  const w = new BehindWatch(150, 1000);
  assert.equal(w.shed(0, 0, -5000), false, "our clock was 5 s behind");
  w.shed(0, 2000, 2001); // corrected: the floor is 1 ms from now on, once the old one is gone
  w.shed(0, 3100, 3101);
  assert.equal(w.shed(2, 3000, 3300), true, "299 ms old by the corrected clock");
});
