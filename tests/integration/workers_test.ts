/**
 * GATEWAY_WORKERS=2 through the real main.ts with the start task's flags: two isolates share
 * one port, each with its own consumer and cache, and the process still looks like one gateway.
 */
import assert from "node:assert/strict";
import { NatsServer } from "../../tools/nats_server.ts";
import { Client, eventually, health, Publisher, signal } from "../helpers/fixtures.ts";
import { scrape, value } from "../helpers/metrics.ts";
import { GatewayProcess } from "../../tools/gateway_process.ts";

const CLIENTS = 24;

Deno.test("workers: two isolates on one port relay everything and report as one gateway", async () => {
  await using nats = await NatsServer.start();
  await using gateway = await GatewayProcess.spawn({ NATS_URL: nats.url, GATEWAY_WORKERS: "2" });
  const addr = await gateway.listening;
  await using publisher = await Publisher.connect(nats.url);
  await publisher.publish(signal(1));
  // last_message_ts stays null until every worker has relayed (and cached) a message.
  await eventually(async () => {
    const { body } = await health(addr);
    return body.status === "healthy" && body.last_message_ts !== null;
  }, "both workers to cache the first message");

  const clients = await Promise.all(Array.from({ length: CLIENTS }, () => Client.open(addr)));
  // Every client, whichever worker took it, gets the cached snapshot, then each message in order.
  await Promise.all(clients.map((c) => c.waitFor(1)));
  await publisher.publish(signal(2));
  await publisher.publish(signal(3));
  for (const client of clients) {
    assert.deepEqual(await client.waitFor(3), [signal(1), signal(2), signal(3)]);
  }

  // Many at once, over connections the kernel spreads: every worker answers for the process.
  const concurrent = await Promise.all(Array.from({ length: 20 }, () => health(addr)));
  assert.deepEqual(
    concurrent.map((h) => h.body.status),
    Array(20).fill("healthy"),
    JSON.stringify(concurrent.find((h) => h.body.status !== "healthy")?.body),
  );
  // Workers publish their state every 250 ms; wait until the copies include every client.
  await eventually(
    async () => (await health(addr)).body.connections === CLIENTS,
    "every client in the combined report",
  );
  const { status, body } = await health(addr);
  assert.equal(status, 200);
  assert.equal(body.status, "healthy");
  const workers = body.workers ?? [];
  assert.equal(workers.length, 2);
  assert.equal(workers.reduce((sum, w) => sum + w.connections, 0), CLIENTS);
  // The kernel spreads connections; 24 all landing on one worker would mean no spreading.
  for (const worker of workers) assert.ok(worker.connections > 0, JSON.stringify(body));

  await eventually(
    async () => value(await scrape(addr), "gateway_ws_messages_sent_total") === CLIENTS * 3,
    "every delivery in the combined metrics",
  );
  const metrics = await scrape(addr);
  assert.equal(value(metrics, "gateway_ws_connections"), CLIENTS);
  assert.equal(value(metrics, "gateway_ws_messages_sent_total"), CLIENTS * 3);
  // Each worker consumes the subject; NATS-side counters count messages, not copies.
  assert.equal(value(metrics, "gateway_messages_relayed_total"), 3);
  assert.equal(value(metrics, "gateway_nats_connected"), 1);

  gateway.kill("SIGTERM");
  const closes = await Promise.all(clients.map((c) => c.closed));
  assert.deepEqual(closes.map((c) => c.code), Array(CLIENTS).fill(1001));
  assert.equal((await gateway.status).code, 0, gateway.output.slice(-2000));
  assert.doesNotMatch(gateway.output, /"level":"error"|Uncaught|panicked/);
});

