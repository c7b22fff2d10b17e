/**
 * Clients that misbehave on purpose: upgrades reset before the 101, peers that never read our
 * close, idle TCP connections past the fd limit, and a clean goodbye at shutdown.
 * Figures (fds, RSS) are printed so they can be compared between runs.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { startGateway } from "../../lib/gateway.ts";
import { NatsServer } from "../../tools/nats_server.ts";
import {
  Client,
  eventually,
  Publisher,
  recordingLogger,
  signal,
  testConfig,
} from "../helpers/fixtures.ts";
import { GatewayProcess } from "../../tools/gateway_process.ts";
import { RawPeer } from "../helpers/raw_ws.ts";

const TOKEN = "hostile-test-token-0123456789";

function upgradeRequest(addr: Deno.NetAddr, query = ""): string {
  const key = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))));
  return `GET /ws/stream${query} HTTP/1.1\r\nHost: ${addr.hostname}:${addr.port}\r\n` +
    `Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\n` +
    `Sec-WebSocket-Version: 13\r\n\r\n`;
}

/**
 * Sends an upgrade and resets the connection (RST) at once. Deno.Conn has no SO_LINGER and its
 * close() sends a FIN, after which Deno completes the upgrade normally; node:net's
 * resetAndDestroy() sends the RST that leaves Deno with neither open nor close event.
 */
function resetUpgrade(addr: Deno.NetAddr): Promise<void> {
  return new Promise((resolve) => {
    const socket = net.connect(addr.port, addr.hostname, () => {
      socket.write(upgradeRequest(addr), () => {
        socket.resetAndDestroy();
        resolve();
      });
    });
    socket.on("error", () => resolve());
  });
}

Deno.test("hostile: upgrades reset before the 101 cannot lock later clients out", async () => {
  await using nats = await NatsServer.start();
  await using gateway = await startGateway(
    testConfig(nats.url, { GATEWAY_MAX_CONNECTIONS: "20" }),
    { logger: recordingLogger() },
  );
  await using publisher = await Publisher.connect(nats.url);
  await publisher.publish(signal(1));
  for (let i = 0; i < 300; i++) await resetUpgrade(gateway.addr);
  const abandoned = () => gateway.metrics.upgradesAbandoned.get();
  // Each reset is held until it opens, closes, or the 10 s open bound lets it go.
  await eventually(() => gateway.metrics.socketsHeld.get() === 0, "resets let go", 25_000);
  console.log(`300 resets: ${abandoned()} never opened and were let go after the open bound`);
  assert.ok(abandoned() > 0, "some resets reached the gateway before its 101");
  await using client = await Client.open(gateway.addr);
  assert.deepEqual(await client.waitFor(1), [signal(1)]);
});

Deno.test("hostile: sockets closed by the gateway whose peer never reads hold their slots", async () => {
  await using nats = await NatsServer.start();
  await using gateway = await startGateway(
    testConfig(nats.url, { GATEWAY_MAX_CONNECTIONS: "10", GATEWAY_AUTH_TOKENS: TOKEN }),
    { logger: recordingLogger() },
  );
  const peers: RawPeer[] = [];
  try {
    const statuses: number[] = [];
    for (let i = 0; i < 30; i++) {
      // No token: closed with 1008, and the peer never reads that close frame.
      const peer = await RawPeer.connect(gateway.addr, upgradeRequest(gateway.addr));
      peers.push(peer);
      statuses.push(peer.response.status);
    }
    assert.equal(statuses.filter((s) => s === 101).length, 10, `statuses: ${statuses}`);
    assert.equal(statuses.filter((s) => s === 503).length, 20);
    const refused = await fetch(`http://127.0.0.1:${gateway.addr.port}/ws/stream?token=${TOKEN}`, {
      headers: {
        upgrade: "websocket",
        connection: "Upgrade",
        "sec-websocket-version": "13",
        "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
      },
    });
    await refused.body?.cancel();
    assert.equal(refused.status, 503, "a closing socket still counts");
    const m = gateway.metrics;
    assert.equal(m.socketsHeld.get(), 10);
    assert.equal(m.connections.get(), 0);
    // Opened and closed add up: nothing opened (all refused), nothing left uncounted.
    assert.equal(m.connectionsOpened.get() - sumClosed(gateway.metrics), m.connections.get());
  } finally {
    for (const peer of peers) peer.close();
  }
  // Once the peers go, their slots free and a real client gets in.
  await eventually(() => gateway.metrics.socketsHeld.get() === 0, "closing sockets gone");
  await using client = new Client(
    new WebSocket(`ws://127.0.0.1:${gateway.addr.port}/ws/stream?token=${TOKEN}`),
  );
  await client.opened;
});

