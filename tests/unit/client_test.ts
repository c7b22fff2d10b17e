/** The browser client against a fake WebSocket and a fake clock: every reaction, deterministic. */
import assert from "node:assert/strict";
import {
  GatewayClient,
  type GatewayClientOptions,
  type GatewayState,
  type SocketLike,
  type TokenReason,
} from "../../client/gateway_client.ts";
import type { LevelsSignalsV1 } from "../../client/levels_signals_v1.ts";
import { Ajv2020 } from "ajv/dist/2020.js";
import { levelsSignal } from "../../tools/signals.ts";
import { deflateRawSync } from "node:zlib";

/** Timers that fire only when the test advances time. */
class FakeClock {
  now = 1_000_000;
  #timers = new Map<number, { at: number; callback: () => void }>();
  #nextId = 1;

  setTimeout = (callback: () => void, ms: number): unknown => {
    const id = this.#nextId++;
    this.#timers.set(id, { at: this.now + ms, callback });
    return id;
  };

  clearTimeout = (handle: unknown): void => {
    this.#timers.delete(handle as number);
  };

  get pending(): number {
    return this.#timers.size;
  }

  /** Runs every timer due within `ms`, in order, letting promises settle after each. */
  async advance(ms: number): Promise<void> {
    const end = this.now + ms;
    await settle();
    for (;;) {
      const due = [...this.#timers].filter(([, t]) =>
        t.at <= end
      ).sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      this.#timers.delete(due[0]);
      this.now = due[1].at;
      due[1].callback();
      await settle();
    }
    this.now = end;
  }
}

async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await Promise.resolve();
}

class FakeSocket implements SocketLike {
  readyState = 0;
  readonly sent: string[] = [];
  closedWith: { code?: number; reason?: string } | undefined;
  onopen: ((event: Event) => void) | null = null;
  onmessage: ((event: MessageEvent) => void) | null = null;
  onclose: ((event: CloseEvent) => void) | null = null;
  onerror: ((event: Event) => void) | null = null;
  binaryType?: "blob" | "arraybuffer";

  constructor(readonly url: string, readonly protocols?: string[]) {}

  send(data: string): void {
    this.sent.push(data);
  }

  /** Like a real socket, the close event follows the handshake, a little later. */
  close(code?: number, reason?: string): void {
    this.closedWith = { code, reason };
    this.readyState = 2;
    queueMicrotask(() => this.closeFromServer(code ?? 1005, reason));
  }

  /** The server side: */
  open(): void {
    this.readyState = 1;
    this.onopen?.(new Event("open"));
  }

  receive(data: string | ArrayBuffer): void {
    this.onmessage?.(new MessageEvent("message", { data }));
  }

  closeFromServer(code: number, reason = ""): void {
    this.readyState = 3;
    this.onclose?.(new CloseEvent("close", { code, reason, wasClean: code !== 1006 }));
  }
}

function snapshot(ts: number, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({ ts, spy: { spot: 545.42 }, levels: [], ...extra });
}

type Options = Partial<GatewayClientOptions<LevelsSignalsV1>>;

/** A client wired to fakes, recording everything it emits. */
async function harness(options: Options = {}) {
  const clock = new FakeClock();
  const sockets: FakeSocket[] = [];
  const h = {
    clock,
    sockets,
    random: 0.5,
    states: [] as GatewayState[],
    snapshots: [] as number[],
    retries: [] as { code: number; retryInMs: number }[],
    errors: [] as string[],
    get socket(): FakeSocket {
      return sockets[sockets.length - 1];
    },
    client: undefined as unknown as GatewayClient,
  };
  const client = new GatewayClient<LevelsSignalsV1>({
    url: "ws://gateway.test/ws/stream",
    WebSocket: class extends FakeSocket {
      constructor(url: string, protocols?: string[]) {
        super(url, protocols);
        sockets.push(this);
      }
    },
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    now: () => clock.now,
    random: () => h.random,
    // Text unless a test asks for compressed frames (Deno inflates deflate-raw: its default).
    encoding: "text",
    ...options,
  });
  client.addEventListener("statechange", (e) => h.states.push(e.state));
  client.addEventListener("snapshot", (e) => h.snapshots.push(e.snapshot.ts));
  client.addEventListener("disconnect", (e) => h.retries.push(e));
  client.addEventListener("error", (e) => h.errors.push(e.error.message));
  h.client = client;
  await settle();
  return h;
}