Deno.test("workers: a NATS outage past the limit stops every worker, exit 1", async () => {
  await using nats = await NatsServer.start();
  await using gateway = await GatewayProcess.spawn({
    NATS_URL: nats.url,
    GATEWAY_WORKERS: "2",
    GATEWAY_NATS_MAX_OUTAGE_MS: "1000",
  });
  const addr = await gateway.listening;
  const clients = await Promise.all(Array.from({ length: 8 }, () => Client.open(addr)));
  await nats.kill();
  // The process may already be gone by the time a request lands: that is not a 503 yet.
  await eventually(
    async () => (await health(addr).catch(() => undefined))?.status === 503,
    "health to say unhealthy",
  );
  const closes = await Promise.all(clients.map((c) => c.closed));
  assert.deepEqual(closes.map((c) => c.code), Array(8).fill(1001));
  assert.equal((await gateway.status).code, 1);
  assert.match(gateway.output, /"msg":"gateway cannot go on".*GATEWAY_NATS_MAX_OUTAGE_MS/);
});

Deno.test("workers: a worker that cannot start fails the whole start, exit 1", async () => {
  await using nats = await NatsServer.start();
  // Something else holds the port without SO_REUSEPORT, so no worker can bind it.
  using taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  await using gateway = await GatewayProcess.spawn({
    NATS_URL: nats.url,
    GATEWAY_WORKERS: "2",
    GATEWAY_PORT: String(taken.addr.port),
  });
  assert.equal((await gateway.status).code, 1);
  assert.match(gateway.output, /"msg":"gateway failed to start".*(AddrInUse|in use)/i);
});

/** A TCP proxy in front of NATS that can cut the first connection through it. */
class NatsProxy implements AsyncDisposable {
  readonly #pairs: Deno.Conn[][] = [];
  #listener: Deno.Listener | undefined;
  port = 0;

  constructor(readonly upstreamPort: number) {}

  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  /** Accepts (again, on the same port) and pipes each connection to NATS. */
  listen(): void {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: this.port });
    this.#listener = listener;
    this.port = listener.addr.port;
    (async () => {
      for await (const client of listener) {
        const upstream = await Deno.connect({ hostname: "127.0.0.1", port: this.upstreamPort });
        this.#pairs.push([client, upstream]);
        client.readable.pipeTo(upstream.writable).catch(() => {});
        upstream.readable.pipeTo(client.writable).catch(() => {});
      }
    })().catch(() => {});
  }

  /** Cuts the first connection made and refuses new ones: only that client loses NATS. */
  cutFirst(): void {
    this.#listener?.close();
    this.#listener = undefined;
    for (const conn of this.#pairs[0] ?? []) closeQuietly(conn);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.#listener?.close();
    for (const conn of this.#pairs.flat()) closeQuietly(conn);
    await Promise.resolve();
  }
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // Already closed by the other side.
  }
}

Deno.test("workers: one worker losing NATS makes /health 503 whichever worker answers", async () => {
  await using nats = await NatsServer.start();
  await using proxy = new NatsProxy(nats.port);
  proxy.listen();
  await using gateway = await GatewayProcess.spawn({ NATS_URL: proxy.url, GATEWAY_WORKERS: "2" });
  const addr = await gateway.listening;
  const batch = () => Promise.all(Array.from({ length: 10 }, () => health(addr)));
  await eventually(
    async () => (await batch()).every((h) => h.status === 200),
    "both workers healthy",
  );

  // Worker 0 connected first (worker 1 starts once it is ready); only it loses NATS.
  proxy.cutFirst();
  // Each worker answers from its local copy of the process's state: the other worker's copy
  // must learn of the outage within a bound (publishing adds ~50 ms; 5 s is generous).
  await eventually(
    async () => (await batch()).every((h) => h.status === 503),
    "every answer to say unhealthy",
    5_000,
  );
  const { body } = await health(addr);
  assert.equal(body.status, "unhealthy");
  assert.equal(body.nats_connected, false);
  assert.deepEqual(body.workers?.map((w) => w.nats_connected), [false, true]);

  // NATS reachable again: the worker reconnects and the process is healthy again.
  proxy.listen();
  await eventually(
    async () => (await batch()).every((h) => h.status === 200),
    "healthy again after the reconnect",
  );
  gateway.kill("SIGTERM");
  assert.equal((await gateway.status).code, 0, gateway.output.slice(-2000));
});
