/** The browser client (client/gateway_client.ts) on Deno's WebSocket against a real gateway. */
import assert from "node:assert/strict";
import { type Gateway, startGateway } from "../../lib/gateway.ts";
import { NatsServer } from "../../tools/nats_server.ts";
import { Publisher, recordingLogger, signal, testConfig } from "../helpers/fixtures.ts";
import {
  GatewayClient,
  type GatewayClientOptions,
  type GatewayState,
  type TokenReason,
} from "../../client/gateway_client.ts";
import type { LevelsSignalsV1 } from "../../client/levels_signals_v1.ts";

const TOKEN = "client-test-token-0123456789";

/** A client recording what it delivers, with promises for the next snapshot or state. */
function watch(gateway: Gateway, options: Partial<GatewayClientOptions> = {}) {
  const { hostname, port } = gateway.addr;
  const client = new GatewayClient<LevelsSignalsV1>({
    url: `ws://${hostname}:${port}/ws/stream`,
    backoffBaseMs: 50,
    backoffCapMs: 500,
    ...options,
  });
  const seqs: number[] = [];
  const states: GatewayState[] = [];
  client.addEventListener(
    "snapshot",
    (e) => seqs.push((e.snapshot as unknown as { seq: number }).seq),
  );
  client.addEventListener("statechange", (e) => states.push(e.state));
  const until = (what: string, ready: () => boolean, timeoutMs = 10_000) =>
    new Promise<void>((resolve, reject) => {
      if (ready()) return resolve();
      const timer = setTimeout(() => {
        client.removeEventListener("snapshot", check);
        client.removeEventListener("statechange", check);
        reject(new Error(`timed out waiting for ${what}; got ${seqs} / ${states}`));
      }, timeoutMs);
      const check = () => {
        if (!ready()) return;
        clearTimeout(timer);
        client.removeEventListener("snapshot", check);
        client.removeEventListener("statechange", check);
        resolve();
      };
      client.addEventListener("snapshot", check);
      client.addEventListener("statechange", check);
    });
  return {
    client,
    seqs,
    states,
    snapshot: (seq: number) => until(`snapshot ${seq}`, () => seqs.includes(seq)),
    state: (state: GatewayState) => until(`state ${state}`, () => client.state === state),
  };
}

Deno.test("client: snapshot then updates; reconnects by itself after a gateway restart", async () => {
  await using nats = await NatsServer.start();
  await using publisher = await Publisher.connect(nats.url);
  await using first = await startGateway(testConfig(nats.url), { logger: recordingLogger() });
  await publisher.publish(signal(1));
  const w = watch(first);
  await w.snapshot(1); // the cached latest, first
  await publisher.publish(signal(2));
  await w.snapshot(2);
  assert.equal(w.client.state, "open");

  await first.shutdown();
  await w.state("connecting");
  const port = String(first.addr.port);
  await using second = await startGateway(testConfig(nats.url, { GATEWAY_PORT: port }), {
    logger: recordingLogger(),
  });
  await w.state("open");
  await publisher.publish(signal(3));
  await w.snapshot(3);
  // The restarted gateway's cached snapshot 2 was not delivered twice.
  assert.deepEqual(w.seqs, [1, 2, 3]);
  assert.ok(w.client.stats.disconnects >= 1);
  await w.client.close();
  assert.equal(w.client.state, "closed");
  await second.shutdown();
});

Deno.test("client: stale when the publisher stops, fresh when it resumes", async () => {
  await using nats = await NatsServer.start();
  await using publisher = await Publisher.connect(nats.url);
  await using gateway = await startGateway(testConfig(nats.url), { logger: recordingLogger() });
  const w = watch(gateway, { expectedIntervalMs: 50, staleAfter: 4 });
  await w.state("open");
  await publisher.publish(signal(1));
  await w.snapshot(1);
  await w.state("stale"); // nothing for 200 ms
  await publisher.publish(signal(2));
  await w.snapshot(2);
  assert.equal(w.client.state, "open");
  await w.client.close();
});

Deno.test("client: a refused token is replaced through the callback", async () => {
  await using nats = await NatsServer.start();
  await using publisher = await Publisher.connect(nats.url);
  await using gateway = await startGateway(
    testConfig(nats.url, { GATEWAY_AUTH_TOKENS: TOKEN }),
    { logger: recordingLogger() },
  );
  await publisher.publish(signal(1));
  const reasons: TokenReason[] = [];
  const w = watch(gateway, {
    token: ({ reason }) => {
      reasons.push(reason);
      return reason === "unauthorized" ? TOKEN : "wrong-token-0123456789";
    },
  });
  const closes: { code: number; reason: string }[] = [];
  w.client.addEventListener("disconnect", (e) => closes.push(e));
  await w.snapshot(1);
  assert.deepEqual(closes.map((c) => [c.code, c.reason]), [[1008, "unauthorized"]]);
  assert.deepEqual(reasons, ["connect", "unauthorized"]);
  await w.client.close();
});

Deno.test("client: app-level ping gets the gateway's pong, never delivered", async () => {
  await using nats = await NatsServer.start();
  await using gateway = await startGateway(testConfig(nats.url), { logger: recordingLogger() });
  const w = watch(gateway, { pingIntervalMs: 200 });
  await w.state("open");
  const deadline = Date.now() + 10_000;
  while (w.client.stats.pongs < 2 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  assert.ok(w.client.stats.pongs >= 2, `pongs: ${w.client.stats.pongs}`);
  assert.deepEqual(w.seqs, []);
  await w.client.close();
});

Deno.test("GET /client.js serves the bundled client as a JavaScript module a page can import", async () => {
  await using nats = await NatsServer.start();
  await using gateway = await startGateway(testConfig(nats.url), { logger: recordingLogger() });
  const base = `http://${gateway.addr.hostname}:${gateway.addr.port}`;
  const response = await fetch(`${base}/client.js`, { headers: { origin: "https://app.test" } });
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type") ?? "", /^text\/javascript/);
  const body = await response.text();
  const { CLIENT_JS } = await import("../../lib/http/client_bundle.ts");
  assert.equal(body, CLIENT_JS);
  // Loaded as a module from what was served, it exports the client.
  const module = await import(`data:text/javascript,${encodeURIComponent(body)}`);
  assert.equal(typeof module.connectGateway, "function");
  assert.equal(typeof module.GatewayClient, "function");
  const post = await fetch(`${base}/client.js`, { method: "POST" });
  await post.body?.cancel();
  assert.equal(post.status, 405);
});
