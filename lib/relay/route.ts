/**
 * One route at run time (`PATH=SUBJECT`): its JetStream consumer, its latest-payload caches and
 * their clients. A fixed route has one cache; a templated route (`/ws/levels/{symbol}`) has one
 * per value, made at first use and bounded (the least recently used value without clients is
 * dropped), all fed by one consumer on the wildcard filter. Routes share nothing but the NATS
 * connection and the process's metrics and connection limit: a bad payload, a deleted stream or
 * a stalled consumer on one never touches another.
 */
import type { NatsConnection } from "@nats-io/nats-core";
import { type JetStreamManager, jetstreamManager } from "@nats-io/jetstream";
import { Broadcaster, type ClientSocket } from "./broadcaster.ts";
import { type Topic, Topics } from "./topics.ts";
import type { LoopLag } from "./loop_lag.ts";
import type { Config } from "../config/config.ts";
import type { DeadLetters } from "../nats/dead_letters.ts";
import type { Logger } from "../observe/log.ts";
import { rateLimited } from "../observe/log.ts";
import type { GatewayMetrics } from "../observe/metrics.ts";
import type { Labels } from "../observe/registry.ts";
import { NatsUnavailableError } from "../nats/errors.ts";
import { type BusMessage, SnapshotConsumer } from "../nats/consumer.ts";
import { ensureRelayedStream } from "../nats/streams.ts";
import { ask, isNotFound, newestSequence } from "../nats/requests.ts";
import { checkPayload } from "./payload.ts";
import { BehindWatch, FreshnessWatch, RelayProgress } from "./progress.ts";
import type { RouteSpec, RouteTable } from "./route_table.ts";
import { delay, errorMessage } from "../util.ts";
import { setImmediate } from "node:timers";

/**
 * How old (ms, the gateway's stalls and the clocks' offset not counted) a message may be when
 * handled and still be sent though newer ones are waiting (lib/relay/progress.ts BehindWatch).
 * Chosen by tests/load/isolation_test.ts with one core kept busy (200 readers, 100 msg/s of 8 KB,
 * at the edge of what that machine carries): 150 ms (with 100 below) shed there in 2 of 3 runs,
 * 300 ms in none of 4. Under overload what clients see is then at most about this old at the
 * gateway, plus one fan-out.
 */
const MAX_BEHIND_MS = 300;

/**
 * Shedding must save at least this much (ms) of sending what waits, at the rate this backlog has
 * been sent (BehindWatch): less is a burst the gateway clears at once, and its clients get all
 * of it.
 */
const MIN_DRAIN_SAVED_MS = 200;

/**
 * Lets Deno write what the last message queued before the next is handled: each send starts a
 * write that runs only when JavaScript yields, and messages that arrived together would
 * otherwise all be queued first, filling every client's queue (and its bounds) in one go.
 */
const yieldToWrites = () => new Promise<void>((resolve) => setImmediate(resolve));

/** A consumer that has not received a stored message for this many checks is replaced. */
const STALLED_CHECKS_BEFORE_RESTART = 3;

/** One route's line in /health. */
export interface RouteHealth {
  readonly path: string;
  readonly subject: string;
  readonly stream: string;
  readonly status: "healthy" | "unhealthy";
  readonly connections: number;
  readonly last_message_ts: number | null;
  readonly lag: number | null;
  /** Template values held (templated routes only). */
  readonly values?: number;
}

export interface RouteContext {
  readonly nc: NatsConnection;
  readonly config: Config;
  readonly spec: RouteSpec;
  /** The stream holding the route's subject (named, or found from the subject). */
  readonly stream: string;
  readonly table: RouteTable;
  readonly metrics: GatewayMetrics;
  readonly logger: Logger;
  /** How often lag is measured and a silent consumer detected. */
  readonly lagPollMs: number;
  readonly deadLetters?: DeadLetters;
  readonly signal: AbortSignal;
  /** Whether the NATS connection is up (owned by the gateway). */
  readonly natsConnected: () => boolean;
  /** The gateway's stall clock: a client's queue wait does not count the gateway's stalls. */
  readonly loop?: LoopLag;
}

