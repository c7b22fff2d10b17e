import assert from "node:assert/strict";
import { Broadcaster } from "../../lib/relay/broadcaster.ts";
import { GatewayMetrics } from "../../lib/observe/metrics.ts";
import { createHandler, type Upgrade } from "../../lib/http/router.ts";
import type { HealthReport } from "../../lib/observe/health.ts";
import { Sessions } from "../../lib/http/session.ts";
import { FakeSocket } from "../helpers/fake_socket.ts";
import { recordingLogger } from "../helpers/fixtures.ts";

function setup(
  overrides: {
    healthy?: boolean;
    maxConnections?: number;
    authTokens?: string[];
    openTimeoutMs?: number;
    serve?: "all" | "public" | "admin";
    viewerPage?: string;
  } = {},
) {
  // One fake clock for the handler and the Broadcaster; the Broadcaster's drain checks run
  // when a test calls `drainTick`, never on a timer a busy machine could delay.
  let now = 0;
  let drainTick: (() => void) | undefined;
  const broadcaster = new Broadcaster({
    clientBufferBytes: 1000,
    slowClientTimeoutMs: 1000,
    now: () => now,
    setInterval: (tick) => (drainTick = tick),
    clearInterval: () => (drainTick = undefined),
  });
  const metrics = new GatewayMetrics(() => broadcaster.size);
  const sessions = new Sessions({ metrics, openTimeoutMs: overrides.openTimeoutMs ?? 50 });
  const sockets: FakeSocket[] = [];
  const upgrade: Upgrade = (request) => {
    if (request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
      throw new TypeError("Invalid Header: 'upgrade' header must contain 'websocket'");
    }
    const socket = new FakeSocket();
    sockets.push(socket);
    return { socket, response: new Response(null, { status: 200 }) };
  };
  const health = (): HealthReport => ({
    service: "gateway",
    status: overrides.healthy === false ? "unhealthy" : "healthy",
    version: "test",
    nats_url: "nats://localhost:4222",
    nats_connected: overrides.healthy !== false,
    connections: broadcaster.size,
    last_message_ts: null,
    messages_relayed: 0,
    consumer_lag: null,
    uptime_s: 0,
  });
  const handle = createHandler({
    broadcaster,
    metrics,
    logger: recordingLogger(),
    health,
    maxConnections: overrides.maxConnections ?? 0,
    sessions,
    authTokens: overrides.authTokens,
    idleTimeoutSeconds: 30,
    clientMaxFrameBytes: 64,
    clientMaxFramesPerSecond: 3,
    upgrade,
    now: () => now,
    ...(overrides.serve === undefined ? {} : { serve: overrides.serve }),
    ...(overrides.viewerPage === undefined ? {} : { viewerPage: overrides.viewerPage }),
  });
  /** The handler, always as a promise (routes answer synchronously with one worker). */
  const handler = async (request: Request) => await handle(request);
  const open = (socket: FakeSocket) => socket.dispatchEvent(new Event("open"));
  const close = (socket: FakeSocket) => socket.dispatchEvent(new CloseEvent("close"));
  return {
    handle,
    handler,
    broadcaster,
    metrics,
    sessions,
    sockets,
    open,
    close,
    advance: (ms: number) => (now += ms),
    drainTick: () => drainTick?.(),
  };
}

const signalText = '{"seq":1}';

const wsRequest = (query = "", headers: Record<string, string> = {}) =>
  new Request(`http://gw/ws/stream${query}`, {
    headers: { upgrade: "websocket", connection: "Upgrade", ...headers },
  });

Deno.test("GET /health answers the spec's JSON with CORS", async () => {
  const { handler } = setup();
  const response = await handler(new Request("http://gw/health"));
  assert.equal(response.status, 200);
  assert.equal(response.headers.get("access-control-allow-origin"), "*");
  const body = await response.json();
  assert.equal(body.service, "gateway");
  assert.equal(body.status, "healthy");
  assert.equal(body.nats_url, "nats://localhost:4222");
  assert.equal(body.connections, 0);
  for (
    const key of [
      "nats_connected",
      "last_message_ts",
      "messages_relayed",
      "consumer_lag",
      "uptime_s",
      "version",
    ]
  ) {
    assert.ok(key in body, `missing ${key}`);
  }
});

Deno.test("/health and /readyz answer 503 when unhealthy; /livez stays 200", async () => {
  const { handler } = setup({ healthy: false });
  const health = await handler(new Request("http://gw/health"));
  assert.equal(health.status, 503);
  assert.equal((await health.json()).status, "unhealthy");
  assert.equal((await handler(new Request("http://gw/readyz"))).status, 503);
  assert.equal((await handler(new Request("http://gw/livez"))).status, 200);
});

Deno.test("unknown paths get 404, wrong methods 405, preflight 204", async () => {
  const { handler } = setup();
  assert.equal((await handler(new Request("http://gw/nope"))).status, 404);
  assert.equal((await handler(new Request("http://gw/health", { method: "POST" }))).status, 405);
  const preflight = await handler(new Request("http://gw/health", { method: "OPTIONS" }));
  assert.equal(preflight.status, 204);
  assert.equal(preflight.headers.get("access-control-allow-origin"), "*");
});

