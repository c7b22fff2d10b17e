/**
 * Browser client for a gateway route (served as an ES module at `/client.js`; no dependencies).
 *
 * It keeps one WebSocket open to a route, reconnects with full-jitter exponential backoff, reacts
 * to the gateway's close codes, asks the application for a fresh token when the gateway refuses
 * one, marks data stale when nothing arrives for a while, filters control frames (`pong`) and
 * never delivers a snapshot older than one it already delivered. Where the browser can inflate raw
 * DEFLATE (`DecompressionStream("deflate-raw")`) it asks for compressed frames, about a fifth of
 * the bytes, and delivers the same JSON text in the order it arrived.
 *
 * ```js
 * import { connectGateway } from "/client.js";
 * const client = connectGateway({ url: "wss://host/ws/stream" });
 * client.addEventListener("snapshot", (e) => render(e.snapshot));
 * client.addEventListener("statechange", (e) => showState(e.state));
 * ```
 */
import type { LevelsSignalsV1 } from "./levels_signals_v1.ts";

export type { LevelsSignalsV1 } from "./levels_signals_v1.ts";

/**
 * `connecting`: no socket open yet (first try, or waiting to retry); `open`: connected and data
 * fresh; `stale`: connected but no snapshot for `staleAfter` × `expectedIntervalMs`; `closed`:
 * `close()` was called; nothing more happens.
 */
export type GatewayState = "connecting" | "open" | "stale" | "closed";

/** Why a token is asked for: a plain (re)connect, or the gateway refused or expired the last. */
export type TokenReason = "connect" | "unauthorized" | "expired";

/** `deflate-raw`: binary frames of raw DEFLATE, inflated here; `text`: the published text as is. */
export type GatewayEncoding = "deflate-raw" | "text";

