/**
 * SIGTERM with hundreds of clients and messages flowing: every client gets a clean 1001, every
 * close handshake finishes inside GATEWAY_SHUTDOWN_TIMEOUT_MS, and the process exits 0.
 *
 * The load stays well inside what the machine carries (500 clients × 20 msg/s = 10k
 * deliveries/s, a tenth of the one-core maximum measured in bench/, with the test's own
 * clients reading every frame in this isolate), so what is asserted is the shutdown's
 * property, not the machine's speed.
 */
import assert from "node:assert/strict";
import { NatsServer } from "../../tools/nats_server.ts";
import { Client, Publisher } from "../helpers/fixtures.ts";
import { GatewayProcess } from "../../tools/gateway_process.ts";
import { levelsSignal } from "../../tools/signals.ts";

const CLIENTS = 500;
const PUBLISH_EVERY_MS = 50;
const SHUTDOWN_TIMEOUT_MS = 5_000;
/**
 * The gateway's own ceiling (lib/gateway.ts #stop): the shutdown bound, then at most 1 s for
 * Deno to cut sockets still closing. The test then allows for what lies outside the gateway's
 * clock: the launcher forwarding the signal and the process exiting.
 */
const GATEWAY_STOP_CEILING_MS = SHUTDOWN_TIMEOUT_MS + 1_000;
const SIGNAL_AND_EXIT_ALLOWANCE_MS = 2_000;

/** The `ts` of the first JSON log line whose msg is `msg`, in ms since the epoch. */
function loggedAt(gateway: GatewayProcess, msg: string): number {
  const line = [...gateway.lines, ...gateway.stderr].find((l) => l.includes(`"msg":"${msg}"`));
  assert.ok(line, `no "${msg}" line`);
  return Date.parse(JSON.parse(line).ts);
}

Deno.test(`main: SIGTERM with ${CLIENTS} clients and messages flowing → all 1001 clean, exit 0`, async () => {
  await using nats = await NatsServer.start();
  await using gateway = await GatewayProcess.spawn({
    NATS_URL: nats.url,
    GATEWAY_SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS),
  });
  const addr = await gateway.listening;
  await using publisher = await Publisher.connect(nats.url);
  const clients: Client[] = [];
  for (let i = 0; i < CLIENTS; i += 100) {
    clients.push(...await Promise.all(Array.from({ length: 100 }, () => Client.open(addr))));
  }
  let publishing = true;
  let seq = 0;
  const flow = (async () => {
    while (publishing) {
      await publisher.publish(levelsSignal(++seq)).catch(() => {});
      await new Promise((resolve) => setTimeout(resolve, PUBLISH_EVERY_MS));
    }
  })();
  // Every client has been receiving for a while before the signal: the shutdown meets a
  // flowing relay (an event: their tenth message, not a sleep).
  await Promise.all(clients.map((c) => c.waitFor(10, 60_000)));

  const started = Date.now();
  gateway.kill("SIGTERM");
  const closes = await Promise.all(clients.map((c) => c.closed));
  const status = await gateway.status;
  const elapsed = Date.now() - started;
  publishing = false;
  await flow;
  const outcomes = new Map<string, number>();
  for (const close of closes) {
    const key = `${close.code} ${close.wasClean ? "clean" : "unclean"}`;
    outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
  }
  assert.deepEqual([...outcomes], [["1001 clean", CLIENTS]]);
  assert.equal(status.code, 0, gateway.output.slice(-2000));
  // Every close handshake finished inside the shutdown bound, by the gateway's own account:
  // otherwise it warns and lets Deno cut the rest.
  assert.doesNotMatch(gateway.output, /clients still closing at the shutdown bound/);
  const stopMs = loggedAt(gateway, "gateway stopped") - loggedAt(gateway, "gateway shutting down");
  assert.ok(stopMs <= GATEWAY_STOP_CEILING_MS, `the gateway took ${stopMs} ms to stop`);
  assert.ok(
    elapsed < GATEWAY_STOP_CEILING_MS + SIGNAL_AND_EXIT_ALLOWANCE_MS,
    `SIGTERM to exit took ${elapsed} ms (the gateway's own stop: ${stopMs} ms)`,
  );
  assert.doesNotMatch(gateway.output, /"level":"error"|Uncaught|panicked/);
  console.log(
    `shutdown under load: ${CLIENTS} clients, ${seq} messages published, gateway stop ${stopMs} ms, ${elapsed} ms to exit`,
  );
});
