/**
 * Property test of the Broadcaster: random interleavings of broadcasts, drain ticks, clients
 * joining and leaving, and sockets whose buffers fill and empty. After every step each client
 * has seen a strictly increasing sequence (no duplicate, nothing out of order); once everyone
 * reads again and the drain has run, every remaining client's last frame is the newest; a client
 * that never stalled got every payload sent from its join on. Payloads may also be cached
 * without being sent (as while a route is behind its stream) and later sent to whoever lacks
 * the newest (`sendLatest`), and the gateway may stall (time that does not age a client's queue).
 * Half the clients ask for compressed frames (binary raw DEFLATE where it is smaller, text where
 * not); the properties hold for what they decode, and their byte bounds count compressed bytes.
 * `PROPERTY_SEED=n` replays one seed; `PROPERTY_CASES` sets how many seeds run.
 */
import assert from "node:assert/strict";
import { inflateRawSync } from "node:zlib";
import { Broadcaster } from "../../lib/relay/broadcaster.ts";
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
  let stalled = 0;
  let tick: (() => void) | undefined;
  const broadcaster = new Broadcaster({
    clientBufferBytes: 20 + Math.floor(rand() * 60),
    slowClientTimeoutMs: rand() < 0.2 ? 0 : 50 + Math.floor(rand() * 500),
    clientMaxQueueMs: rand() < 0.3 ? 0 : Math.floor(rand() * 200),
    stalledMs: () => stalled,
    now: () => now,
    setInterval: (fn) => (tick = fn),
    clearInterval: () => (tick = undefined),
  });
  return {
    broadcaster,
    advance: (ms: number) => (now += ms),
    /** The gateway is not running for `ms`: time passes, and all of it is a stall. */
    stall: (ms: number) => {
      now += ms;
      stalled += ms;
    },
    tick: () => tick?.(),
    ticking: () => tick !== undefined,
  };
}

/** Each binary frame's payload number, inflated once (the checks read them at every step). */
const inflated = new WeakMap<Uint8Array, number>();

function sequences(socket: FakeSocket): number[] {
  return socket.frames.map((frame) => {
    if (typeof frame === "string") return JSON.parse(frame).n;
    let n = inflated.get(frame);
    if (n === undefined) {
      n = JSON.parse(new TextDecoder().decode(inflateRawSync(frame))).n as number;
      inflated.set(frame, n);
    }
    return n;
  });
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
  /** What each socket that keeps up must have been sent, in order. */
  const owed = new Map<FakeSocket, number[]>();
  const everStalled = new Set<FakeSocket>();
  let n = 0;
  /** The newest payload sent to clients (not only cached). */
  let sent = 0;
  const owe = (socket: FakeSocket, payload: number) => {
    const list = owed.get(socket)!;
    if (list.at(-1) !== payload) list.push(payload);
  };
  const pick = () => sockets[Math.floor(rand() * sockets.length)];
  for (let step = 0; step < STEPS; step++) {
    const r = rand();
    if (r < 0.3) {
      const pad = "x".repeat(Math.floor(rand() * 30));
      w.broadcaster.broadcast(JSON.stringify({ n: ++n, pad }));
      sent = n;
      for (const socket of sockets) owe(socket, n);
    } else if (r < 0.35) {
      w.broadcaster.seed(JSON.stringify({ n: ++n })); // cached, not sent: the route is behind
    } else if (r < 0.38) {
      w.broadcaster.sendLatest(); // caught up: the newest to whoever lacks it
      sent = n;
      for (const socket of sockets) if (n > 0) owe(socket, n);
    } else if (r < 0.5) {
      if (rand() < 0.3) w.stall(Math.floor(rand() * 300));
      else w.advance(Math.floor(rand() * 100));
      w.tick();
    } else if (r < 0.58) {
      const socket = new FakeSocket();
      socket.stalled = rand() < 0.3;
      if (socket.stalled) everStalled.add(socket);
      owed.set(socket, n > 0 ? [n] : []); // the cache at once, sent or not
      sockets.push(socket);
      w.broadcaster.add(socket, rand() < 0.5 ? "deflate-raw" : "text");
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
      // Never behind: every payload sent from its join on, none skipped, whatever the stalls.
      assert.deepEqual(
        sequences(socket),
        owed.get(socket),
        `seed ${seed}, step ${step}: a client that keeps up`,
      );
    }
  }
  // Quiescence: the route has caught up, everyone reads, the drain runs until it stops itself.
  if (sent < n) w.broadcaster.sendLatest();
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