/** What the client needs of a WebSocket: the browser's and Deno's fit, and so do test fakes. */
export interface SocketLike {
  readonly readyState: number;
  onopen: ((event: Event) => void) | null;
  onmessage: ((event: MessageEvent) => void) | null;
  onclose: ((event: CloseEvent) => void) | null;
  onerror: ((event: Event) => void) | null;
  /** Set to `arraybuffer` when compressed frames are asked for (a browser's default is blob). */
  binaryType?: "blob" | "arraybuffer";
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export type SocketConstructor = new (url: string, protocols?: string[]) => SocketLike;

export interface GatewayClientOptions<T = LevelsSignalsV1> {
  /** Absolute URL of a route, e.g. `wss://host/ws/stream`. */
  readonly url: string;
  /** Asked before each connect; `reason` says whether the last token was refused or expired. */
  readonly token?: (context: { readonly reason: TokenReason }) => string | Promise<string>;
  /**
   * `query` (default): `?token=…`, what the gateway accepts today. `protocol`: a
   * `Sec-WebSocket-Protocol` entry `bearer.<token>` beside `protocol`, kept out of URLs and logs.
   */
  readonly tokenIn?: "query" | "protocol";
  /** The plain subprotocol offered beside `bearer.<token>`, for the gateway to echo. Default `gateway`. */
  readonly protocol?: string;
  /**
   * `deflate-raw` (the default where `DecompressionStream` supports it): `?encoding=deflate-raw`,
   * binary frames of raw DEFLATE inflated before delivery; `text` (the default elsewhere): text.
   */
  readonly encoding?: GatewayEncoding;
  /** Publisher cadence in ms. Default 250. */
  readonly expectedIntervalMs?: number;
  /** Data is stale after this many cadences without a snapshot. Default 8. */
  readonly staleAfter?: number;
  /** Backoff: a retry waits `random(0, min(backoffCapMs, backoffBaseMs × 2^attempt))`. Default 250. */
  readonly backoffBaseMs?: number;
  /** Default 30 000. */
  readonly backoffCapMs?: number;
  /**
   * Send `{"type":"ping"}` this often (ms) and reconnect when no frame at all came back for two
   * intervals: finds dead connections a browser cannot see. Default 0 (off).
   */
  readonly pingIntervalMs?: number;
  /** A snapshot's position; a frame whose key is not above the last delivered one is dropped. Default `ts`. */
  readonly order?: (snapshot: T) => number;
  /** Injectable for tests; default the global ones. */
  readonly WebSocket?: SocketConstructor;
  readonly setTimeout?: (callback: () => void, ms: number) => unknown;
  readonly clearTimeout?: (handle: unknown) => void;
  readonly random?: () => number;
  readonly now?: () => number;
}

export interface GatewayClientStats {
  /** Snapshots handed to the application. */
  readonly delivered: number;
  /** Snapshots not newer than the last delivered one (e.g. the cached one after a reconnect). */
  readonly droppedOlder: number;
  readonly pongs: number;
  /** Control frames other than pong (a `type` and no order key). */
  readonly ignored: number;
  /** Binary frames, invalid JSON, non-objects, frames without an order key. */
  readonly invalid: number;
  /** Sockets that closed or failed without the application asking. */
  readonly disconnects: number;
  /** Bytes of every frame received, as they came over the wire (compressed ones compressed). */
  readonly bytesReceived: number;
}

export class StateChangeEvent extends Event {
  constructor(readonly state: GatewayState, readonly previous: GatewayState) {
    super("statechange");
  }
}

export class SnapshotEvent<T = LevelsSignalsV1> extends Event {
  /** `data` is the snapshot's text exactly as published (inflated from a compressed frame). */
  constructor(readonly snapshot: T, readonly data: string) {
    super("snapshot");
  }
}

/** A socket closed; `retryInMs` is when the next attempt starts. */
export class DisconnectEvent extends Event {
  constructor(
    readonly code: number,
    readonly reason: string,
    readonly wasClean: boolean,
    readonly retryInMs: number,
  ) {
    super("disconnect");
  }
}

/** Something went wrong that the client handled (bad frame, token callback failed, …). */
export class GatewayErrorEvent extends Event {
  constructor(readonly error: Error) {
    super("error");
  }
}

export interface GatewayClientEventMap<T> {
  statechange: StateChangeEvent;
  snapshot: SnapshotEvent<T>;
  disconnect: DisconnectEvent;
  error: GatewayErrorEvent;
}

const OPEN = 1;
const CLOSING = 2;
/** Close codes with their own reaction; every other code backs off. */
const SLOW_CONSUMER = 4008;
const TOKEN_EXPIRED = 4001;
const POLICY = 1008;

type Listener<E> = ((event: E) => void) | { handleEvent(event: E): void };

/** Connects at once (after the current task, so listeners added now see every event). */
export function connectGateway<T = LevelsSignalsV1>(
  options: GatewayClientOptions<T>,
): GatewayClient<T> {
  return new GatewayClient(options);
}

export class GatewayClient<T = LevelsSignalsV1> extends EventTarget {
  readonly #o: Required<Omit<GatewayClientOptions<T>, "token">> & GatewayClientOptions<T>;
  #state: GatewayState = "connecting";
  #socket: SocketLike | undefined;
  /** Bumped by close() so an awaited token callback cannot open a socket afterwards. */
  #generation = 0;
  #attempt = 0;
  /** Consecutive token refusals: the first retries at once, later ones back off. */
  #authFailures = 0;
  #tokenReason: TokenReason = "connect";
  #lastKey: number | undefined;
  #latest: T | undefined;
  #lastFrameAt = 0;
  #reconnectTimer: unknown;
  #staleTimer: unknown;
  #pingTimer: unknown;
  /** The last frame's place in the decode chain; undefined when no frame waits to be inflated. */
  #decoding: Promise<void> | undefined;
  #stats = {
    delivered: 0,
    droppedOlder: 0,
    pongs: 0,
    ignored: 0,
    invalid: 0,
    disconnects: 0,
    bytesReceived: 0,
  };

