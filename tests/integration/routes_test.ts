/** GATEWAY_ROUTES against a real nats-server: fixed and templated routes, isolation, bounds. */
import assert from "node:assert/strict";
import { jetstreamManager } from "@nats-io/jetstream";
import { startGateway } from "../../lib/gateway.ts";
import { NatsServer } from "../../tools/nats_server.ts";
import {
  Client,
  eventually,
  health,
  Publisher,
  recordingLogger,
  signal,
  testConfig,
} from "../helpers/fixtures.ts";
import { scrape, value } from "../helpers/metrics.ts";
import { GatewayProcess } from "../../tools/gateway_process.ts";
import { randomSecret, signToken } from "../helpers/jwt.ts";
import { FakeSocket } from "../helpers/fake_socket.ts";

const TWO_ROUTES = "/ws/stream=levels.signals,/ws/flow=market.flow";
const SYMBOLS = "/ws/levels/{symbol}=levels.{symbol}.signals";

/** A stream for per-symbol subjects (LEVEL_SIGNALS captures two-token subjects only). */
async function symbolStream(publisher: Publisher): Promise<void> {
  const jsm = await jetstreamManager(publisher.nc);
  await jsm.streams.add({ name: "SYMBOL_SIGNALS", subjects: ["levels.*.signals"] });
}

const url = (addr: Deno.NetAddr, path: string) => `http://${addr.hostname}:${addr.port}${path}`;

Deno.test("two fixed routes relay their own subjects, each isolated from the other's faults", async () => {
  await using nats = await NatsServer.start();
  const logger = recordingLogger();
  await using gateway = await startGateway(testConfig(nats.url, { GATEWAY_ROUTES: TWO_ROUTES }), {
    logger,
    lagPollMs: 200,
  });
  await using publisher = await Publisher.connect(nats.url);
  await using levels = await Client.open(gateway.addr, "/ws/stream");
  await using flow = await Client.open(gateway.addr, "/ws/flow");
  await publisher.publish(signal(1), "levels.signals");
  await publisher.publish('{"flow":1}', "market.flow");
  assert.deepEqual(await levels.waitFor(1), [signal(1)]);
  assert.deepEqual(await flow.waitFor(1), ['{"flow":1}']);

  // A bad payload on one route: counted there, nothing reaches either route's clients.
  await publisher.publish("not json", "market.flow");
  await publisher.publish(signal(2), "levels.signals");
  await publisher.publish('{"flow":2}', "market.flow");
  assert.deepEqual(await levels.waitFor(2), [signal(1), signal(2)]);
  assert.deepEqual(await flow.waitFor(2), ['{"flow":1}', '{"flow":2}']);
  const metrics = gateway.metrics;
  assert.equal(metrics.invalidPayloads.get({ route: "/ws/flow", reason: "invalid_json" }), 1);
  assert.equal(metrics.invalidPayloads.get({ route: "/ws/stream", reason: "invalid_json" }), 0);

  // /ws/flow's stream deleted: that route turns unhealthy, /ws/stream goes on relaying.
  const jsm = await jetstreamManager(publisher.nc);
  await jsm.streams.delete("MARKET_DATA");
  await publisher.publish(signal(3), "levels.signals");
  assert.deepEqual((await levels.waitFor(3))[2], signal(3));
  assert.equal(levels.messages.length, 3, "no duplicate, nothing else");
  // The route's stream comes back (recreated on its consumer's restart) and it relays again.
  await eventually(async () => {
    try {
      await publisher.publish('{"flow":3}', "market.flow");
      return true;
    } catch {
      return false;
    }
  }, "MARKET_DATA recreated");
  await flow.waitFor(3);
  assert.equal(flow.messages.at(-1), '{"flow":3}');
  await eventually(async () => (await health(gateway.addr)).status === 200, "healthy again");
  const report = (await health(gateway.addr)).body;
  assert.deepEqual(report.routes?.map((r) => [r.path, r.subject, r.stream]), [
    ["/ws/stream", "levels.signals", "LEVEL_SIGNALS"],
    ["/ws/flow", "market.flow", "MARKET_DATA"],
  ]);
});