function sumClosed(
  metrics: {
    connectionsClosed: { snapshot(): { values: readonly (readonly [string, number])[] } };
  },
): number {
  return metrics.connectionsClosed.snapshot().values.reduce((sum, [, v]) => sum + v, 0);
}

Deno.test("hostile: at shutdown a real client sees 1001 with a clean close", async () => {
  await using nats = await NatsServer.start();
  const gateway = await startGateway(testConfig(nats.url), { logger: recordingLogger() });
  const clients = await Promise.all(Array.from({ length: 5 }, () => Client.open(gateway.addr)));
  await gateway.shutdown();
  for (const client of clients) {
    const close = await client.closed;
    assert.equal(close.code, 1001);
    // Deno's server shutdown sends its own 1001 "Server shutting down" if it overtakes ours.
    assert.equal(close.reason, "gateway shutting down");
    assert.equal(close.wasClean, true, "closed by our handshake, not cut by Deno's shutdown");
  }
});

function fdsAndRss(pid: number): { fds: number; rssMb: number } {
  let fds = 0;
  for (const _ of Deno.readDirSync(`/proc/${pid}/fd`)) fds++;
  const rssKb = Number(/VmRSS:\s+(\d+)/.exec(Deno.readTextFileSync(`/proc/${pid}/status`))?.[1]);
  return { fds, rssMb: Math.round(rssKb / 102.4) / 10 };
}

Deno.test("hostile: idle connections past `ulimit -n` never kill the process; clients keep receiving", async () => {
  await using nats = await NatsServer.start();
  await using publisher = await Publisher.connect(nats.url);
  await using gw = await GatewayProcess.spawn(
    { NATS_URL: nats.url, GATEWAY_MAX_CONNECTIONS: "10000" },
    undefined,
    { fdLimit: 256 },
  );
  const idle: Deno.Conn[] = [];
  const clients: Client[] = [];
  try {
    const addr = await gw.listening;
    const startLine = gw.lines.find((l: string) => l.includes('"msg":"gateway listening"')) ?? "";
    // The start task reads `ulimit -Sn` and passes it on (GATEWAY_FD_LIMIT): the cap applies.
    assert.match(startLine, /"fd_limit":256/);
    assert.match(startLine, /"max_connections":192/);
    for (let i = 0; i < 5; i++) clients.push(await Client.open(addr));
    await publisher.publish(signal(1));
    await Promise.all(clients.map((c) => c.waitFor(1)));
    const pid = await gw.gatewayPid();
    const before = fdsAndRss(pid);
    // More idle TCP connections than the process has descriptors: Deno's accept loop hits EMFILE.
    for (let i = 0; i < 400; i++) {
      try {
        idle.push(await Deno.connect({ hostname: addr.hostname, port: addr.port }));
      } catch {
        break; // the listener is gone (refused) or the backlog is full
      }
    }
    const during = fdsAndRss(pid);
    await publisher.publish(signal(2));
    await Promise.all(clients.map((c) => c.waitFor(2)));
    for (const conn of idle.splice(0)) conn.close();
    // Accepting again once descriptors are free: a new client gets the stream.
    let late: Client | undefined;
    await eventually(
      async () => {
        try {
          late = await Client.open(addr);
          return true;
        } catch {
          return false;
        }
      },
      "a new client after the idle connections went",
      20_000,
    );
    clients.push(late!);
    assert.deepEqual(await late!.waitFor(1), [signal(2)]);
    const after = fdsAndRss(pid);
    console.log(
      `ulimit -n 256, ${
        during.fds - before.fds
      } idle connections accepted: fds ${before.fds} -> ${during.fds} -> ${after.fds}, RSS ${before.rssMb} -> ${during.rssMb} -> ${after.rssMb} MB`,
    );
    const output = gw.output;
    assert.doesNotMatch(output, /Uncaught/);
    assert.match(output, /"msg":"http listener stopped; connected clients keep their streams/);
    assert.match(output, /"msg":"http listener restored"/);
  } finally {
    for (const conn of idle) conn.close();
    for (const client of clients) await client.close();
    gw.kill("SIGTERM");
    const status = await gw.status;
    assert.equal(status.code, 0, gw.output);
  }
});
