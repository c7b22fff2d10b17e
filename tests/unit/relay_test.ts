/** RelayProgress and FreshnessWatch: what reaches clients, and when a consumer counts as stalled. */
import assert from "node:assert/strict";
import { FreshnessWatch, RelayProgress } from "../../lib/relay/progress.ts";

const STREAM_A = "2026-11-26T10:00:00Z";
const STREAM_B = "2026-11-26T11:00:00Z";

function message(seq: number, streamCreated = STREAM_A, newestAtStart = 0) {
  return { streamSequence: seq, streamCreated, newestAtStart };
}

/** Feeds messages as the gateway does; returns the sequences relayed. */
function relay(progress: RelayProgress, messages: ReturnType<typeof message>[]): number[] {
  const relayed: number[] = [];
  for (const m of messages) {
    progress.received(m);
    if (progress.judge(m) === "relay") {
      progress.relayed(m.streamSequence);
      relayed.push(m.streamSequence);
    }
  }
  return relayed;
}

Deno.test("RelayProgress: a durable's redelivery of an older message after newer ones is superseded", () => {
  const progress = new RelayProgress();
  // 5's ack was lost; the durable redelivers it after ack_wait, after 6 and 7 went out.
  assert.deepEqual(relay(progress, [message(5), message(6), message(7), message(5)]), [5, 6, 7]);
  assert.equal(progress.judge(message(5)), "superseded");
  assert.equal(progress.judge(message(7)), "duplicate");
});

Deno.test("RelayProgress: a recreated stream restarts at 1 and is relayed, not taken for old news", () => {
  const progress = new RelayProgress();
  progress.seeded(10, STREAM_A);
  assert.deepEqual(relay(progress, [message(11), message(12)]), [11, 12]);
  assert.deepEqual(relay(progress, [message(1, STREAM_B), message(2, STREAM_B)]), [1, 2]);
  assert.equal(progress.lastReceived, 2);
});

Deno.test("RelayProgress: the newest stored sequence below ours resets the lag baseline", () => {
  const progress = new RelayProgress();
  progress.seeded(10, STREAM_A);
  assert.equal(progress.observeNewest(12), false);
  assert.equal(progress.observeNewest(3), true, "recreated with fewer messages");
  assert.equal(progress.lastReceived, 0);
  assert.equal(progress.lastRelayed, 0);
});

Deno.test("RelayProgress: an invalid message is dead-lettered once, again after a stream reset", () => {
  const progress = new RelayProgress();
  assert.equal(progress.shouldDeadLetter(4), true);
  assert.equal(progress.shouldDeadLetter(4), false, "redelivered by a new consumer");
  assert.equal(progress.shouldDeadLetter(3), false);
  progress.rebase();
  assert.equal(progress.shouldDeadLetter(1), true);
});

Deno.test("FreshnessWatch: a stored message unreceived for a whole check counts, one in flight does not", () => {
  const watch = new FreshnessWatch();
  assert.equal(watch.observe(10, 10, 0), 0, "caught up");
  assert.equal(watch.observe(11, 10, 1_000), 0, "11 just stored: in flight");
  assert.equal(watch.observe(13, 12, 2_000), 0, "11 arrived; 13 in flight");
  assert.equal(watch.observe(14, 12, 3_000), 1_000, "13 waited a whole check");
  assert.equal(watch.observe(20, 12, 4_000), 2_000);
  assert.equal(watch.observe(20, 20, 5_000), 0, "receiving again");
});

Deno.test("FreshnessWatch + RelayProgress: after a stream is recreated with fewer messages, a stall is seen", () => {
  const progress = new RelayProgress();
  const watch = new FreshnessWatch();
  progress.seeded(100, STREAM_A);
  // New stream: 3 messages stored, none received (the consumer is stuck).
  if (progress.observeNewest(3)) watch.reset();
  assert.equal(watch.observe(3, progress.lastReceived, 0), 0);
  assert.equal(watch.observe(3, progress.lastReceived, 1_000), 1_000);
});
