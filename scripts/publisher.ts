/**
 * A synthetic Core publisher: realistic `levels.signals.v1` snapshots published through JetStream
 * every 250 ms: a random-walking SPY spot and the 10 or 11 strikes within $5 of it, whose scores
 * drift plausibly. For demos and tests; it is no model of a market.
 *
 *   NATS_URL=nats://127.0.0.1:4222 deno run --allow-net --allow-env scripts/publisher.ts
 *   (PUBLISH_SUBJECT, default levels.signals; PUBLISH_INTERVAL_MS, default 250)
 *
 * The stream must exist (the gateway creates it unless GATEWAY_CREATE_STREAMS=false); until it
 * does, publishes fail and are retried on the next tick.
 */
import { connect } from "../lib/nats/transport.ts";
import type { NatsConnection } from "@nats-io/nats-core";
import { jetstream } from "@nats-io/jetstream";
import type { Level, LevelsSignalsV1 } from "../client/levels_signals_v1.ts";
import { delay } from "../lib/util.ts";

/** Where the walk starts; walls and the high-volume level sit around it. */
const ANCHOR = 545.42;
/** Strikes within this distance of spot are listed: 10 or 11 levels. */
const LEVEL_RANGE = 5;

/** Builds successive snapshots; `random` is injectable so a test can make them repeatable. */
export class SyntheticMarket {
  #spot = ANCHOR;
  #lastTs = 0;
  /** Smoothed break score per level id: smoothing needs the previous value. */
  readonly #smooth = new Map<string, number>();

  constructor(readonly random: () => number = Math.random) {}

