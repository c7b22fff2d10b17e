/** SIGTERM under load: thousands of clients, messages flowing; all get 1001, exit 0 in bounds. */
import assert from "node:assert/strict";
import { NatsServer } from "../helpers/nats_server.ts";
import { Client, Publisher } from "../helpers/fixtures.ts";
import { GatewayProcess } from "../helpers/process.ts";
import { levelsSignal } from "../helpers/signals.ts";

const CLIENTS = 2000;

Deno.test(`main: SIGTERM with ${CLIENTS} clients and messages flowing → all 1001, exit 0`, async () => {
  await using nats = await NatsServer.start();
  await using gateway = await GatewayProcess.spawn({
    NATS_URL: nats.url,
    GATEWAY_SHUTDOWN_TIMEOUT_MS: "5000",
  });
  const addr = await gateway.listening;
  await using publisher = await Publisher.connect(nats.url);
  const clients: Client[] = [];
  for (let i = 0; i < CLIENTS; i += 200) {
    clients.push(...await Promise.all(Array.from({ length: 200 }, () => Client.open(addr))));
  }
  let publishing = true;
  let seq = 0;
  const flow = (async () => {
    while (publishing) {
      await publisher.publish(levelsSignal(++seq)).catch(() => {});
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  })();
  await Promise.all(clients.map((c) => c.waitFor(1, 30_000)));

  const started = Date.now();
  gateway.kill("SIGTERM");
  const closes = await Promise.all(clients.map((c) => c.closed));
  const status = await gateway.status;
  const elapsed = Date.now() - started;
  publishing = false;
  await flow;
  const codes = new Map<number, number>();
  for (const close of closes) codes.set(close.code, (codes.get(close.code) ?? 0) + 1);
  assert.deepEqual([...codes], [[1001, CLIENTS]]);
  assert.equal(status.code, 0, gateway.output.slice(-2000));
  assert.ok(elapsed < 8_000, `shutdown took ${elapsed} ms`);
  assert.doesNotMatch(gateway.output, /"level":"error"|Uncaught|panicked/);
  console.log(
    `shutdown under load: ${CLIENTS} clients, ${seq} messages published, ${elapsed} ms to exit`,
  );
});