  constructor(options: GatewayClientOptions<T>) {
    super();
    const url = new URL(options.url); // throws on a relative or malformed URL, before any I/O
    if (!["ws:", "wss:", "http:", "https:"].includes(url.protocol)) {
      throw new TypeError(`Cannot connect to ${url.protocol} URLs: use ws: or wss:`);
    }
    this.#o = {
      tokenIn: "query",
      protocol: "gateway",
      encoding: options.encoding ?? (canInflateRaw() ? "deflate-raw" : "text"),
      expectedIntervalMs: 250,
      staleAfter: 8,
      backoffBaseMs: 250,
      backoffCapMs: 30_000,
      pingIntervalMs: 0,
      order: (snapshot: T) => (snapshot as { ts?: number }).ts as number,
      WebSocket: globalThis.WebSocket as unknown as SocketConstructor,
      setTimeout: (callback, ms) => globalThis.setTimeout(callback, ms),
      clearTimeout: (handle) => globalThis.clearTimeout(handle as number),
      random: () => Math.random(),
      now: () => Date.now(),
      ...withoutUndefined(options),
      url: options.url,
    };
    const generation = this.#generation;
    queueMicrotask(() => this.#connect(generation));
  }

  get state(): GatewayState {
    return this.#state;
  }

  /** The last snapshot delivered, for views that subscribe late. */
  get latest(): T | undefined {
    return this.#latest;
  }