/** A harness whose first socket is open. */
async function connected(options: Options = {}) {
  const h = await harness(options);
  h.socket.open();
  return h;
}

Deno.test("client: connects, delivers snapshots with their text, and reports open", async () => {
  const h = await harness();
  assert.equal(h.client.state, "connecting");
  assert.equal(h.sockets.length, 1);
  assert.equal(h.socket.url, "ws://gateway.test/ws/stream");
  h.socket.open();
  let text = "";
  h.client.addEventListener("snapshot", (e) => (text = e.data));
  h.socket.receive(snapshot(1, { "é": "ü" }));
  h.socket.receive(snapshot(2));
  assert.deepEqual(h.states, ["open"]);
  assert.deepEqual(h.snapshots, [1, 2]);
  assert.equal(text, snapshot(2));
  assert.equal(h.client.latest?.ts, 2);
  assert.equal(h.client.stats.delivered, 2);
  await h.client.close();
});

Deno.test("client: pong and other control frames never reach the application", async () => {
  const h = await connected();
  h.socket.receive('{"type":"pong"}');
  h.socket.receive('{"type":"welcome","routes":[]}');
  h.socket.receive("not json");
  h.socket.receive("[1,2]");
  h.socket.receive('{"spy":{}}'); // no ts: cannot be ordered
  h.socket.receive(new ArrayBuffer(4));
  h.socket.receive(snapshot(5));
  assert.deepEqual(h.snapshots, [5]);
  const stats = h.client.stats;
  assert.equal(stats.pongs, 1);
  assert.equal(stats.ignored, 1);
  assert.equal(stats.invalid, 4);
  assert.equal(h.errors.length, 4);
  assert.equal(h.client.state, "open");
  await h.client.close();
});

Deno.test("client: stale after staleAfter × cadence without a snapshot, fresh on the next", async () => {
  const h = await connected({ expectedIntervalMs: 100, staleAfter: 5 });
  h.socket.receive(snapshot(1));
  await h.clock.advance(499);
  assert.equal(h.client.state, "open");
  h.socket.receive(snapshot(2)); // each snapshot restarts the wait
  await h.clock.advance(499);
  assert.equal(h.client.state, "open");
  await h.clock.advance(1);
  assert.equal(h.client.state, "stale");
  h.socket.receive('{"type":"pong"}'); // a pong is not data
  h.socket.receive(snapshot(2)); // nor is a snapshot already delivered
  assert.equal(h.client.state, "stale");
  h.socket.receive(snapshot(3));
  assert.equal(h.client.state, "open");
  assert.deepEqual(h.states, ["open", "stale", "open"]);
  await h.client.close();
});

Deno.test("client: stale also when a connection opens and nothing arrives", async () => {
  const h = await connected();
  await h.clock.advance(2_000); // defaults: 8 × 250 ms
  assert.equal(h.client.state, "stale");
  await h.client.close();
});

Deno.test("client: full-jitter backoff doubles its ceiling up to the cap", async () => {
  const h = await harness({ backoffBaseMs: 100, backoffCapMs: 1_000 });
  h.random = 0.999999;
  const delays: number[] = [];
  for (let i = 0; i < 7; i++) {
    h.socket.closeFromServer(1006);
    const delay = h.retries[h.retries.length - 1].retryInMs;
    delays.push(delay);
    const before = h.sockets.length;
    if (delay > 0) await h.clock.advance(delay - 1);
    assert.equal(h.sockets.length, before, "no retry before the delay");
    await h.clock.advance(1);
    assert.equal(h.sockets.length, before + 1, "a retry once it passed");
  }
  // random(0, min(cap, base × 2^attempt)): just under 100, 200, 400, 800, then the cap.
  assert.deepEqual(delays, [99, 199, 399, 799, 999, 999, 999]);
  h.random = 0;
  h.socket.closeFromServer(1006);
  assert.equal(h.retries[h.retries.length - 1].retryInMs, 0, "full jitter reaches zero");
  assert.ok(h.states.every((s) => s === "connecting"));
  await h.client.close();
});