  /** The next snapshot; `ts` is `now` but always above the previous one. */
  next(now = Date.now()): LevelsSignalsV1 {
    // A small step with a pull back to the anchor, so the spot wanders but stays near the walls.
    const step = (this.random() - 0.5) * 0.12 + (ANCHOR - this.#spot) * 0.01;
    this.#spot = round(this.#spot + step, 2);
    this.#lastTs = Math.max(Math.floor(now), this.#lastTs + 1);
    const spot = this.#spot;
    const levels: Level[] = [];
    for (let price = Math.ceil(spot - LEVEL_RANGE); price <= spot + LEVEL_RANGE; price++) {
      levels.push(this.#level(price, spot));
    }
    return {
      ts: this.#lastTs,
      spy: { spot, bid: round(spot - 0.01, 2), ask: round(spot + 0.01, 2) },
      levels,
    };
  }

  #level(price: number, spot: number): Level {
    const id = `${kindOf(price)}_${price}`;
    const distance = round(Math.abs(price - spot), 2);
    // Closer levels are likelier to break; noise keeps the raw score jumpy, smoothing keeps the
    // smoothed one steady.
    const raw = clamp(Math.round(95 - distance * 14 + (this.random() - 0.5) * 30), 0, 100);
    const smooth = Math.round(0.8 * (this.#smooth.get(id) ?? raw) + 0.2 * raw);
    this.#smooth.set(id, smooth);
    const signal = smooth >= 55 ? "BREAK" : "BOUNCE";
    const margin = Math.abs(smooth - 55);
    const below = price < spot;
    const moveDirection = below ? "DOWN" : "UP";
    const obstacle = below ? PUT_WALL : CALL_WALL;
    const imbalance = round((this.random() - 0.5) * 1.6, 2);
    return {
      id,
      price,
      kind: kindOf(price),
      direction: below ? "SUPPORT" : "RESISTANCE",
      distance,
      break_score_raw: raw,
      break_score_smooth: smooth,
      signal,
      confidence: margin > 25 ? "HIGH" : margin > 10 ? "MEDIUM" : "LOW",
      barrier: {
        state: signal === "BREAK" ? "VACUUM" : "WALL",
        delta_liq: Math.round((this.random() - 0.6) * 15_000),
        replenishment_ratio: round(this.random(), 2),
        added: this.#int(500, 5_000),
        canceled: this.#int(500, 12_000),
        filled: this.#int(100, 3_000),
      },
      tape: {
        imbalance,
        buy_vol: this.#int(50_000, 400_000),
        sell_vol: this.#int(50_000, 400_000),
        velocity: round((this.random() - 0.5) * 0.2, 2),
        sweep: {
          detected: this.random() < 0.2,
          direction: imbalance < 0 ? "DOWN" : "UP",
          notional: this.#int(250_000, 2_500_000),
        },
      },
      fuel: {
        effect: signal === "BREAK" ? "AMPLIFY" : "DAMPEN",
        net_dealer_gamma: Math.round((this.random() - 0.6) * 400_000),
        call_wall: CALL_WALL,
        put_wall: PUT_WALL,
        hvl: HVL,
      },
      runway: {
        direction: moveDirection,
        next_obstacle: (below ? obstacle < price : obstacle > price)
          ? { id: below ? "PUT_WALL" : "CALL_WALL", price: obstacle }
          : null,
        distance: round(Math.abs(obstacle - price), 2),
        quality: signal === "BREAK" ? "CLEAR" : "OBSTRUCTED",
      },
      note: signal === "BREAK"
        ? "Thin book and dealers chase; a break is likely"
        : "Liquidity replenishes; expect a bounce",
    };
  }

  #int(low: number, high: number): number {
    return Math.round(low + this.random() * (high - low));
  }
}

const CALL_WALL = Math.round(ANCHOR) + 3;
const PUT_WALL = Math.round(ANCHOR) - 3;
const HVL = Math.round(ANCHOR);

function kindOf(price: number): string {
  return price === CALL_WALL ? "CALL_WALL" : price === PUT_WALL ? "PUT_WALL" : "STRIKE";
}

function round(value: number, digits: number): number {
  return Number(value.toFixed(digits));
}

function clamp(value: number, low: number, high: number): number {
  return Math.min(high, Math.max(low, value));
}

export interface PublisherOptions {
  readonly natsUrl: string;
  /** Default `levels.signals`. */
  readonly subject?: string;
  /** Default 250 (Core's cadence). */
  readonly intervalMs?: number;
  /** Told about the first failure of a run of failed publishes, and when publishing resumes. */
  readonly onProblem?: (message: string, error?: unknown) => void;
}

/** A running publisher: `published` counts acknowledged snapshots; `stop()` ends it. */
export interface RunningPublisher extends AsyncDisposable {
  readonly published: number;
  /** The `ts` of the last acknowledged snapshot; 0 before the first. */
  readonly lastTs: number;
  stop(): Promise<void>;
}

/** Connects and publishes one snapshot per interval until stopped. */
export async function startPublisher(options: PublisherOptions): Promise<RunningPublisher> {
  const nc = await connect({ servers: options.natsUrl });
  const stopping = new AbortController();
  const counter = { published: 0, lastTs: 0 };
  const loop = publishLoop(nc, options, counter, stopping.signal);
  const stop = async () => {
    stopping.abort();
    await loop;
    await nc.close();
  };
  return {
    get published() {
      return counter.published;
    },
    get lastTs() {
      return counter.lastTs;
    },
    stop,
    [Symbol.asyncDispose]: stop,
  };
}

async function publishLoop(
  nc: NatsConnection,
  options: PublisherOptions,
  counter: { published: number; lastTs: number },
  stopped: AbortSignal,
): Promise<void> {
  const js = jetstream(nc);
  const market = new SyntheticMarket();
  const subject = options.subject ?? "levels.signals";
  const intervalMs = options.intervalMs ?? 250;
  let failing = false;
  while (!stopped.aborted) {
    const started = Date.now();
    try {
      const snapshot = market.next(started);
      await js.publish(subject, JSON.stringify(snapshot));
      counter.published++;
      counter.lastTs = snapshot.ts;
      if (failing) options.onProblem?.(`publishing to ${subject} again`);
      failing = false;
    } catch (error) {
      // Logged once per run of failures: a missing stream fails every tick until it exists.
      if (!failing) options.onProblem?.(`Cannot publish to ${subject}; retrying`, error);
      failing = true;
    }
    await delay(Math.max(0, intervalMs - (Date.now() - started)), stopped);
  }
}

if (import.meta.main) {
  const natsUrl = Deno.env.get("NATS_URL") ?? "nats://127.0.0.1:4222";
  const intervalText = Deno.env.get("PUBLISH_INTERVAL_MS") ?? "250";
  const intervalMs = Number(intervalText);
  if (!Number.isInteger(intervalMs) || intervalMs < 1) {
    console.error(
      `Cannot parse PUBLISH_INTERVAL_MS as a positive integer: current value is "${intervalText}"`,
    );
    Deno.exit(2);
  }
  const publisher = await startPublisher({
    natsUrl,
    subject: Deno.env.get("PUBLISH_SUBJECT") ?? "levels.signals",
    intervalMs,
    onProblem: (message, error) => console.error(message, error ?? ""),
  });
  const stop = Promise.withResolvers<void>();
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => stop.resolve());
  }
  await stop.promise;
  await publisher.stop();
  console.log(`published ${publisher.published} snapshots`);
}