  get stats(): GatewayClientStats {
    return { ...this.#stats };
  }

  /** The frames asked of the gateway. */
  get encoding(): GatewayEncoding {
    return this.#o.encoding;
  }

  /** Stops for good: no reconnect, no timers. Resolves once the socket has closed. */
  close(): Promise<void> {
    if (this.#state === "closed") return Promise.resolve();
    this.#generation++;
    this.#clearTimers();
    this.#o.clearTimeout(this.#reconnectTimer);
    const socket = this.#socket;
    this.#detach();
    this.#setState("closed");
    if (!socket || socket.readyState > CLOSING) return Promise.resolve();
    return new Promise((resolve) => {
      socket.onclose = () => resolve();
      if (socket.readyState < CLOSING) socket.close(1000, "client closed");
    });
  }

  override addEventListener<K extends keyof GatewayClientEventMap<T>>(
    type: K,
    listener: Listener<GatewayClientEventMap<T>[K]> | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
  override addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
  override addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void {
    super.addEventListener(type, listener, options);
  }

  async #connect(generation: number): Promise<void> {
    if (generation !== this.#generation) return;
    let token: string | undefined;
    if (this.#o.token) {
      try {
        token = await this.#o.token({ reason: this.#tokenReason });
      } catch (error) {
        if (generation !== this.#generation) return;
        this.#report("The token callback failed", error);
        return this.#retryAfter(this.#backoff());
      }
      if (generation !== this.#generation) return;
    }
    let socket: SocketLike;
    try {
      socket = this.#open(token);
    } catch (error) {
      // E.g. a token that is not a valid subprotocol name: a new token may fix it.
      this.#report("Cannot create the WebSocket", error);
      return this.#retryAfter(this.#backoff());
    }
    this.#socket = socket;
    socket.onopen = () => this.#onOpen();
    if (this.#o.encoding === "deflate-raw") socket.binaryType = "arraybuffer";
    socket.onmessage = (event) => this.#onMessage(event.data);
    socket.onclose = (event) => this.#onClose(event.code, event.reason, event.wasClean);
    socket.onerror = () => {}; // a close event always follows, with what little is known
  }

  #open(token: string | undefined): SocketLike {
    let href = this.#o.url;
    if (
      this.#o.encoding === "deflate-raw" || (token !== undefined && this.#o.tokenIn === "query")
    ) {
      const url = new URL(href);
      if (this.#o.encoding === "deflate-raw") url.searchParams.set("encoding", "deflate-raw");
      if (token !== undefined && this.#o.tokenIn === "query") url.searchParams.set("token", token);
      href = url.href;
    }
    if (token === undefined || this.#o.tokenIn === "query") return new this.#o.WebSocket(href);
    return new this.#o.WebSocket(href, [this.#o.protocol, `bearer.${token}`]);
  }

  #onOpen(): void {
    this.#lastFrameAt = this.#o.now();
    this.#setState("open");
    this.#armStale();
    if (this.#o.pingIntervalMs > 0) this.#armPing();
  }

  /**
   * A frame as it arrives. Text goes on at once unless compressed frames before it are still
   * being inflated: then, like them, it waits its turn, so frames are handled in arrival order.
   */
  #onMessage(data: unknown): void {
    this.#lastFrameAt = this.#o.now();
    this.#stats.bytesReceived += byteSize(data);
    if (typeof data === "string" && this.#decoding === undefined) return this.#onFrame(data);
    if (typeof data !== "string" && this.#o.encoding !== "deflate-raw") {
      return this.#invalid("a binary frame");
    }
    const generation = this.#generation;
    const text = typeof data === "string" ? Promise.resolve(data) : inflateRaw(data);
    const tail: Promise<void> = (this.#decoding ?? Promise.resolve()).then(() => text).then(
      (decoded) => {
        if (generation === this.#generation) this.#onFrame(decoded);
      },
      (error) => {
        if (generation === this.#generation) this.#invalid("a frame that does not inflate", error);
      },
    ).finally(() => {
      if (this.#decoding === tail) this.#decoding = undefined;
    });
    this.#decoding = tail;
  }

  #onFrame(data: string): void {
    let parsed: unknown;
    try {
      parsed = JSON.parse(data);
    } catch {
      return this.#invalid("a frame that is not JSON");
    }
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
      return this.#invalid("a frame that is not a JSON object");
    }
    let key: number;
    try {
      key = this.#o.order(parsed as T);
    } catch {
      key = NaN;
    }
    if (!Number.isFinite(key)) {
      // A control frame (`{"type":"pong"}`) carries a type and no order key: never a snapshot.
      const type = (parsed as { type?: unknown }).type;
      if (type === "pong") this.#stats.pongs++;
      else if (typeof type === "string") this.#stats.ignored++;
      else this.#invalid("a snapshot without an order key (ts)");
      return;
    }
    this.#onSnapshot(parsed as T, key, data);
  }

  #onSnapshot(snapshot: T, key: number, data: string): void {
    // This connection works: the next failure starts the backoff from the beginning.
    this.#attempt = 0;
    this.#authFailures = 0;
    if (this.#lastKey !== undefined && key <= this.#lastKey) {
      this.#stats.droppedOlder++;
      return;
    }
    this.#lastKey = key;
    this.#latest = snapshot;
    this.#stats.delivered++;
    this.#armStale();
    if (this.#state === "stale") this.#setState("open");
    this.dispatchEvent(new SnapshotEvent(snapshot, data));
  }

  #onClose(code: number, reason: string, wasClean: boolean): void {
    this.#detach();
    this.#clearTimers();
    this.#stats.disconnects++;
    const delay = this.#delayAfterClose(code, reason);
    this.dispatchEvent(new DisconnectEvent(code, reason, wasClean, delay));
    this.#retryAfter(delay);
  }

  /** The reaction to each close code the gateway documents (docs/protocol.md, "Close codes"). */
  #delayAfterClose(code: number, reason: string): number {
    this.#tokenReason = "connect";
    if (code === SLOW_CONSUMER) return 0; // we fell behind once; the newest snapshot awaits
    if (code === TOKEN_EXPIRED || (code === POLICY && reason === "unauthorized")) {
      this.#tokenReason = code === TOKEN_EXPIRED ? "expired" : "unauthorized";
      this.#authFailures++;
      return this.#authFailures === 1 ? 0 : this.#backoff();
    }
    return this.#backoff(); // 1001 restart, 1006 dropped, 1013 try later, anything else
  }

  /** Full jitter: random(0, min(cap, base × 2^attempt)); spreads a reconnect storm evenly. */
  #backoff(): number {
    const ceiling = Math.min(this.#o.backoffCapMs, this.#o.backoffBaseMs * 2 ** this.#attempt);
    if (ceiling < this.#o.backoffCapMs) this.#attempt++;
    return Math.floor(this.#o.random() * ceiling);
  }

  #retryAfter(delayMs: number): void {
    this.#setState("connecting");
    const generation = this.#generation;
    this.#reconnectTimer = this.#o.setTimeout(() => {
      this.#reconnectTimer = undefined;
      this.#connect(generation);
    }, delayMs);
  }

  #armStale(): void {
    this.#o.clearTimeout(this.#staleTimer);
    this.#staleTimer = this.#o.setTimeout(() => {
      this.#staleTimer = undefined;
      if (this.#state === "open") this.#setState("stale");
    }, this.#o.expectedIntervalMs * this.#o.staleAfter);
  }

  #armPing(): void {
    this.#pingTimer = this.#o.setTimeout(() => {
      this.#pingTimer = undefined;
      const socket = this.#socket;
      if (!socket) return;
      if (this.#o.now() - this.#lastFrameAt > 2 * this.#o.pingIntervalMs) {
        // Nothing came back, not even a pong: the connection is dead though the socket says open.
        this.#onClose(4000, "no reply to ping", false);
        return socket.close(4000, "no reply to ping");
      }
      if (socket.readyState === OPEN) socket.send('{"type":"ping"}');
      this.#armPing();
    }, this.#o.pingIntervalMs);
  }

  #clearTimers(): void {
    this.#o.clearTimeout(this.#staleTimer);
    this.#o.clearTimeout(this.#pingTimer);
    this.#staleTimer = this.#pingTimer = undefined;
  }

  #detach(): void {
    const socket = this.#socket;
    if (!socket) return;
    socket.onopen = socket.onmessage = socket.onerror = null;
    socket.onclose = null;
    this.#socket = undefined;
  }

  #setState(state: GatewayState): void {
    if (state === this.#state) return;
    const previous = this.#state;
    this.#state = state;
    this.dispatchEvent(new StateChangeEvent(state, previous));
  }

  #invalid(what: string, cause?: unknown): void {
    this.#stats.invalid++;
    this.#report(`Ignored ${what}`, cause);
  }