Deno.test("client: a connection that delivered data resets the backoff", async () => {
  const h = await harness({ backoffBaseMs: 100 });
  h.random = 0.5;
  h.socket.closeFromServer(1006);
  await h.clock.advance(50);
  h.socket.closeFromServer(1006);
  await h.clock.advance(100);
  assert.deepEqual(h.retries.map((r) => r.retryInMs), [50, 100]);
  h.socket.open();
  h.socket.receive(snapshot(1));
  h.socket.closeFromServer(1001, "gateway shutting down");
  assert.equal(h.retries[2].retryInMs, 50, "back to the first step");
  await h.client.close();
});

Deno.test("client: 1001, 1006, 1013 and unknown codes back off", async () => {
  for (const code of [1001, 1006, 1013, 1011, 1000]) {
    const h = await connected({ backoffBaseMs: 1_000 });
    h.socket.closeFromServer(code);
    assert.equal(h.retries[0].retryInMs, 500, `code ${code}`);
    assert.equal(h.client.state, "connecting");
    await h.clock.advance(499);
    assert.equal(h.sockets.length, 1);
    await h.clock.advance(1);
    assert.equal(h.sockets.length, 2);
    await h.client.close();
  }
});

Deno.test("client: 4008 (slow consumer) reconnects at once, every time", async () => {
  const h = await connected({ backoffBaseMs: 1_000 });
  for (let i = 0; i < 3; i++) {
    h.socket.receive(snapshot(i + 1));
    h.socket.closeFromServer(4008, "slow consumer");
    assert.equal(h.retries[i].retryInMs, 0);
    await h.clock.advance(0);
    assert.equal(h.sockets.length, i + 2);
    h.socket.open();
  }
  await h.client.close();
});

Deno.test("client: 1008 unauthorized asks for a new token, at once, then with backoff", async () => {
  let issued = 0;
  const reasons: TokenReason[] = [];
  const h = await harness({
    backoffBaseMs: 1_000,
    token: ({ reason }) => {
      reasons.push(reason);
      return `t${++issued}`;
    },
  });
  assert.equal(h.socket.url, "ws://gateway.test/ws/stream?token=t1");
  h.socket.open();
  h.socket.closeFromServer(1008, "unauthorized");
  assert.equal(h.retries[0].retryInMs, 0, "a refused token is replaced at once");
  await h.clock.advance(0);
  assert.equal(h.socket.url, "ws://gateway.test/ws/stream?token=t2");
  h.socket.open();
  h.socket.closeFromServer(1008, "unauthorized");
  assert.equal(h.retries[1].retryInMs, 500, "refused again: back off");
  await h.clock.advance(500);
  assert.deepEqual(reasons, ["connect", "unauthorized", "unauthorized"]);
  // A 1008 for another reason (frame flood) is not about the token.
  h.socket.open();
  h.socket.receive(snapshot(1));
  h.socket.closeFromServer(1008, "too many frames");
  assert.equal(h.retries[2].retryInMs, 500);
  await h.clock.advance(500);
  assert.deepEqual(reasons.slice(3), ["connect"]);
  await h.client.close();
});

Deno.test("client: 4001 (token expired) asks for a new token and reconnects at once", async () => {
  const reasons: TokenReason[] = [];
  const h = await harness({
    token: async ({ reason }) => {
      reasons.push(reason);
      await Promise.resolve();
      return reason === "expired" ? "fresh" : "old";
    },
  });
  h.socket.open();
  h.socket.receive(snapshot(1));
  h.socket.closeFromServer(4001, "token expired");
  assert.equal(h.retries[0].retryInMs, 0);
  await h.clock.advance(0);
  assert.deepEqual(reasons, ["connect", "expired"]);
  assert.equal(h.socket.url, "ws://gateway.test/ws/stream?token=fresh");
  await h.client.close();
});

