/**
 * The Broadcaster owns the set of client sockets and the latest-payload cache, fans each
 * payload out, and applies the slow-client policy. It depends only on `ClientSocket`, the
 * narrow slice of a WebSocket it needs, so tests drive it with recording fakes. Each client gets
 * text frames, or (`deflate-raw`) the message's raw DEFLATE as a binary frame, made once per
 * message and shared by every such client (lib/relay/compression.ts).
 */
import { CloseCode } from "../close_codes.ts";
import { type Encoding, Frames, utf8Length } from "./compression.ts";

/** The part of a WebSocket the Broadcaster uses. */
export interface ClientSocket {
  readonly readyState: number;
  readonly bufferedAmount: number;
  /** A string goes as a text frame, an ArrayBuffer as a binary one. */
  send(data: string | ArrayBuffer): void;
  close(code?: number, reason?: string): void;
}

/** WebSocket.OPEN, spelled out so fakes need no global. */
export const OPEN = 1;

export interface BroadcasterOptions {
  /** Bytes a client may have queued before it is conflated instead of sent to. */
  readonly clientBufferBytes: number;
  /** How long a client may stay over its bound before it is closed with 4008. */
  readonly slowClientTimeoutMs: number;
  /**
   * How long (ms) a payload may wait in a client's queue: a client whose oldest queued payload
   * is older is conflated like one over its byte bound. 0: bytes alone bound the queue.
   */
  readonly clientMaxQueueMs?: number;
  /**
   * Milliseconds the gateway's loop has spent stalled so far (lib/relay/loop_lag.ts): not counted in
   * how long a payload waited in a client's queue, since a stall holds every client's writes.
   * Default: none.
   */
  readonly stalledMs?: () => number;
  /** How often clients that are behind are checked for room. Default 20 ms. */
  readonly drainCheckMs?: number;
  readonly now?: () => number;
  /** Timer for the drain check; tests replace it to run ticks themselves. Default setInterval. */
  readonly setInterval?: (tick: () => void, ms: number) => unknown;
  readonly clearInterval?: (id: unknown) => void;
}

/** What the Broadcaster reports; the gateway turns these into metrics and logs. */
export interface BroadcasterEvents {
  /** A socket joined (before it is sent the cached payload). */
  joined?(socket: ClientSocket): void;
  delivered?(count: number, bytes: number): void;
  /** `count` payloads owed to clients that were behind were superseded before they had room. */
  conflated?(count: number): void;
  slowClientClosed?(): void;
  sendFailed?(error: unknown): void;
}

export type RemovalReason = "closed" | "send_error" | "slow_consumer" | "shutdown";

interface Client {
  readonly socket: ClientSocket;
  /** Asked for `deflate-raw`: sent each message's compressed form where it is smaller. */
  readonly deflate: boolean;
  /** When the client first went over its bound (ms), or -1. */
  behindSince: number;
  /** The #generation of the last payload sent to it: the drain never sends one twice. */
  sentGeneration: number;
  /** Bytes ever sent to it; minus bufferedAmount, what Deno has written to the kernel. */
  sentBytes: number;
  /**
   * Payloads still queued, oldest first, as pairs [end offset in sentBytes, running time when
   * sent (see #startPass)], from index `queueHead`: the oldest one's age is the client's lag.
   */
  queue: number[];
  queueHead: number;
}

export class Broadcaster {
  readonly #clients = new Map<ClientSocket, Client>();
  /** Clients owed the latest payload because they were behind; checked by the drain timer. */
  readonly #behind = new Set<Client>();
  /** Why each socket was removed, so the close handler can count it once, by reason. */
  readonly #removedFor = new WeakMap<ClientSocket, RemovalReason>();
  readonly #options: Required<BroadcasterOptions>;
  readonly #events: BroadcasterEvents;
  /** The newest message, what a client that was behind is sent when it drains. */
  #latest: Frames | null = null;
  /** Bumped with each new #latest, so a client's last payload is known without comparing text. */
  #generation = 0;
  #drainTimer: unknown;
  /** The clock of the current pass over the clients (#startPass). */
  #passTime = 0;

