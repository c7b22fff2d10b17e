/**
 * Stream setup against real nats-servers: replica counts on a single server and on a 3-node
 * cluster, restarts touching only the relayed stream, failed requests saying what was asked.
 */
import assert from "node:assert/strict";
import { connect } from "../../lib/nats/transport.ts";
import type { NatsConnection } from "@nats-io/nats-core";
import { type JetStreamManager, jetstreamManager } from "@nats-io/jetstream";
import { startGateway } from "../../lib/gateway.ts";
import { ensureRelayedStream, setUpStreams, type StreamSettings } from "../../lib/nats/streams.ts";
import { NatsServer } from "../../tools/nats_server.ts";
import {
  Client,
  eventually,
  Publisher,
  recordingLogger,
  signal,
  testConfig,
} from "../helpers/fixtures.ts";

const DEFAULTS: StreamSettings = {
  createStreams: true,
  streamReplicas: 0,
  stream: "LEVEL_SIGNALS",
  subject: "levels.signals",
};

async function withManager<T>(
  url: string,
  use: (jsm: JetStreamManager, nc: NatsConnection) => Promise<T>,
): Promise<T> {
  const nc = await connect({ servers: url });
  try {
    // No API check: a cluster's JetStream answers only once it has elected a meta leader.
    return await use(await jetstreamManager(nc, { checkAPI: false }), nc);
  } finally {
    await nc.close();
  }
}