Deno.test("client: tokenIn protocol offers bearer.<token> beside a plain protocol", async () => {
  const h = await harness({ token: () => "abc.def", tokenIn: "protocol", protocol: "levels" });
  assert.equal(h.socket.url, "ws://gateway.test/ws/stream");
  assert.deepEqual(h.socket.protocols, ["levels", "bearer.abc.def"]);
  await h.client.close();
  const q = await harness({ token: () => "a b&c" });
  assert.equal(q.socket.url, "ws://gateway.test/ws/stream?token=a+b%26c");
  await q.client.close();
});

Deno.test("client: a failing token callback is reported and retried with backoff", async () => {
  let calls = 0;
  const h = await harness({
    backoffBaseMs: 1_000,
    token: () => {
      if (++calls === 1) throw new Error("identity provider down");
      return "ok";
    },
  });
  assert.equal(h.sockets.length, 0);
  assert.match(h.errors[0], /token callback failed/);
  await h.clock.advance(500);
  assert.equal(h.sockets.length, 1);
  await h.client.close();
});

Deno.test("client: never delivers a snapshot older than one delivered, across reconnects", async () => {
  const h = await connected();
  h.socket.receive(snapshot(100));
  h.socket.receive(snapshot(200));
  h.socket.closeFromServer(1006);
  await h.clock.advance(30_000);
  h.socket.open();
  h.socket.receive(snapshot(200)); // the gateway's cached latest: already shown
  h.socket.receive(snapshot(150)); // e.g. a replica behind the first
  h.socket.receive(snapshot(300));
  assert.deepEqual(h.snapshots, [100, 200, 300]);
  assert.equal(h.client.stats.droppedOlder, 2);
  await h.client.close();
});

Deno.test("client: order decides what is newer", async () => {
  const h = await connected({ order: (s) => (s as unknown as { seq: number }).seq });
  h.socket.receive(snapshot(9, { seq: 1 }));
  h.socket.receive(snapshot(5, { seq: 2 }));
  h.socket.receive(snapshot(7, { seq: 2 }));
  assert.deepEqual(h.snapshots, [9, 5]);
  await h.client.close();
});

Deno.test("client: close() stops everything: no socket, no timer, no reconnect", async () => {
  const h = await connected({ pingIntervalMs: 1_000 });
  h.socket.receive(snapshot(1));
  const socket = h.socket;
  const closed = h.client.close();
  assert.deepEqual(socket.closedWith, { code: 1000, reason: "client closed" });
  await closed;
  assert.equal(h.client.state, "closed");
  assert.equal(h.clock.pending, 0);
  await h.clock.advance(60_000);
  assert.equal(h.sockets.length, 1);
  assert.deepEqual(h.states, ["open", "closed"]);
  await h.client.close(); // idempotent

  // While waiting to retry, and while the token callback is pending.
  const waiting = await connected();
  waiting.socket.closeFromServer(1006);
  await waiting.client.close();
  assert.equal(waiting.clock.pending, 0);
  let release = (_token: string) => {};
  const pending = await harness({
    token: () => new Promise<string>((resolve) => (release = resolve)),
  });
  await pending.client.close();
  release("late");
  await settle();
  assert.equal(pending.sockets.length, 0, "no socket after close()");
});

Deno.test("client: close() before the first connect opens nothing", async () => {
  const sockets: string[] = [];
  const client = new GatewayClient({
    url: "ws://gateway.test/ws/stream",
    WebSocket: class extends FakeSocket {
      constructor(url: string) {
        super(url);
        sockets.push(url);
      }
    },
  });
  await client.close();
  await settle();
  assert.deepEqual(sockets, []);
});