Deno.test("a templated route: each symbol its own cache, snapshot on connect and clients", async () => {
  await using nats = await NatsServer.start();
  await using publisher = await Publisher.connect(nats.url);
  await symbolStream(publisher);
  // Stored before the gateway starts: the first client of each symbol gets it at once.
  await publisher.publish(signal(1, { symbol: "SPY" }), "levels.SPY.signals");
  await publisher.publish(signal(2, { symbol: "QQQ" }), "levels.QQQ.signals");
  await publisher.publish(signal(3, { symbol: "SPY" }), "levels.SPY.signals");
  await using gateway = await startGateway(testConfig(nats.url, { GATEWAY_ROUTES: SYMBOLS }), {
    logger: recordingLogger(),
  });
  await using spy = await Client.open(gateway.addr, "/ws/levels/SPY");
  await using qqq = await Client.open(gateway.addr, "/ws/levels/QQQ");
  await using iwm = await Client.open(gateway.addr, "/ws/levels/IWM");
  assert.deepEqual(await spy.waitFor(1), [signal(3, { symbol: "SPY" })]);
  assert.deepEqual(await qqq.waitFor(1), [signal(2, { symbol: "QQQ" })]);
  await publisher.publish(signal(4, { symbol: "IWM" }), "levels.IWM.signals");
  await publisher.publish(signal(5, { symbol: "SPY" }), "levels.SPY.signals");
  await publisher.publish(signal(6, { symbol: "QQQ" }), "levels.QQQ.signals");
  assert.deepEqual(await iwm.waitFor(1), [signal(4, { symbol: "IWM" })]);
  assert.deepEqual(await spy.waitFor(2), [
    signal(3, { symbol: "SPY" }),
    signal(5, { symbol: "SPY" }),
  ]);
  assert.deepEqual(await qqq.waitFor(2), [
    signal(2, { symbol: "QQQ" }),
    signal(6, { symbol: "QQQ" }),
  ]);
  // A late client of a held value gets that value's newest at once, nobody else's.
  await using late = await Client.open(gateway.addr, "/ws/levels/IWM");
  assert.deepEqual(await late.waitFor(1), [signal(4, { symbol: "IWM" })]);
  assert.equal(iwm.messages.length, 1);

  // One consumer for the route (a wildcard filter), not one per value.
  const jsm = await jetstreamManager(publisher.nc);
  const consumers = await jsm.consumers.list("SYMBOL_SIGNALS").next();
  assert.equal(consumers.length, 1);
  assert.equal(consumers[0].config.filter_subject, "levels.*.signals");

  // Labels are the configured path, never a client's value: bounded cardinality.
  assert.ok(gateway.metrics.relayDelay.count({ route: "/ws/levels/{symbol}" }) >= 3);
  const families = await scrape(gateway.addr);
  const labels = [...families.values()].flatMap((f) => f.metrics.map((m) => m.labels?.route))
    .filter((route) => route !== undefined);
  assert.ok(labels.length > 0);
  assert.deepEqual([...new Set(labels)], ["/ws/levels/{symbol}"]);
  assert.equal(value(families, "gateway_route_connections", { route: "/ws/levels/{symbol}" }), 4);
  assert.equal(families.get("gateway_relay_delay_seconds")?.type, "HISTOGRAM");
});

Deno.test("invalid template values get 400 and unknown paths 404, before any upgrade", async () => {
  await using nats = await NatsServer.start();
  await using publisher = await Publisher.connect(nats.url);
  await symbolStream(publisher);
  await using gateway = await startGateway(testConfig(nats.url, { GATEWAY_ROUTES: SYMBOLS }), {
    logger: recordingLogger(),
  });
  const upgrade = { upgrade: "websocket", connection: "Upgrade", "sec-websocket-version": "13" };
  const headers = { ...upgrade, "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==" };
  for (
    const [path, status] of [
      ["/ws/levels/", 400],
      ["/ws/levels/a*b", 400],
      ["/ws/levels/a%3Eb", 400],
      ["/ws/levels/a.b", 400],
      ["/ws/levels/a%20b", 400],
      [`/ws/levels/${"X".repeat(65)}`, 400],
      ["/ws/levels/SPY/more", 404],
      ["/ws/other", 404],
    ] as const
  ) {
    const response = await fetch(url(gateway.addr, path), { headers });
    await response.body?.cancel();
    assert.equal(response.status, status, path);
  }
  assert.equal(gateway.metrics.connectionsOpened.get(), 0);
});