async function replicas(jsm: JetStreamManager, stream: string): Promise<number> {
  return (await jsm.streams.info(stream)).config.num_replicas;
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

/** The meta leader is elected and every peer can hold a replica (probed with an R3 stream). */
async function ready(jsm: JetStreamManager): Promise<boolean> {
  try {
    await jsm.streams.add({ name: "PROBE", subjects: ["probe.ready"], num_replicas: 3 });
    await jsm.streams.delete("PROBE");
    return true;
  } catch {
    return false;
  }
}

/** Three JetStream servers routed into one cluster on loopback. */
async function startCluster(): Promise<NatsServer[] & AsyncDisposable> {
  const routePorts = [freePort(), freePort(), freePort()];
  const routes = routePorts.map((p) => `nats://127.0.0.1:${p}`).join(",");
  const servers = await Promise.all(routePorts.map((port, i) =>
    NatsServer.start({
      args: [
        "-n",
        `n${i + 1}`,
        "--cluster_name",
        "gateway-test",
        "--cluster",
        `nats://127.0.0.1:${port}`,
        "--routes",
        routes,
      ],
    })
  ));
  return Object.assign(servers, {
    async [Symbol.asyncDispose]() {
      await Promise.all(servers.map((s) => s[Symbol.asyncDispose]()));
    },
  });
}

Deno.test("on a single server the streams get 1 replica; GATEWAY_STREAM_REPLICAS=3 is refused clearly", async () => {
  await using nats = await NatsServer.start();
  await withManager(nats.url, async (jsm) => {
    await assert.rejects(
      setUpStreams(jsm, { ...DEFAULTS, streamReplicas: 3 }, recordingLogger()),
      /stream create LEVEL_SIGNALS \(3 replicas\) failed: replicas > 1 not supported in non-clustered mode \(GATEWAY_STREAM_REPLICAS=3: set it to at most the number of JetStream servers/,
    );
    const logger = recordingLogger();
    await setUpStreams(jsm, DEFAULTS, logger);
    assert.equal(await replicas(jsm, "MARKET_DATA"), 1);
    assert.equal(await replicas(jsm, "LEVEL_SIGNALS"), 1);
    assert.deepEqual(
      logger.lines.filter((l) => l.msg === "stream created").map((l) => [l.stream, l.replicas]),
      [["MARKET_DATA", 1], ["LEVEL_SIGNALS", 1]],
    );
    assert.ok(!logger.lines.some((l) => l.level === "warn"), "no step-down, no difference");
  });
});

Deno.test("on a 3-node cluster new streams get 3 replicas; a differing count is left alone and logged once", async () => {
  await using cluster = await startCluster();
  const url = cluster[0].url;
  await withManager(url, async (jsm) => {
    // JetStream answers once the cluster has elected its meta leader.
    await eventually(
      () => ready(jsm),
      "JetStream on all three servers",
      30_000,
    );
    await jsm.streams.add({ name: "MARKET_DATA", subjects: ["market.*"], num_replicas: 1 });
    const logger = recordingLogger();
    await setUpStreams(jsm, DEFAULTS, logger);
    assert.equal(await replicas(jsm, "LEVEL_SIGNALS"), 3);
    assert.equal(await replicas(jsm, "MARKET_DATA"), 1, "an existing stream is left alone");
    const warnings = logger.lines.filter((l) =>
      l.msg === "stream exists with a different config; left unchanged"
    );
    assert.equal(warnings.length, 1);
    assert.equal(warnings[0].stream, "MARKET_DATA");
    const differences = warnings[0].differences as { field: string }[];
    assert.ok(
      differences.some((d) =>
        JSON.stringify(d) === '{"field":"num_replicas","expected":3,"actual":1}'
      ),
      JSON.stringify(differences),
    );
    // A restart's check of the relayed stream says nothing more.
    await ensureRelayedStream(jsm, DEFAULTS, logger);
    assert.equal(logger.lines.filter((l) => l.level === "warn").length, 1);

    await jsm.streams.delete("LEVEL_SIGNALS");
    await setUpStreams(jsm, { ...DEFAULTS, streamReplicas: 2 }, recordingLogger());
    assert.equal(await replicas(jsm, "LEVEL_SIGNALS"), 2, "GATEWAY_STREAM_REPLICAS overrides");
  });
});

Deno.test("ensureRelayedStream recreates only the relayed stream, and nothing without GATEWAY_CREATE_STREAMS", async () => {
  await using nats = await NatsServer.start();
  await withManager(nats.url, async (jsm) => {
    const logger = recordingLogger();
    await ensureRelayedStream(jsm, { ...DEFAULTS, createStreams: false }, logger);
    assert.deepEqual(await jsm.streams.names().next(), []);
    await ensureRelayedStream(jsm, DEFAULTS, logger);
    assert.deepEqual(await jsm.streams.names().next(), ["LEVEL_SIGNALS"]);
    await ensureRelayedStream(
      jsm,
      { ...DEFAULTS, stream: "MARKET_DATA", subject: "market.x" },
      logger,
    );
    assert.deepEqual((await jsm.streams.names().next()).sort(), ["LEVEL_SIGNALS", "MARKET_DATA"]);
    await ensureRelayedStream(jsm, { ...DEFAULTS, stream: "CUSTOM" }, logger);
    assert.ok(!(await jsm.streams.names().next()).includes("CUSTOM"), "not a platform stream");
  });
});

Deno.test("a consumer restart after the stream was deleted recreates that stream and no other", async () => {
  await using nats = await NatsServer.start();
  await using gateway = await startGateway(testConfig(nats.url), { logger: recordingLogger() });
  await using publisher = await Publisher.connect(nats.url);
  await using client = await Client.open(gateway.addr);
  await publisher.publish(signal(1));
  await client.waitFor(1);
  const jsm = await jetstreamManager(publisher.nc);
  await jsm.streams.delete("MARKET_DATA");
  await jsm.streams.delete("LEVEL_SIGNALS");
  await eventually(
    () => jsm.streams.info("LEVEL_SIGNALS").then(() => true, () => false),
    "LEVEL_SIGNALS recreated by the restarted consumer",
  );
  await eventually(
    async () => (await jsm.consumers.list("LEVEL_SIGNALS").next()).length > 0,
    "a new consumer",
  );
  await publisher.publish(signal(2));
  assert.deepEqual(await client.waitFor(2), [signal(1), signal(2)]);
  assert.deepEqual(await jsm.streams.names().next(), ["LEVEL_SIGNALS"], "MARKET_DATA untouched");
});

Deno.test("a failed stream request says what was asked", async () => {
  // An account without JetStream: every JetStream request fails.
  await using nats = await NatsServer.start({
    config: `accounts { NOJS { users = [{ user: plain, password: "plain-secret-pw" }] } }`,
  });
  const nc = await connect({ servers: nats.url, user: "plain", pass: "plain-secret-pw" });
  try {
    const jsm = await jetstreamManager(nc, { checkAPI: false, timeout: 1_000 });
    await assert.rejects(
      setUpStreams(jsm, { ...DEFAULTS, createStreams: false }, recordingLogger()),
      /^NatsRequestError: stream info LEVEL_SIGNALS failed: \S/,
    );
  } finally {
    await nc.close();
  }
});

Deno.test("startup goes on when a platform stream the gateway does not read cannot be set up", async () => {
  await using nats = await NatsServer.start({
    config: `authorization { users = [{
      user: gw, password: "gw-secret-pw-1",
      permissions: { publish: { deny: ["$JS.API.STREAM.INFO.MARKET_DATA", "$JS.API.STREAM.CREATE.MARKET_DATA"] } }
    }] }`,
  });
  const logger = recordingLogger();
  await using gateway = await startGateway(
    testConfig(nats.url, { NATS_USER: "gw", NATS_PASSWORD: "gw-secret-pw-1" }),
    { logger },
  );
  const warning = logger.lines.find((l) => l.stream === "MARKET_DATA" && l.level === "warn");
  assert.match(String(warning?.error), /^stream info MARKET_DATA failed: Permissions Violation/);
  assert.ok(gateway.addr.port > 0);
});