Deno.test("client: app-level ping every interval; no reply for two intervals reconnects", async () => {
  const h = await connected({ pingIntervalMs: 1_000 });
  await h.clock.advance(1_000);
  assert.deepEqual(h.socket.sent, ['{"type":"ping"}']);
  h.socket.receive('{"type":"pong"}');
  await h.clock.advance(2_000);
  assert.equal(h.socket.sent.length, 3);
  assert.equal(h.sockets.length, 1);
  await h.clock.advance(1_000); // 3 s since the last frame
  assert.deepEqual(h.sockets[0].closedWith, { code: 4000, reason: "no reply to ping" });
  assert.equal(h.retries[0].code, 4000);
  assert.equal(h.client.state, "connecting");
  await h.clock.advance(h.retries[0].retryInMs);
  assert.equal(h.sockets.length, 2);
  await h.client.close();
});

Deno.test("client: no ping unless asked", async () => {
  const h = await connected();
  h.socket.receive(snapshot(1));
  await h.clock.advance(60_000);
  assert.deepEqual(h.socket.sent, []);
  await h.client.close();
});

Deno.test("client: a URL that can never work is refused at once", () => {
  assert.throws(() => new GatewayClient({ url: "/ws/stream" }), TypeError);
  assert.throws(() => new GatewayClient({ url: "ftp://host/ws" }), /use ws: or wss:/);
});

/** The service spec's example payload, typed: it must satisfy the TypeScript types as written. */
const SPEC_EXAMPLE: LevelsSignalsV1 = {
  ts: 1715629300123,
  spy: { spot: 545.42, bid: 545.41, ask: 545.43 },
  levels: [{
    id: "STRIKE_545",
    price: 545.0,
    kind: "STRIKE",
    direction: "SUPPORT",
    distance: 0.42,
    break_score_raw: 88,
    break_score_smooth: 81,
    signal: "BREAK",
    confidence: "HIGH",
    barrier: {
      state: "VACUUM",
      delta_liq: -8200,
      replenishment_ratio: 0.15,
      added: 3100,
      canceled: 9800,
      filled: 1500,
    },
    tape: {
      imbalance: -0.45,
      buy_vol: 120000,
      sell_vol: 320000,
      velocity: -0.08,
      sweep: { detected: true, direction: "DOWN", notional: 1250000 },
    },
    fuel: { effect: "AMPLIFY", net_dealer_gamma: -185000, call_wall: 548, put_wall: 542, hvl: 545 },
    runway: {
      direction: "DOWN",
      next_obstacle: { id: "PUT_WALL", price: 542 },
      distance: 3.0,
      quality: "CLEAR",
    },
    note: "Vacuum + dealers chase; sweep confirms",
  }],
};

Deno.test("levels.signals.v1 schema: the spec's example and our fixtures pass, broken ones fail", async () => {
  const schemaUrl = new URL("../../client/levels_signals_v1.schema.json", import.meta.url);
  const schema = JSON.parse(await Deno.readTextFile(schemaUrl));
  assert.equal(schema.$schema, "https://json-schema.org/draft/2020-12/schema");
  const validate = new Ajv2020({ strict: true }).compile(schema);
  for (
    const payload of [SPEC_EXAMPLE, JSON.parse(levelsSignal(7)), { ...SPEC_EXAMPLE, levels: [] }]
  ) {
    assert.ok(validate(payload), JSON.stringify(validate.errors));
  }
  const level = SPEC_EXAMPLE.levels[0];
  for (
    const broken of [
      { spy: SPEC_EXAMPLE.spy, levels: [] },
      { ...SPEC_EXAMPLE, ts: "soon" },
      { ...SPEC_EXAMPLE, levels: [{ ...level, price: undefined }] },
      { ...SPEC_EXAMPLE, levels: [{ ...level, runway: { ...level.runway, next_obstacle: 3 } }] },
    ]
  ) {
    assert.equal(validate(JSON.parse(JSON.stringify(broken))), false, JSON.stringify(broken));
  }
});

/** A payload's raw DEFLATE as the gateway sends it: an ArrayBuffer of its own. */
function deflated(text: string): ArrayBuffer {
  const bytes = deflateRawSync(new TextEncoder().encode(text));
  return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
}