Deno.test("a templated route holds at most GATEWAY_ROUTE_MAX_VALUES values", async () => {
  await using nats = await NatsServer.start();
  await using publisher = await Publisher.connect(nats.url);
  await symbolStream(publisher);
  await using gateway = await startGateway(
    testConfig(nats.url, { GATEWAY_ROUTES: SYMBOLS, GATEWAY_ROUTE_MAX_VALUES: "2" }),
    { logger: recordingLogger() },
  );
  const [route] = gateway.routes;
  await using spy = await Client.open(gateway.addr, "/ws/levels/SPY");
  const qqq = await Client.open(gateway.addr, "/ws/levels/QQQ");
  assert.equal(route.valuesHeld, 2);
  await qqq.close();
  await eventually(() => route.connections === 1, "QQQ's client gone");
  // QQQ has no clients left: the least recently used such value makes room.
  await using aapl = await Client.open(gateway.addr, "/ws/levels/AAPL");
  assert.equal(route.valuesHeld, 2);
  // Every value held has a client: a new one is refused until one frees up.
  const refused = await fetch(url(gateway.addr, "/ws/levels/IWM"), {
    headers: {
      upgrade: "websocket",
      connection: "Upgrade",
      "sec-websocket-version": "13",
      "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
    },
  });
  await refused.body?.cancel();
  assert.equal(refused.status, 503);
  assert.equal(route.valuesHeld, 2);
  // Messages for values nobody asked for never push out a value clients hold.
  await publisher.publish(signal(9), "levels.TSLA.signals");
  await publisher.publish(signal(10), "levels.SPY.signals");
  await spy.waitFor(1);
  assert.equal(route.valuesHeld, 2);
  void aapl;
});

Deno.test("GATEWAY_ADMIN_PORT: health and metrics there only; routes and /livez public", async () => {
  await using nats = await NatsServer.start();
  await using gateway = await startGateway(
    testConfig(nats.url, { GATEWAY_ADMIN_PORT: "127.0.0.1:0" }),
    { logger: recordingLogger() },
  );
  const admin = gateway.adminAddr!;
  assert.ok(admin && admin.port !== gateway.addr.port);
  const status = async (addr: Deno.NetAddr, path: string) => {
    const response = await fetch(url(addr, path));
    await response.body?.cancel();
    return response.status;
  };
  for (const path of ["/health", "/readyz", "/metrics"]) {
    assert.equal(await status(admin, path), 200, `admin ${path}`);
    assert.equal(await status(gateway.addr, path), 404, `public ${path}`);
  }
  assert.equal(await status(gateway.addr, "/livez"), 200);
  assert.equal(await status(admin, "/livez"), 200);
  assert.equal(await status(admin, "/ws/stream"), 404, "no route on the admin port");
  await using client = await Client.open(gateway.addr, "/ws/stream");
  assert.equal(client.socket.readyState, WebSocket.OPEN);
});

Deno.test("with GATEWAY_WORKERS=2 every worker serves every route", async () => {
  await using nats = await NatsServer.start();
  await using publisher = await Publisher.connect(nats.url);
  await symbolStream(publisher);
  await using gateway = await GatewayProcess.spawn({
    NATS_URL: nats.url,
    GATEWAY_WORKERS: "2",
    GATEWAY_ROUTES: `/ws/stream=levels.signals,${SYMBOLS}`,
  });
  const addr = await gateway.listening;
  await eventually(async () => (await health(addr)).status === 200, "healthy", 15_000);
  // Enough clients that the kernel hands some to each worker.
  const streamClients = await Promise.all(
    Array.from({ length: 8 }, () => Client.open(addr, "/ws/stream")),
  );
  const spyClients = await Promise.all(
    Array.from({ length: 8 }, () => Client.open(addr, "/ws/levels/SPY")),
  );
  try {
    await publisher.publish(signal(1), "levels.signals");
    await publisher.publish(signal(2, { symbol: "SPY" }), "levels.SPY.signals");
    for (const client of streamClients) assert.deepEqual(await client.waitFor(1), [signal(1)]);
    for (const client of spyClients) {
      assert.deepEqual(await client.waitFor(1), [signal(2, { symbol: "SPY" })]);
    }
    // Workers publish their state every 400 ms: the combined report follows.
    const perRoute = async () =>
      JSON.stringify((await health(addr)).body.routes?.map((r) => [r.path, r.connections]));
    const expected = JSON.stringify([["/ws/stream", 8], ["/ws/levels/{symbol}", 8]]);
    await eventually(async () => (await perRoute()) === expected, "both routes' clients counted");
    assert.equal((await health(addr)).body.workers?.length, 2);
  } finally {
    await Promise.all([...streamClients, ...spyClients].map((c) => c.close()));
  }
});

