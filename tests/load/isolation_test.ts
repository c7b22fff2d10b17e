/**
 * Slow-client isolation under default settings: clients that stopped reading never cost a
 * reading client a snapshot. The gateway runs as its own process (as deployed); readers and
 * stalled peers live in this one, and the publisher paces itself on the clock, so a loaded
 * machine slows the test down but cannot change what each reader must receive.
 */
import assert from "node:assert/strict";
import { NatsServer } from "../../tools/nats_server.ts";
import { scrape, value } from "../helpers/metrics.ts";
import { Publisher } from "../helpers/fixtures.ts";
import { GatewayProcess } from "../../tools/gateway_process.ts";
import { RawPeer } from "../helpers/raw_ws.ts";
import { levelsSignal } from "../../tools/signals.ts";

const READERS = 200;
const STALLED = 50;
const MESSAGES = 1000;
/** 100 msg/s × 200 readers = 20k deliveries/s of ~8 KB: well inside one core (bench: ~70k+). */
const RATE_PER_S = 100;

/** A reading client that keeps only the sequence numbers it received, checking order on each. */
class Reader {
  readonly seqs: number[] = [];
  readonly done: Promise<void>;
  #socket: WebSocket;

  constructor(url: string, last: number) {
    this.#socket = new WebSocket(url);
    this.done = new Promise((resolve, reject) => {
      this.#socket.onmessage = (event) => {
        const text = event.data as string;
        // levelsSignal() starts with {"seq":N, — read N without parsing 8 KB of JSON.
        const seq = Number(text.slice(7, text.indexOf(",", 7)));
        const previous = this.seqs.at(-1) ?? -1;
        if (seq <= previous) reject(new Error(`got ${seq} after ${previous}`));
        this.seqs.push(seq);
        if (seq === last) resolve();
      };
      this.#socket.onclose = (event) =>
        reject(new Error(`closed ${event.code} after ${this.seqs.length} snapshots`));
    });
    this.done.catch(() => {});
  }

  opened(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#socket.onopen = () => resolve();
      this.#socket.onerror = () => reject(new Error("reader could not connect"));
    });
  }

  close(): Promise<void> {
    if (this.#socket.readyState === WebSocket.CLOSED) return Promise.resolve();
    const closed = new Promise<void>((resolve) =>
      this.#socket.addEventListener("close", () => resolve())
    );
    this.#socket.close();
    return closed;
  }
}

Deno.test("isolation: 50 clients that stopped reading never cost 200 readers a snapshot", async () => {
  await using nats = await NatsServer.start();
  // Defaults as shipped, but stalled peers stay for the whole run (their pressure is the point).
  await using gateway = await GatewayProcess.spawn({
    NATS_URL: nats.url,
    GATEWAY_SLOW_CLIENT_TIMEOUT_MS: "600000",
    GATEWAY_IDLE_TIMEOUT_S: "0",
  });
  const addr = await gateway.listening;
  await using publisher = await Publisher.connect(nats.url);
  await publisher.publish(levelsSignal(0));
  const url = `ws://${addr.hostname}:${addr.port}/ws/stream`;
  const readers = Array.from({ length: READERS }, () => new Reader(url, MESSAGES));
  await Promise.all(readers.map((r) => r.opened()));
  const stalled = await Promise.all(Array.from({ length: STALLED }, () => RawPeer.connect(addr)));
  for (const peer of stalled) assert.equal(peer.response.status, 101);

  // Paced on the clock: a late timer publishes what is due at once, as a real publisher's
  // backlog would reach the gateway (the test asserts what arrives, not how fast).
  const start = performance.now();
  for (let seq = 1; seq <= MESSAGES;) {
    const due = Math.min(MESSAGES, Math.floor(((performance.now() - start) * RATE_PER_S) / 1000));
    while (seq <= due) await publisher.publish(levelsSignal(seq++));
    await new Promise((resolve) => setTimeout(resolve, 1000 / RATE_PER_S));
  }
  await Promise.all(readers.map((r) => r.done));
  const metrics = await scrape(addr);
  const short = readers.filter((r) => r.seqs.length !== MESSAGES + 1);
  assert.equal(
    short.length,
    0,
    `${short.length} of ${READERS} readers missed snapshots (e.g. got ${short[0]?.seqs.length} of ${
      MESSAGES + 1
    }); skipped by the route as behind: ${
      value(metrics, "gateway_nats_messages_skipped_total", { reason: "behind" })
    }, conflated: ${value(metrics, "gateway_slow_client_conflations_total")}; gateway said:\n${
      gateway.output.split("\n").filter((l) => /"level":"warn"/.test(l)).slice(-10).join("\n")
    }`,
  );
  // The stalled peers were conflated: what they skipped is counted, and is theirs alone.
  assert.ok(value(metrics, "gateway_slow_client_conflations_total") > 0);
  console.log(
    `isolation: ${READERS} readers got all ${MESSAGES} in order beside ${STALLED} stalled; ` +
      `conflations ${value(metrics, "gateway_slow_client_conflations_total")}, ` +
      `load shedding ${value(metrics, "gateway_load_shedding")}`,
  );
  for (const peer of stalled) peer.close();
  await Promise.all(readers.map((r) => r.close()));
});