/** Resolves once `h` has delivered `count` snapshots (inflating takes real tasks, not a tick). */
function delivered(h: Awaited<ReturnType<typeof harness>>, count: number): Promise<void> {
  return new Promise((resolve) => {
    if (h.snapshots.length >= count) return resolve();
    const check = () => {
      if (h.snapshots.length < count) return;
      h.client.removeEventListener("snapshot", check);
      resolve();
    };
    h.client.addEventListener("snapshot", check);
  });
}

Deno.test("client: asks for deflate-raw by default where DecompressionStream inflates it", async () => {
  const sockets: SocketLike[] = [];
  const urls: string[] = [];
  const client = new GatewayClient({
    url: "ws://gateway.test/ws/stream",
    token: () => "t1",
    WebSocket: class extends FakeSocket {
      constructor(url: string) {
        super(url);
        urls.push(url);
        sockets.push(this);
      }
    },
  });
  await settle();
  assert.equal(client.encoding, "deflate-raw");
  assert.deepEqual(urls, ["ws://gateway.test/ws/stream?encoding=deflate-raw&token=t1"]);
  assert.equal(sockets[0].binaryType, "arraybuffer");
  await client.close();
  const text = await harness({ encoding: "text" });
  assert.equal(text.socket.url, "ws://gateway.test/ws/stream");
  assert.equal(text.socket.binaryType, undefined);
  await text.client.close();
});

Deno.test("client: compressed frames deliver the exact published text, in arrival order", async () => {
  const h = await connected({ encoding: "deflate-raw" });
  const texts: string[] = [];
  h.client.addEventListener("snapshot", (e) => texts.push(e.data));
  // A large frame first: its inflate takes longest, yet nothing after it may overtake it.
  const big = JSON.stringify({ ...JSON.parse(levelsSignal(1, 0, 200)), ts: 1 });
  const frames = [big, snapshot(2, { "é": "ü" }), snapshot(3), snapshot(4)];
  h.socket.receive(deflated(frames[0]));
  h.socket.receive('{"type":"pong"}'); // text while a decode is pending waits its turn
  h.socket.receive(frames[1]); // a payload that did not shrink comes as text
  h.socket.receive(deflated(frames[2]));
  h.socket.receive(deflated(frames[3]));
  await delivered(h, 4);
  assert.deepEqual(h.snapshots, [1, 2, 3, 4]);
  assert.deepEqual(texts, frames);
  assert.equal(h.client.stats.pongs, 1);
  const wire = deflated(frames[0]).byteLength + 15 + new TextEncoder().encode(frames[1]).length +
    deflated(frames[2]).byteLength + deflated(frames[3]).byteLength;
  assert.equal(h.client.stats.bytesReceived, wire);
  await h.client.close();
});

Deno.test("client: a frame that does not inflate is reported; the frames after it still arrive", async () => {
  const h = await connected({ encoding: "deflate-raw" });
  h.socket.receive(new Uint8Array([0xff, 0xff, 0xff, 0x00]).buffer);
  h.socket.receive(deflated(snapshot(5)));
  await delivered(h, 1);
  assert.deepEqual(h.snapshots, [5]);
  assert.equal(h.client.stats.invalid, 1);
  assert.match(h.errors[0], /does not inflate/);
  await h.client.close();
});

Deno.test("client: with text frames asked for, a binary frame is invalid; after close() nothing", async () => {
  const h = await connected({ encoding: "text" });
  h.socket.receive(deflated(snapshot(1)));
  assert.equal(h.client.stats.invalid, 1);
  const c = await connected({ encoding: "deflate-raw" });
  const witness = await connected({ encoding: "deflate-raw" });
  c.socket.receive(deflated(snapshot(1)));
  witness.socket.receive(deflated(snapshot(1))); // the same inflate, started just after
  await c.client.close(); // before the inflate finished
  await delivered(witness, 1);
  assert.deepEqual(c.snapshots, []);
  await Promise.all([h.client.close(), witness.client.close()]);
});