Deno.test("a bad GATEWAY_ROUTES entry stops startup with exit 2 naming it", async () => {
  await using gateway = await GatewayProcess.spawn({
    NATS_URL: "nats://127.0.0.1:1",
    GATEWAY_ROUTES: "/ws/stream=levels.signals,/metrics=market.flow",
  });
  const status = await gateway.status;
  assert.equal(status.code, 2);
  const errors = gateway.output.split("\n").filter((l) => l.startsWith("{")).map((l) =>
    JSON.parse(l)
  )
    .filter((l) => l.level === "error");
  assert.match(errors[0].error, /^GATEWAY_ROUTES entry 2 "\/metrics=market\.flow": .*reserved/);
});

Deno.test("a token's routes claim admits it to the routes it names and no other", async () => {
  await using nats = await NatsServer.start();
  await using publisher = await Publisher.connect(nats.url);
  await symbolStream(publisher);
  const secret = randomSecret();
  await using gateway = await startGateway(
    testConfig(nats.url, {
      GATEWAY_ROUTES: `/ws/stream=levels.signals,${SYMBOLS}`,
      GATEWAY_JWT_SECRET: secret,
    }),
    { logger: recordingLogger() },
  );
  await publisher.publish(signal(1), "levels.signals");
  await publisher.publish(signal(2, { symbol: "SPY" }), "levels.SPY.signals");
  const token = await signToken({ secret }, { routes: ["/ws/levels/*"] });
  await using spy = await Client.open(gateway.addr, `/ws/levels/SPY?token=${token}`);
  assert.deepEqual(await spy.waitFor(1), [signal(2, { symbol: "SPY" })]);
  const refused = new Client(
    new WebSocket(`ws://${gateway.addr.hostname}:${gateway.addr.port}/ws/stream?token=${token}`),
  );
  const closed = await refused.closed;
  assert.equal(closed.code, 1008);
  assert.equal(closed.reason, "forbidden");
  assert.deepEqual(refused.messages, [], "not one payload byte");
});

Deno.test("a value dropped between a client's upgrade and its open is held again, never orphaned", async () => {
  await using nats = await NatsServer.start();
  await using publisher = await Publisher.connect(nats.url);
  await symbolStream(publisher);
  await using gateway = await startGateway(
    testConfig(nats.url, { GATEWAY_ROUTES: SYMBOLS, GATEWAY_ROUTE_MAX_VALUES: "1" }),
    { logger: recordingLogger() },
  );
  const [route] = gateway.routes;
  // Upgraded for SPY, not yet open; then QQQ takes the only place.
  const spy = (await route.broadcasterFor("SPY"))!;
  await route.broadcasterFor("QQQ");
  assert.equal(route.valuesHeld, 1);
  const late = new FakeSocket();
  spy.add(late); // SPY's client opens: SPY is held again, over the bound by the joining client
  assert.equal(route.valuesHeld, 2);
  await publisher.publish(signal(1, { symbol: "SPY" }), "levels.SPY.signals");
  await eventually(() => late.sent.length === 1, "SPY's message reaches the late client");
  // SPY dropped, then made anew for another client: a client upgraded for the old one is told
  // to come back (1013) rather than left on a cache no message reaches.
  spy.remove(late);
  await route.broadcasterFor("IWM"); // drops QQQ (no clients)
  await route.broadcasterFor("TSLA"); // drops SPY
  const respawned = await route.broadcasterFor("SPY"); // drops IWM, makes SPY anew
  assert.ok(respawned !== undefined && respawned !== spy);
  const orphan = new FakeSocket();
  spy.add(orphan);
  assert.equal(orphan.closedWith?.code, 1013);
  assert.deepEqual(orphan.sent, [], "nothing from the dropped cache");
});