export class Route {
  readonly spec: RouteSpec;
  readonly stream: string;
  readonly #ctx: RouteContext;
  readonly #label: Labels;
  readonly #topics: Topics;
  /** Stream-level progress: what was received, dead-lettered; the stream's identity. */
  readonly #progress = new RelayProgress();
  readonly #freshness = new FreshnessWatch();
  readonly #behind = new BehindWatch(MAX_BEHIND_MS, MIN_DRAIN_SAVED_MS);
  /** Topics given a message that was cached but not sent while the route was behind. */
  readonly #unsent = new Set<Topic>();
  readonly #consuming = Promise.withResolvers<void>();
  readonly #logInvalid: (msg: string, fields?: Record<string, unknown>) => void;
  readonly #logShedding: (msg: string, fields?: Record<string, unknown>) => void;
  readonly #logCaughtUp: (msg: string, fields?: Record<string, unknown>) => void;
  #consumer: SnapshotConsumer | undefined;
  /** For seeding values at first use; made once at start. */
  #jsm: JetStreamManager | undefined;
  #relaying: Promise<void> = Promise.resolve();
  #lagTimer: ReturnType<typeof setInterval> | undefined;
  #consumerActive = false;
  #receivingStalled = false;
  #checking = false;
  #lastMessageTs: number | null = null;
  #lag: number | null = null;
  #streamCreated = "";
  #failWith: (error: Error) => void = () => {};
  /** Resolves with the reason when the route's consumer cannot go on. */
  readonly failed = new Promise<Error>((resolve) => (this.#failWith = resolve));

  constructor(ctx: RouteContext) {
    this.#ctx = ctx;
    this.spec = ctx.spec;
    this.stream = ctx.stream;
    this.#label = { route: ctx.spec.path };
    this.#logInvalid = rateLimited(ctx.logger.warn, 10_000);
    this.#logShedding = rateLimited(ctx.logger.warn, 10_000);
    this.#logCaughtUp = rateLimited(ctx.logger.info, 10_000);
    this.#topics = new Topics(ctx.config.routeMaxValues, (joined) => this.#newBroadcaster(joined));
    if (ctx.spec.param === null) this.#topics.fixed();
  }

  get templated(): boolean {
    return this.spec.param !== null;
  }

  /** Clients of every cache of the route. */
  get connections(): number {
    return this.#topics.connections;
  }

  /** Whether the route is behind its stream and sends only the newest (gateway_load_shedding). */
  get shedding(): boolean {
    return this.#behind.shedding;
  }

  get valuesHeld(): number {
    return this.#topics.size;
  }

  /**
   * Seeds the fixed route's cache, creates the consumer and waits until it delivers, so nothing
   * published after startup is missed. Rejects when it cannot within the connect timeout.
   */
  async start(): Promise<void> {
    const { nc, config, spec, logger, signal } = this.#ctx;
    const jsm = await jetstreamManager(nc);
    this.#jsm = jsm;
    const seeded = this.templated
      ? await this.#readStreamIdentity(jsm)
      : await this.#seedFixed(jsm);
    this.#consumer = new SnapshotConsumer(nc, {
      stream: this.stream,
      subject: spec.filterSubject,
      durableName: config.durableName,
      // Least privilege: with GATEWAY_CREATE_STREAMS=false a deleted durable is not recreated.
      createDurable: config.createStreams,
      logger,
      // A restart touches only this route's stream: another stream's node may be down.
      beforeRestart: (jsm) =>
        ensureRelayedStream(jsm, { ...config, stream: this.stream, subject: spec.subject }, logger),
      lastPerSubject: this.templated,
      ...(seeded > 0 ? { knownNewest: seeded } : {}),
    }, signal);
    this.#watchConsumer(this.#consumer);
    this.#relaying = this.#relay(this.#consumer);
    const consuming = await Promise.race([
      this.#consuming.promise.then(() => true),
      delay(config.natsConnectTimeoutMs, signal).then(() => false),
    ]);
    if (!consuming) {
      throw new NatsUnavailableError(
        `Cannot create a JetStream consumer on ${this.stream} for ${spec.filterSubject} (route ${spec.path}) within ${config.natsConnectTimeoutMs} ms (GATEWAY_NATS_CONNECT_TIMEOUT_MS)`,
      );
    }
    // Its own manager: a check must fail fast, not wait out the default 5 s request timeout.
    const checkJsm = await jetstreamManager(nc, { timeout: Math.max(500, this.#ctx.lagPollMs) });
    this.#lagTimer = setInterval(() => this.#updateLag(checkJsm), this.#ctx.lagPollMs);
  }

  /**
   * The cache (and client set) for a request's value, seeded from the stream at first use, so a
   * new client gets the newest stored message at once. Undefined when the route holds its
   * bound of values and every one has clients.
   */
  broadcasterFor(value: string | null): Broadcaster | undefined | Promise<Broadcaster> {
    const found = this.#topics.forClient(value);
    if (found === undefined) return undefined;
    const { topic, created } = found;
    if (created) topic.seeding = this.#seedValue(topic).finally(() => (topic.seeding = undefined));
    const { broadcaster, seeding } = topic;
    // Synchronous for a value already held: no turn of the event loop before the upgrade.
    return seeding === undefined ? broadcaster : seeding.then(() => broadcaster);
  }

  health(): RouteHealth {
    const healthy = this.#ctx.natsConnected() && this.#consumerActive &&
      !this.#receivingStalled && !this.#ctx.signal.aborted;
    return {
      path: this.spec.path,
      subject: this.spec.subject,
      stream: this.stream,
      status: healthy ? "healthy" : "unhealthy",
      connections: this.connections,
      last_message_ts: this.#lastMessageTs,
      lag: this.#lag,
      ...(this.templated ? { values: this.#topics.size } : {}),
    };
  }

  /** Sets the per-route gauges read at scrape time. */
  updateGauges(): void {
    this.#ctx.metrics.routeConnections.set(this.connections, this.#label);
    this.#ctx.metrics.routeValues.set(this.#topics.size, this.#label);
  }

  /** Closes every client of the route (the gateway waits for their close handshakes). */
  closeAll(code: number, reason: string): void {
    this.#topics.closeAll(code, reason);
  }

  /** After the gateway's abort signal: the consumer has stopped once this resolves. */
  async stopped(): Promise<void> {
    clearInterval(this.#lagTimer);
    await this.#relaying;
  }

  /** A new topic's broadcaster: its events become the route's metrics and logs. */
  #newBroadcaster(joined: (socket: ClientSocket) => void): Broadcaster {
    const { config, metrics, logger } = this.#ctx;
    const label = this.#label;
    const logSendError = rateLimited(logger.warn, 10_000);
    const broadcaster = new Broadcaster(
      {
        clientBufferBytes: config.clientBufferBytes,
        slowClientTimeoutMs: config.slowClientTimeoutMs,
        clientMaxQueueMs: config.clientMaxQueueMs,
        ...(this.#ctx.loop ? { stalledMs: () => this.#ctx.loop!.stalledMs() } : {}),
      },
      {
        joined,
        delivered: (count, bytes) => {
          metrics.deliveries.inc(label, count);
          metrics.bytesSent.inc(label, bytes);
        },
        conflated: (count) => metrics.conflations.inc(label, count),
        slowClientClosed: () => metrics.slowDisconnects.inc(label),
        sendFailed: (error) => {
          metrics.sendErrors.inc();
          logSendError("websocket send failed; client removed", { error, route: this.spec.path });
        },
      },
    );
    return broadcaster;
  }

  /** A fixed route's cache from the newest stored message; its sequence, or -1. */
  async #seedFixed(jsm: JetStreamManager): Promise<number> {
    const topic = this.#topics.fixed();
    try {
      await this.#readStreamIdentity(jsm);
      const seq = await this.#seedTopic(jsm, topic, this.spec.subject);
      if (seq > 0) {
        this.#progress.seeded(seq, this.#streamCreated);
        this.#ctx.logger.info("cache seeded from stream", {
          route: this.spec.path,
          stream_seq: seq,
        });
      }
      return seq;
    } catch (err) {
      this.#ctx.logger.debug("no stored message to seed the cache", {
        route: this.spec.path,
        error: err,
      });
      return -1;
    }
  }

  /** Reads the stream's creation time (a recreated stream restarts its sequences); 0. */
  async #readStreamIdentity(jsm: JetStreamManager): Promise<number> {
    const { created } = await ask(
      `stream info ${this.stream}`,
      () => jsm.streams.info(this.stream),
    );
    this.#streamCreated = created;
    this.#progress.seeded(0, created);
    return 0;
  }