Deno.test("/metrics serves Prometheus text", async () => {
  const { handler } = setup();
  const response = await handler(new Request("http://gw/metrics"));
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type")!, /^text\/plain; version=0\.0\.4/);
  const text = await response.text();
  assert.match(text, /# TYPE gateway_ws_connections gauge\ngateway_ws_connections 0\n/);
});

Deno.test("a plain GET on /ws/stream is a 400, never a crash", async () => {
  const { handler, metrics } = setup();
  const response = await handler(new Request("http://gw/ws/stream"));
  assert.equal(response.status, 400);
  assert.match(await response.text(), /WebSocket upgrade/);
  assert.equal(metrics.connectionsRejected.get({ reason: "bad_request" }), 1);
});

Deno.test("an upgraded socket joins the broadcaster on open and leaves on close", () => {
  const { handler, broadcaster, sockets, open, metrics } = setup();
  handler(wsRequest());
  assert.equal(broadcaster.size, 0, "not before open");
  open(sockets[0]);
  assert.equal(broadcaster.size, 1);
  sockets[0].dispatchEvent(new CloseEvent("close", { code: 1000 }));
  assert.equal(broadcaster.size, 0);
  assert.equal(metrics.connectionsOpened.get(), 1);
  assert.equal(metrics.connectionsClosed.get({ reason: "client" }), 1);
});

Deno.test("past the connection limit upgrades get 503 with Retry-After", async () => {
  const { handler, sockets, open, metrics, sessions, close } = setup({ maxConnections: 2 });
  handler(wsRequest());
  handler(wsRequest());
  open(sockets[0]);
  const refused = await handler(wsRequest());
  assert.equal(refused.status, 503);
  assert.equal(refused.headers.get("retry-after"), "5");
  assert.equal(metrics.connectionsRejected.get({ reason: "limit" }), 1);
  close(sockets[0]);
  await sessions.idle(); // the unopened socket is let go after the open bound
});

Deno.test("client frames: ping answered, binary 1003, too big 1009, flood 1008", () => {
  const { handler, sockets, open } = setup();
  for (let i = 0; i < 4; i++) handler(wsRequest());
  sockets.forEach(open);
  const [ping, binary, big, flood] = sockets;
  ping.dispatchEvent(new MessageEvent("message", { data: '{"type":"ping"}' }));
  assert.deepEqual(ping.sent, ['{"type":"pong"}']);
  ping.dispatchEvent(new MessageEvent("message", { data: "hello" }));
  assert.equal(ping.closedWith, undefined, "text frames are ignored");
  binary.dispatchEvent(new MessageEvent("message", { data: new ArrayBuffer(4) }));
  assert.equal(binary.closedWith?.code, 1003);
  big.dispatchEvent(new MessageEvent("message", { data: "x".repeat(65) }));
  assert.equal(big.closedWith?.code, 1009);
  for (let i = 0; i < 4; i++) flood.dispatchEvent(new MessageEvent("message", { data: "x" }));
  assert.equal(flood.closedWith?.code, 1008);
});

Deno.test("the frame budget renews every second", () => {
  const { handler, sockets, open, advance } = setup();
  handler(wsRequest());
  open(sockets[0]);
  for (let second = 0; second < 5; second++) {
    for (let i = 0; i < 3; i++) {
      sockets[0].dispatchEvent(new MessageEvent("message", { data: "x" }));
    }
    advance(1000);
  }
  assert.equal(sockets[0].closedWith, undefined);
});

Deno.test("a close dispatched twice (idle timeout, then 1005) is counted once, as idle_timeout", () => {
  const { handler, sockets, open, metrics } = setup();
  handler(wsRequest());
  open(sockets[0]);
  const reason = "No response from ping frame.";
  sockets[0].dispatchEvent(new CloseEvent("close", { code: 1001, reason }));
  sockets[0].dispatchEvent(new CloseEvent("close", { code: 1005 }));
  assert.equal(metrics.connectionsClosed.get({ reason: "idle_timeout" }), 1);
  assert.equal(metrics.connectionsClosed.get({ reason: "client" }), 0);
});

Deno.test("with GATEWAY_AUTH_TOKENS a client needs a token, else 1008 before any data", () => {
  const token = "s3cret-token-0123456789";
  const { handler, broadcaster, sockets, open, metrics } = setup({
    authTokens: ["other-token-abcdefgh", token],
  });
  broadcaster.broadcast(signalText);
  handler(wsRequest());
  handler(wsRequest("?token=wrong-token-0123456789"));
  handler(wsRequest(`?token=${token}`));
  handler(wsRequest("", { authorization: `Bearer ${token}` }));
  for (const socket of sockets) open(socket);
  const [none, wrong, query, bearer] = sockets;
  for (const refused of [none, wrong]) {
    assert.deepEqual(refused.closedWith, { code: 1008, reason: "unauthorized" });
    assert.deepEqual(refused.sent, [], "no snapshot for an unauthorized client");
  }
  for (const accepted of [query, bearer]) {
    assert.equal(accepted.closedWith, undefined);
    assert.deepEqual(accepted.sent, [signalText]);
  }
  assert.equal(broadcaster.size, 2);
  assert.equal(metrics.connectionsRejected.get({ reason: "unauthorized" }), 2);
  assert.equal(metrics.connectionsOpened.get(), 2);
});

Deno.test("upgrades reset before they open are let go after the open bound: no lockout", async () => {
  const { handler, sockets, open, metrics, sessions } = setup({
    maxConnections: 3,
    openTimeoutMs: 30,
  });
  // Reset before the 101: Deno dispatches neither open nor close for these.
  for (let i = 0; i < 3; i++) assert.equal((await handler(wsRequest())).status, 200);
  assert.equal((await handler(wsRequest())).status, 503, "held while they might still open");
  await sessions.idle();
  assert.equal(metrics.upgradesAbandoned.get(), 3);
  assert.equal(metrics.socketsHeld.get(), 0);
  const later = await handler(wsRequest());
  assert.equal(later.status, 200, "a later client gets in");
  open(sockets.at(-1)!);
  sockets.at(-1)!.dispatchEvent(new CloseEvent("close"));
  await sessions.idle();
});

Deno.test("sockets the gateway closed count against the limit until their close event", async () => {
  const token = "s3cret-token-0123456789";
  const { handler, broadcaster, sockets, open, close, sessions, advance, drainTick } = setup({
    maxConnections: 3,
    authTokens: [token],
  });
  // Two clients without a token: closed with 1008; a peer that never reads never finishes.
  handler(wsRequest());
  handler(wsRequest());
  // One client that stops reading: closed with 4008 by the Broadcaster.
  handler(wsRequest(`?token=${token}`));
  sockets.forEach(open);
  sockets[2].stalled = true;
  broadcaster.broadcast("x".repeat(600));
  broadcaster.broadcast("y".repeat(600));
  advance(999);
  drainTick();
  const beforeTimeout = sockets[2].closedWith;
  assert.equal(beforeTimeout, undefined, "behind, but not yet for the slow timeout");
  advance(1); // the slow timeout (1000 ms)
  drainTick();
  assert.equal(sockets[2].closedWith?.code, 4008);
  assert.equal(broadcaster.size, 0);
  assert.equal(sockets[0].closedWith?.code, 1008);
  const refused = await handler(wsRequest(`?token=${token}`));
  assert.equal(refused.status, 503, "closing sockets still hold their slots");
  close(sockets[0]);
  const admitted = await handler(wsRequest(`?token=${token}`));
  assert.equal(admitted.status, 200, "a slot frees at the close event");
  sockets.slice(1).forEach(open);
  sockets.forEach(close);
  await sessions.idle();
});

Deno.test("a fixed route with static tokens upgrades synchronously: no await before the upgrade", () => {
  const token = "s3cret-token-0123456789";
  const { handle, sockets, open, broadcaster } = setup({ authTokens: [token] });
  // Deno closes a request's headers once it has upgraded; nothing may wait in between.
  const response = handle(wsRequest(`?token=${token}`));
  assert.ok(response instanceof Response, "answered without a promise");
  assert.equal(sockets.length, 1);
  open(sockets[0]);
  assert.equal(broadcaster.size, 1);
});

Deno.test("an admin port splits the endpoints: public serves routes, /livez, /client.js and /", async () => {
  const page = "<!doctype html><title>viewer</title>";
  const status = async (handler: (r: Request) => Promise<Response>, path: string) =>
    (await handler(new Request(`http://gw${path}`))).status;
  const pub = setup({ serve: "public", viewerPage: page }).handler;
  const admin = setup({ serve: "admin", viewerPage: page }).handler;
  for (const path of ["/health", "/readyz", "/metrics"]) {
    assert.equal(await status(pub, path), 404, `public ${path}`);
    assert.equal(await status(admin, path), 200, `admin ${path}`);
  }
  for (const path of ["/client.js", "/"]) {
    assert.equal(await status(pub, path), 200, `public ${path}`);
    assert.equal(await status(admin, path), 404, `admin ${path}`);
  }
  assert.equal(await status(pub, "/livez"), 200);
  assert.equal(await status(admin, "/livez"), 200);
  assert.equal(await status(pub, "/ws/stream"), 400, "public: the route, a plain GET");
  assert.equal(await status(admin, "/ws/stream"), 404, "admin: no routes");
  const viewer = await pub(new Request("http://gw/"));
  assert.match(viewer.headers.get("content-type")!, /^text\/html/);
  assert.equal(await viewer.text(), page);
});

Deno.test("/ without a viewer page is a 404 whatever the method", async () => {
  const { handler } = setup();
  assert.equal((await handler(new Request("http://gw/"))).status, 404);
  assert.equal((await handler(new Request("http://gw/", { method: "POST" }))).status, 404);
  const script = await handler(new Request("http://gw/client.js", { method: "HEAD" }));
  assert.equal(script.status, 200);
  assert.match(script.headers.get("content-type")!, /^text\/javascript/);
});
