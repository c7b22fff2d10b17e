/** Small shared fixtures: config for a test gateway, a publisher, a recording WebSocket client. */
import { connect } from "../../lib/nats/transport.ts";
import type { ConnectionOptions, NatsConnection } from "@nats-io/nats-core";
import { jetstream, type JetStreamClient } from "@nats-io/jetstream";
import { type Config, parseConfig } from "../../lib/config/config.ts";
import { createLogger, type Logger } from "../../lib/observe/log.ts";
import type { HealthReport } from "../../lib/observe/health.ts";

/** Config for a gateway on a free loopback port against `natsUrl`. */
export function testConfig(natsUrl: string, env: Record<string, string> = {}): Config {
  return parseConfig({
    NATS_URL: natsUrl,
    GATEWAY_HOST: "127.0.0.1",
    GATEWAY_PORT: "0",
    GATEWAY_NATS_CONNECT_TIMEOUT_MS: "2000",
    GATEWAY_LOG_LEVEL: "warn",
    ...env,
  });
}

/** A logger that keeps its lines, so tests can assert on them and output stays quiet. */
export function recordingLogger(): Logger & { lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger("debug", (_level, line) => lines.push(JSON.parse(line)));
  return Object.assign(logger, { lines });
}

export class Publisher implements AsyncDisposable {
  private constructor(readonly nc: NatsConnection, readonly js: JetStreamClient) {}

  /** `options` adds client options (credentials, TLS) for servers that require them. */
  static async connect(url: string, options: ConnectionOptions = {}): Promise<Publisher> {
    const nc = await connect({ ...options, servers: url });
    return new Publisher(nc, jetstream(nc));
  }

  /** Publishes through JetStream and waits for the stream's ack; returns the stream sequence. */
  async publish(payload: string | Uint8Array, subject = "levels.signals"): Promise<number> {
    const ack = await this.js.publish(subject, payload);
    return ack.seq;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.nc.close();
  }
}

export function signal(seq: number, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({
    ts: 1715629300123 + seq,
    seq,
    spy: { spot: 545.42 },
    levels: [],
    ...extra,
  });
}

/** A real WebSocket client that records every frame and lets tests await the next ones. */
export class Client implements AsyncDisposable {
  readonly messages: string[] = [];
  readonly closed: Promise<CloseEvent>;
  readonly opened: Promise<void>;
  #waiters: { count: number; resolve: () => void }[] = [];
  #closeEvent: CloseEvent | undefined;
  /** Why the socket failed, when it did (a reset, a bad frame): a close then has code 0. */
  #error: string | undefined;

  constructor(readonly socket: WebSocket) {
    socket.addEventListener("error", (event) => {
      this.#error = (event as ErrorEvent).message || "error";
    });
    this.opened = new Promise((resolve, reject) => {
      socket.addEventListener("open", () => resolve(), { once: true });
      socket.addEventListener("error", () => reject(new Error("websocket failed to open")), {
        once: true,
      });
    });
    this.opened.catch(() => {});
    this.closed = new Promise((resolve) => {
      socket.addEventListener("close", (event) => {
        this.#closeEvent = event;
        resolve(event);
        for (const waiter of this.#waiters) waiter.resolve();
      });
    });
    socket.addEventListener("message", (event) => {
      this.messages.push(typeof event.data === "string" ? event.data : "<binary>");
      this.#waiters = this.#waiters.filter((waiter) => {
        if (this.messages.length < waiter.count) return true;
        waiter.resolve();
        return false;
      });
    });
  }

  static async open(addr: Deno.NetAddr, path = "/ws/stream"): Promise<Client> {
    const client = new Client(new WebSocket(`ws://${addr.hostname}:${addr.port}${path}`));
    await client.opened;
    return client;
  }

  /** Waits until `count` messages have arrived in total; fails if the socket closes first. */
  async waitFor(count: number, timeoutMs = 10_000): Promise<string[]> {
    if (this.messages.length < count) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        new Promise<void>((resolve) => this.#waiters.push({ count, resolve })),
        new Promise<void>((_, reject) => {
          timer = setTimeout(
            () =>
              reject(
                new Error(`timed out waiting for ${count} messages; got ${this.messages.length}`),
              ),
            timeoutMs,
          );
        }),
      ]).finally(() => clearTimeout(timer));
    }
    if (this.messages.length < count) {
      throw new Error(
        `socket closed (${this.#closeEvent?.code}${
          this.#error ? `, ${this.#error}` : ""
        }) after ${this.messages.length} of ${count} messages`,
      );
    }
    return this.messages.slice(0, count);
  }

  async close(): Promise<CloseEvent> {
    if (this.socket.readyState < WebSocket.CLOSING) this.socket.close();
    return await this.closed;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** Resolves when `predicate` holds, checking after each of the gateway's events via polling `probe`. */
export async function eventually(
  predicate: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** GET /health: the HTTP status and the parsed report. */
export async function health(addr: Deno.NetAddr): Promise<{ status: number; body: HealthReport }> {
  const response = await fetch(`http://${addr.hostname}:${addr.port}/health`);
  return { status: response.status, body: await response.json() };
}