  /** A templated route's value: its cache from the newest stored message of its subject. */
  async #seedValue(topic: Topic): Promise<void> {
    const subject = this.#ctx.table.subjectFor(this.spec, topic.value);
    try {
      await this.#seedTopic(this.#jsm!, topic, subject);
    } catch (err) {
      // The client still joins; it gets the value's next message.
      this.#ctx.logger.debug("no stored message to seed the cache", { subject, error: err });
    }
  }

  /** Seeds `topic` with the newest stored message of `subject` unless it holds a newer one. */
  async #seedTopic(jsm: JetStreamManager, topic: Topic, subject: string): Promise<number> {
    let stored;
    try {
      stored = await ask(
        `msg get ${this.stream} last_by_subj ${subject}`,
        () => jsm.streams.getMessage(this.stream, { last_by_subj: subject }),
      );
    } catch (err) {
      if (isNotFound(err)) return -1;
      throw err;
    }
    if (stored === null || stored.seq <= topic.progress.lastRelayed) return -1;
    const checked = checkPayload(stored.data, this.#ctx.config.maxPayloadBytes);
    if (!checked.ok) return -1;
    topic.broadcaster.seed(checked.text, stored.data.byteLength);
    topic.progress.seeded(stored.seq, this.#streamCreated);
    return stored.seq;
  }

  /** Follows the consumer's state: "consumer active" only while a consumer is delivering. */
  #watchConsumer(consumer: SnapshotConsumer): void {
    (async () => {
      for await (const status of consumer.status()) {
        if (status.type === "consuming") {
          this.#consumerActive = true;
          // A new consumer starts at the newest message: what the old one missed is not waited for.
          this.#freshness.reset();
          this.#receivingStalled = false;
          this.#consuming.resolve();
        } else if (status.type === "interrupted") {
          this.#consumerActive = false;
        } else {
          this.#ctx.metrics.consumerRestarts.inc(this.#label);
        }
      }
    })();
  }

  async #relay(consumer: SnapshotConsumer): Promise<void> {
    try {
      for await (const message of consumer) {
        this.#handle(message);
        await yieldToWrites();
      }
    } catch (err) {
      if (!this.#ctx.signal.aborted) {
        this.#ctx.logger.error("relay stopped", { route: this.spec.path, error: err });
        this.#failWith(new Error(`relay stopped: ${errorMessage(err)}`, { cause: err }));
      }
    }
  }

  /** One delivered message: checked, deduplicated, relayed to its value's clients, or dead-lettered. */
  #handle(message: BusMessage): void {
    const { metrics } = this.#ctx;
    const label = this.#label;
    metrics.messagesReceived.inc(label);
    if (this.#progress.received(message)) this.#streamRecreated(message.streamSequence);
    const checked = checkPayload(message.data, this.#ctx.config.maxPayloadBytes);
    if (!checked.ok) {
      metrics.invalidPayloads.inc({ ...label, reason: checked.reason });
      this.#logInvalid("invalid payload skipped", {
        route: this.spec.path,
        reason: checked.reason,
        bytes: message.data.byteLength,
        stream_seq: message.streamSequence,
      });
      this.#deadLetter(message, checked.reason);
      return;
    }
    const topic = this.#topicForMessage(message.subject);
    if (topic === undefined) {
      metrics.messagesSkipped.inc({ ...label, reason: "not_held" });
      return;
    }
    // Never an older snapshot after a newer one: superseded while the gateway was away, or
    // redelivered by a durable after its ack was lost. Skipping means no stale burst.
    const verdict = topic.progress.judge(message);
    if (verdict !== "relay") {
      metrics.messagesSkipped.inc({ ...label, reason: verdict });
      return;
    }
    topic.progress.relayed(message.streamSequence);
    this.#send(topic, checked.text, message);
    const now = Date.now();
    this.#lastMessageTs = now;
    metrics.lastMessageTimestamp.set(now / 1000, label);
    metrics.relayDelay.observe(Math.max(0, now - message.timestampMs) / 1000, label);
  }

  /**
   * Sends a message to its topic's clients, or, while the route is behind its stream, only
   * caches it: the newest of each topic is sent once the route has caught up (the message with
   * nothing newer after it), so clients skip what was superseded before they could get it.
   */
  #send(topic: Topic, text: string, message: BusMessage): void {
    const { metrics } = this.#ctx;
    const wasShedding = this.#behind.shedding;
    const loop = this.#ctx.loop;
    const stalledSince = loop ? (wallMs: number) => loop.stalledSince(wallMs) : undefined;
    if (this.#behind.shed(message.newer, message.timestampMs, Date.now(), stalledSince)) {
      topic.broadcaster.seed(text, message.data.byteLength);
      this.#unsent.add(topic);
      metrics.messagesSkipped.inc({ ...this.#label, reason: "behind" });
      if (!wasShedding) {
        this.#logShedding("route behind its stream: sending only the newest snapshots", {
          route: this.spec.path,
          newer: message.newer,
          behind_ms: MAX_BEHIND_MS,
        });
      }
      return;
    }
    topic.broadcaster.broadcast(text, message.data.byteLength);
    metrics.messagesRelayed.inc(this.#label);
    this.#unsent.delete(topic);
    if (message.newer === 0) this.#sendUnsent();
    if (wasShedding && !this.#behind.shedding) {
      this.#logCaughtUp("route caught up with its stream", { route: this.spec.path });
    }
  }

  /**
   * Each topic's newest, cached while the route was behind, to its clients: when the route has
   * caught up, and at every lag check (should a newer message counted never come).
   */
  #sendUnsent(): void {
    for (const topic of this.#unsent) topic.broadcaster.sendLatest();
    this.#unsent.clear();
  }

  /**
   * A message's cache: the fixed route's one, or its value's — made while below the bound (a
   * message never pushes out a value a client asked for).
   */
  #topicForMessage(subject: string): Topic | undefined {
    if (!this.templated) return this.#topics.fixed();
    const value = this.#ctx.table.valueOf(this.spec, subject);
    if (value === null) return undefined;
    return this.#topics.forMessage(value);
  }

  #deadLetter(message: BusMessage, reason: string): void {
    const deadLetters = this.#ctx.deadLetters;
    // Once per message, across consumer restarts (a new consumer redelivers the newest).
    if (!deadLetters || !this.#progress.shouldDeadLetter(message.streamSequence)) return;
    void deadLetters.publish(message.data, {
      reason,
      subject: message.subject,
      stream: this.stream,
      streamSequence: message.streamSequence,
    }).then((sent) => {
      if (sent) this.#ctx.metrics.deadLetters.inc(this.#label);
    });
  }

  /** The stream was recreated (or purged): its sequences restart, so every value's do too. */
  #streamRecreated(seq: number): void {
    for (const topic of this.#topics.values()) topic.progress.rebase();
    this.#freshness.reset();
    this.#ctx.logger.info("relayed stream was recreated; sequences counted afresh", {
      route: this.spec.path,
      stream: this.stream,
      stream_seq: seq,
    });
  }

  /**
   * Every check: lag (stream sequences between the newest stored message of the route's subject
   * or filter and the last one received), and whether the consumer receives at all. A stored
   * message not received for a whole check makes the route unhealthy; for
   * STALLED_CHECKS_BEFORE_RESTART checks, the consumer is replaced (seen with nats-server 2.9
   * after a stream was recreated, and when a consumer's node dies).
   */
  async #updateLag(jsm: JetStreamManager): Promise<void> {
    this.#sendUnsent();
    if (!this.#ctx.natsConnected() || this.#checking) return;
    this.#checking = true;
    try {
      const newest = await newestSequence(jsm, {
        stream: this.stream,
        subject: this.spec.filterSubject,
      });
      const lastReceived = this.#progress.lastReceived;
      if (this.#progress.observeNewest(newest)) {
        this.#ctx.logger.info("relayed stream's sequences went back; counted afresh", {
          route: this.spec.path,
          stream: this.stream,
          newest,
          last_received: lastReceived,
        });
        this.#streamRecreated(newest);
      }
      this.#lag = Math.max(0, newest - this.#progress.lastReceived);
      this.#ctx.metrics.consumerPending.set(this.#lag, this.#label);
      this.#judgeFreshness(newest);
    } catch (err) {
      this.#ctx.logger.debug("consumer lag unknown", { route: this.spec.path, error: err });
    } finally {
      this.#checking = false;
    }
  }

  #judgeFreshness(newest: number): void {
    const lagPollMs = this.#ctx.lagPollMs;
    const waitedMs = this.#freshness.observe(newest, this.#progress.lastReceived, Date.now());
    const stalled = waitedMs >= lagPollMs / 2;
    if (stalled !== this.#receivingStalled) {
      this.#ctx.logger[stalled ? "warn" : "info"](
        stalled ? "stored messages not received" : "receiving again",
        { route: this.spec.path, lag: this.#lag, waited_ms: waitedMs },
      );
    }
    this.#receivingStalled = stalled;
    if (this.#consumerActive && waitedMs >= (STALLED_CHECKS_BEFORE_RESTART - 0.5) * lagPollMs) {
      this.#ctx.logger.warn("nats consumer stalled; recreating it", {
        route: this.spec.path,
        lag: this.#lag,
      });
      this.#freshness.reset();
      this.#consumer?.restart("stalled");
    }
  }
}