  constructor(options: BroadcasterOptions, events: BroadcasterEvents = {}) {
    this.#options = {
      drainCheckMs: 20,
      clientMaxQueueMs: 0,
      stalledMs: () => 0,
      now: Date.now,
      setInterval: (tick, ms) => setInterval(tick, ms),
      clearInterval: (id) => clearInterval(id as ReturnType<typeof setInterval>),
      ...options,
    };
    this.#events = events;
  }

  /** Number of clients connected now. */
  get size(): number {
    return this.#clients.size;
  }

  /** The cached latest payload, or null before the first message. */
  get latest(): string | null {
    return this.#latest?.text ?? null;
  }

  /**
   * Caches a payload without sending it (seeding at startup, or while the route is behind).
   * `byteLength` is its UTF-8 size when the caller knows it (the published bytes').
   */
  seed(payload: string, byteLength = utf8Length(payload)): void {
    this.#latest = new Frames(payload, byteLength);
    this.#generation++;
  }

  /**
   * Adds an open socket and sends it the cached latest payload at once, so that it sees the
   * current state first and then every later payload, in order.
   */
  add(socket: ClientSocket, encoding: Encoding = "text"): void {
    if (this.#clients.has(socket)) return;
    const client: Client = {
      socket,
      deflate: encoding === "deflate-raw",
      behindSince: -1,
      sentGeneration: 0,
      sentBytes: 0,
      queue: [],
      queueHead: 0,
    };
    this.#clients.set(socket, client);
    this.#events.joined?.(socket);
    if (!this.#clients.has(socket)) return; // the listener sent it elsewhere
    this.#startPass();
    if (this.#latest === null) return;
    const bytes = this.#deliver(client);
    if (bytes >= 0) this.#events.delivered?.(1, bytes);
  }

  /** Removes a socket; safe to call any number of times. */
  remove(socket: ClientSocket, reason: RemovalReason = "closed"): boolean {
    const client = this.#clients.get(socket);
    if (client === undefined) return false;
    this.#clients.delete(socket);
    this.#behind.delete(client);
    this.#removedFor.set(socket, reason);
    this.#stopDrainTimerIfIdle();
    return true;
  }

  /** Why the socket was removed, or undefined if it is still here or never was. */
  removalReason(socket: ClientSocket): RemovalReason | undefined {
    return this.#removedFor.get(socket);
  }

  /**
   * Caches the payload and sends it to every open client (conflating clients that are behind).
   * `byteLength` is the payload's UTF-8 size, what a text frame queues.
   */
  broadcast(payload: string, byteLength = utf8Length(payload)): void {
    this.seed(payload, byteLength);
    this.#fanOut(true);
  }

  /**
   * Sends the cached payload to every client that has not had it: after `seed` calls made while
   * the route was behind its stream (the newest of what it skipped, once it caught up).
   */
  sendLatest(): void {
    if (this.#latest !== null) this.#fanOut(false);
  }

  /** The cached payload to each client owed it; `countBehind`: a client behind misses it. */
  #fanOut(countBehind: boolean): void {
    let delivered = 0;
    let bytes = 0;
    let superseded = 0;
    this.#startPass();
    for (const client of this.#clients.values()) {
      if (client.behindSince >= 0) {
        // Owed the newest already: the drain sends it once there is room. Not asked again here,
        // so a payload costs a client that is behind no op call.
        superseded++;
      } else if (client.sentGeneration !== this.#generation) {
        const sent = this.#deliver(client);
        if (sent >= 0) {
          delivered++;
          bytes += sent;
        }
      }
    }
    if (delivered > 0) this.#events.delivered?.(delivered, bytes);
    if (countBehind && superseded > 0) this.#events.conflated?.(superseded);
  }

  /** Closes every client with `code` and forgets them. */
  closeAll(code: number, reason: string): void {
    for (const client of [...this.#clients.values()]) {
      this.remove(client.socket, "shutdown");
      try {
        client.socket.close(code, reason);
      } catch {
        // Already closing: nothing left to tell this client.
      }
    }
    this.#stopDrainTimerIfIdle();
  }

  /**
   * Sends the newest payload if the client has room; otherwise keeps only the newest for it.
   * The bytes queued (its frame's size: compressed for a compressed client), or -1.
   */
  #deliver(client: Client): number {
    const socket = client.socket;
    if (socket.readyState !== OPEN) {
      this.remove(socket, "closed");
      return -1;
    }
    const frame = this.#frameFor(client);
    const bytes = typeof frame === "string" ? this.#latest!.textBytes : frame.byteLength;
    const queued = socket.bufferedAmount;
    if (queued > 0 && this.#overBound(client, queued, bytes)) {
      client.behindSince = this.#options.now();
      this.#behind.add(client);
      if (this.#options.slowClientTimeoutMs === 0) {
        this.#closeSlow(client);
      } else {
        this.#startDrainTimer();
      }
      return -1;
    }
    return this.#send(client, frame, bytes, queued) ? bytes : -1;
  }

  /** The newest payload as `client` gets it: compressed where it asked and that is smaller. */
  #frameFor(client: Client): string | ArrayBuffer {
    const latest = this.#latest!;
    return client.deflate ? latest.deflated() ?? latest.text : latest.text;
  }

  /** Whether a client with `queued` bytes waiting must not be sent `bytes` more now. */
  #overBound(client: Client, queued: number, bytes: number): boolean {
    return queued + bytes > this.#options.clientBufferBytes || this.#tooOld(client, queued);
  }

  /**
   * Reads the clock a payload's wait is measured on (wall time less the gateway's stalls) once
   * per pass over the clients: a pass takes milliseconds, and the reading costs a system call.
   */
  #startPass(): void {
    this.#passTime = this.#options.now() - this.#options.stalledMs();
  }

  /** Sends the newest payload; a client sent it is owed nothing, so it leaves the behind set. */
  #send(client: Client, frame: string | ArrayBuffer, bytes: number, queued: number): boolean {
    try {
      client.socket.send(frame);
      client.sentBytes += bytes;
      if (this.#options.clientMaxQueueMs > 0) this.#queued(client, queued);
      client.sentGeneration = this.#generation;
      client.behindSince = -1;
      this.#behind.delete(client);
      return true;
    } catch (err) {
      this.#events.sendFailed?.(err);
      this.remove(client.socket, "send_error");
      return false;
    }
  }

  /** Notes the payload just queued for `client` behind `queuedBefore` bytes. */
  #queued(client: Client, queuedBefore: number): void {
    if (queuedBefore === 0) {
      // Everything earlier is written: only this payload is queued.
      client.queue.length = 0;
      client.queueHead = 0;
    }
    client.queue.push(client.sentBytes, this.#passTime);
  }

  /** Whether the oldest payload still in the client's queue has waited past the bound. */
  #tooOld(client: Client, queued: number): boolean {
    if (this.#options.clientMaxQueueMs === 0) return false;
    const written = client.sentBytes - queued;
    const queue = client.queue;
    let head = client.queueHead;
    while (head < queue.length && queue[head] <= written) head += 2;
    if (head >= queue.length) {
      queue.length = 0;
      head = 0;
    } else if (head > 64) {
      queue.splice(0, head);
      head = 0;
    }
    client.queueHead = head;
    return head < queue.length &&
      this.#passTime - queue[head + 1] > this.#options.clientMaxQueueMs;
  }

  #closeSlow(client: Client): void {
    this.remove(client.socket, "slow_consumer");
    this.#events.slowClientClosed?.();
    try {
      client.socket.close(CloseCode.slowConsumer, "slow consumer");
    } catch {
      // The socket is already closing; it is removed either way.
    }
  }

  /** Sends the newest payload to each client that has room again; closes those stuck too long. */
  #drainBehind(): void {
    const now = this.#options.now();
    this.#startPass();
    for (const client of [...this.#behind]) {
      const socket = client.socket;
      if (socket.readyState !== OPEN) {
        this.remove(socket, "closed");
        continue;
      }
      if (client.sentGeneration === this.#generation) {
        // Already has the newest (sent directly since it fell behind): owed nothing.
        this.#behind.delete(client);
        client.behindSince = -1;
        continue;
      }
      const queued = socket.bufferedAmount;
      const frame = this.#frameFor(client);
      const bytes = typeof frame === "string" ? this.#latest!.textBytes : frame.byteLength;
      if (queued === 0 || !this.#overBound(client, queued, bytes)) {
        if (this.#send(client, frame, bytes, queued)) this.#events.delivered?.(1, bytes);
      } else if (now - client.behindSince >= this.#options.slowClientTimeoutMs) {
        this.#closeSlow(client);
      }
    }
    this.#stopDrainTimerIfIdle();
  }

  #startDrainTimer(): void {
    if (this.#drainTimer !== undefined) return;
    this.#drainTimer = this.#options.setInterval(
      () => this.#drainBehind(),
      this.#options.drainCheckMs,
    );
  }

  #stopDrainTimerIfIdle(): void {
    if (this.#drainTimer === undefined || this.#behind.size > 0) return;
    this.#options.clearInterval(this.#drainTimer);
    this.#drainTimer = undefined;
  }
}
