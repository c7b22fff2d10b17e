/**
 * Property test of the Broadcaster: random interleavings of broadcasts, drain ticks, clients
 * joining and leaving, and sockets whose buffers fill and empty. After every step each client
 * has seen a strictly increasing sequence (no duplicate, nothing out of order); once everyone
 * reads again and the drain has run, every remaining client's last frame is the newest; a client
 * that never stalled got every payload from its join on. Whether the gateway's loop is behind
 * (the count bound holds only then) flips at random too.
 * `PROPERTY_SEED=n` replays one seed; `PROPERTY_CASES` sets how many seeds run.
 */
import assert from "node:assert/strict";
import { Broadcaster } from "../../lib/broadcaster.ts";
import { FakeSocket } from "../helpers/fake_socket.ts";

const CASES = Number(Deno.env.get("PROPERTY_CASES") ?? 400);
const STEPS = 250;
const FIXED_SEED = Deno.env.get("PROPERTY_SEED");

/** mulberry32: small, seedable, good enough to pick steps. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A world with a hand-driven clock and drain timer, so a tick is a step like any other. */
function world(rand: () => number) {
  let now = 0;
  let tick: (() => void) | undefined;
  const loop = { behind: rand() < 0.5, record: () => {} };
  const broadcaster = new Broadcaster({
    clientBufferBytes: 20 + Math.floor(rand() * 60),
    slowClientTimeoutMs: rand() < 0.2 ? 0 : 50 + Math.floor(rand() * 500),
    clientMaxQueuedPayloads: Math.floor(rand() * 4),
    loop,
    now: () => now,
    setInterval: (fn) => (tick = fn),
    clearInterval: () => (tick = undefined),
  });
  return {
    broadcaster,
    loop,
    advance: (ms: number) => (now += ms),
    tick: () => tick?.(),
    ticking: () => tick !== undefined,
  };
}

function sequences(socket: FakeSocket): number[] {
  return socket.sent.map((frame) => JSON.parse(frame).n);
}

function assertIncreasing(socket: FakeSocket, seed: number, step: number): void {
  const seen = sequences(socket);
  for (let i = 1; i < seen.length; i++) {
    if (seen[i] <= seen[i - 1]) {
      assert.fail(`seed ${seed}, step ${step}: client saw [${seen.join(",")}]`);
    }
  }
}

function runCase(seed: number): void {
  const rand = random(seed);
  const w = world(rand);
  const sockets: FakeSocket[] = [];
  /** The first payload each socket was owed (the newest at its join, or the next one). */
  const joinedAt = new Map<FakeSocket, number>();
  const everStalled = new Set<FakeSocket>();
  let n = 0;
  const pick = () => sockets[Math.floor(rand() * sockets.length)];
  for (let step = 0; step < STEPS; step++) {
    const r = rand();
    if (r < 0.35) {
      const pad = "x".repeat(Math.floor(rand() * 30));
      w.broadcaster.broadcast(JSON.stringify({ n: ++n, pad }));
    } else if (r < 0.5) {
      w.advance(Math.floor(rand() * 100));
      if (rand() < 0.2) w.loop.behind = !w.loop.behind;
      w.tick();
    } else if (r < 0.58) {
      const socket = new FakeSocket();
      socket.stalled = rand() < 0.3;
      if (socket.stalled) everStalled.add(socket);
      joinedAt.set(socket, n > 0 ? n : 1);
      sockets.push(socket);
      w.broadcaster.add(socket);
    } else if (r < 0.62 && sockets.length > 0) {
      w.broadcaster.remove(pick());
    } else if (r < 0.65 && sockets.length > 0) {
      pick().readyState = 3; // the peer went away; found at the next send or tick
    } else if (r < 0.78 && sockets.length > 0) {
      const socket = pick();
      socket.stalled = true;
      everStalled.add(socket);
    } else if (r < 0.9 && sockets.length > 0) {
      pick().consume(Math.floor(rand() * 60));
    } else if (sockets.length > 0) {
      pick().drain();
    }
    for (const socket of sockets) {
      assertIncreasing(socket, seed, step);
      if (everStalled.has(socket) || socket.readyState !== 1) continue;
      if (w.broadcaster.removalReason(socket) !== undefined) continue;
      // Never behind: every payload from its join on, none skipped, whatever the loop did.
      const from = joinedAt.get(socket)!;
      const want = Array.from({ length: Math.max(0, n - from + 1) }, (_, i) => from + i);
      assert.deepEqual(
        sequences(socket),
        want,
        `seed ${seed}, step ${step}: a client that keeps up`,
      );
    }
  }
  // Quiescence: everyone reads, the drain runs until it stops itself.
  for (const socket of sockets) socket.drain();
  for (let i = 0; i < 3 && w.ticking(); i++) w.tick();
  assert.equal(w.ticking(), false, `seed ${seed}: drain timer still running at quiescence`);
  for (const socket of sockets) {
    assertIncreasing(socket, seed, STEPS);
    const stillHere = w.broadcaster.removalReason(socket) === undefined &&
      socket.readyState === 1;
    if (!stillHere || n === 0) continue;
    // A client added before the first broadcast and never sent anything is impossible here:
    // every broadcast reaches it, directly or by the drain.
    assert.equal(
      sequences(socket).at(-1),
      n,
      `seed ${seed}: a remaining client ends with [${sequences(socket).slice(-3)}], newest ${n}`,
    );
  }
  w.broadcaster.closeAll(1001, "done");
}

Deno.test(`broadcaster property: ${FIXED_SEED ? 1 : CASES} random interleavings, each client strictly increasing and ending on the newest`, () => {
  if (FIXED_SEED) return runCase(Number(FIXED_SEED));
  const base = Math.floor(Math.random() * 2 ** 31);
  for (let i = 0; i < CASES; i++) {
    const seed = (base + i) >>> 0;
    try {
      runCase(seed);
    } catch (err) {
      throw new Error(`failed with PROPERTY_SEED=${seed}`, { cause: err });
    }
  }
});