  #report(message: string, cause?: unknown): void {
    this.dispatchEvent(new GatewayErrorEvent(new Error(message, { cause })));
  }
}

/** Whether this runtime inflates raw DEFLATE natively (Chrome 103+, Firefox 113+, Safari 16.4+). */
function canInflateRaw(): boolean {
  try {
    new DecompressionStream("deflate-raw");
    return true;
  } catch {
    return false;
  }
}

const UTF8 = new TextDecoder("utf-8", { ignoreBOM: true });

/** A binary frame's raw DEFLATE, inflated to the published text. */
async function inflateRaw(data: unknown): Promise<string> {
  if (!(data instanceof ArrayBuffer) && !(data instanceof Blob)) {
    throw new TypeError("a binary frame is neither an ArrayBuffer nor a Blob");
  }
  const blob = data instanceof Blob ? data : new Blob([data]);
  const inflated = blob.stream().pipeThrough(new DecompressionStream("deflate-raw"));
  return UTF8.decode(await new Response(inflated).arrayBuffer());
}

/** A frame's size on the wire: UTF-8 bytes of text, bytes of binary. */
function byteSize(data: unknown): number {
  if (typeof data === "string") {
    let bytes = data.length;
    for (let i = 0; i < data.length; i++) {
      const code = data.charCodeAt(i);
      if (code < 0x80) continue;
      if (code < 0x800) bytes += 1;
      else if (code >= 0xd800 && code <= 0xdbff && i + 1 < data.length) {
        bytes += 2;
        i++;
      } else bytes += 2;
    }
    return bytes;
  }
  if (data instanceof ArrayBuffer) return data.byteLength;
  if (data instanceof Blob) return data.size;
  return 0;
}

function withoutUndefined<O extends object>(options: O): Partial<O> {
  return Object.fromEntries(
    Object.entries(options).filter(([, value]) => value !== undefined),
  ) as Partial<O>;
}
