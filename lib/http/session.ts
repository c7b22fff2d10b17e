/**
 * One client from upgrade to close. `Sessions` counts every upgraded socket until its close
 * event — opening, open, or closed by us but not yet gone — so the connection limit holds
 * whatever a peer does; `startSession` applies the frame rules and records one close reason.
 *
 * Everything here runs once per connection, on the path from connect to first snapshot, so a
 * socket gets one handler object for `open` and `close` (its `Tracked`) and one for `message`
 * (its `Session`), and sockets that never open are let go by one sweep timer, not one timer each.
 */
import { CloseCode } from "../close_codes.ts";
import type { Broadcaster, ClientSocket } from "../relay/broadcaster.ts";
import type { GatewayMetrics } from "../observe/metrics.ts";
import type { Refusal } from "../auth/authenticator.ts";
import type { Encoding } from "../relay/compression.ts";

/** The socket a session needs: a ClientSocket that also emits open/message/close events. */
export type UpgradedSocket = ClientSocket & EventTarget;

/**
 * How long an upgraded socket may take to open. Deno writes the 101 as soon as the handler
 * returns; a socket reset before that never dispatches `open` nor `close`, so it is let go.
 */
export const DEFAULT_OPEN_TIMEOUT_MS = 10_000;

export interface SessionsOptions {
  readonly metrics: GatewayMetrics;
  readonly openTimeoutMs?: number;
}

/** What `Tracked` tells the session on its socket (a refused one only needs `opened`). */
interface SessionHooks {
  opened(): void;
  closed?(event: Event): void;
}

/** One held socket: its open/close listener, and since when it waits to open. */
class Tracked {
  hooks: SessionHooks | undefined;
  constructor(
    readonly socket: UpgradedSocket,
    readonly sessions: Sessions,
    readonly trackedAt: number,
  ) {}

  handleEvent(event: Event): void {
    if (event.type === "open") this.sessions.opened(this);
    else this.sessions.closed(this, event);
  }
}

/** Every socket from its upgrade until its close event (or until released unopened). */
export class Sessions {
  readonly #held = new Map<UpgradedSocket, Tracked>();
  /** Sockets not yet open, in the order they were tracked: the oldest first. */
  readonly #opening = new Set<Tracked>();
  readonly #options: SessionsOptions;
  readonly #openTimeoutMs: number;
  #sweepTimer: ReturnType<typeof setTimeout> | undefined;
  #closeAllWith: { code: number; reason: string } | undefined;
  #emptied: PromiseWithResolvers<void> | undefined;

  constructor(options: SessionsOptions) {
    this.#options = options;
    this.#openTimeoutMs = options.openTimeoutMs ?? DEFAULT_OPEN_TIMEOUT_MS;
  }

  /** Sockets that count against the connection limit: opening, open, or closing. */
  get held(): number {
    return this.#held.size;
  }

  /** Counts a socket from its upgrade; `close` must follow, or the open bound releases it. */
  track(socket: UpgradedSocket): void {
    if (this.#held.has(socket)) return;
    const tracked = new Tracked(socket, this, performance.now());
    this.#held.set(socket, tracked);
    this.#opening.add(tracked);
    this.#options.metrics.socketsHeld.set(this.#held.size);
    socket.addEventListener("open", tracked);
    socket.addEventListener("close", tracked);
    this.#sweepTimer ??= setTimeout(() => this.#sweep(), this.#openTimeoutMs);
  }

  /** Gives the session on a tracked socket its open/close hooks (startSession, refuseSession). */
  attach(socket: UpgradedSocket, hooks: SessionHooks): void {
    if (!this.#held.has(socket)) this.track(socket);
    this.#held.get(socket)!.hooks = hooks;
  }

  /** Starts the close handshake; the socket stays counted until its close event. */
  close(socket: UpgradedSocket, code: number, reason: string): void {
    if (!this.#held.has(socket)) return;
    try {
      socket.close(code, reason);
    } catch {
      // Already closing: its close event still comes.
    }
  }

  /** Closes every socket (and any that opens later) with `code`; resolves when all are gone. */
  closeAll(code: number, reason: string): Promise<void> {
    this.#closeAllWith = { code, reason };
    for (const socket of [...this.#held.keys()]) {
      if (socket.readyState === 1) this.close(socket, code, reason);
    }
    return this.idle();
  }

  /** Resolves once no socket is held. */
  idle(): Promise<void> {
    if (this.#held.size === 0) return Promise.resolve();
    this.#emptied ??= Promise.withResolvers<void>();
    return this.#emptied.promise;
  }

  /** @internal Called by a socket's Tracked on `open`. */
  opened(tracked: Tracked): void {
    this.#stopWaiting(tracked);
    if (this.#closeAllWith) {
      // Opened after shutdown began: it gets the same goodbye as the others.
      this.close(tracked.socket, this.#closeAllWith.code, this.#closeAllWith.reason);
    }
    tracked.hooks?.opened();
  }

  /** @internal Called by a socket's Tracked on `close` (Deno may dispatch it twice). */
  closed(tracked: Tracked, event: Event): void {
    this.#stopWaiting(tracked);
    tracked.hooks?.closed?.(event);
    this.#release(tracked.socket);
  }

  /** Lets go of every socket past the open bound; re-arms for the oldest still opening. */
  #sweep(): void {
    this.#sweepTimer = undefined;
    const now = performance.now();
    for (const tracked of this.#opening) {
      const waited = now - tracked.trackedAt;
      if (waited < this.#openTimeoutMs) {
        this.#sweepTimer = setTimeout(() => this.#sweep(), this.#openTimeoutMs - waited);
        return;
      }
      this.#opening.delete(tracked);
      this.#options.metrics.upgradesAbandoned.inc();
      this.#release(tracked.socket);
    }
  }

  /** The socket opened or closed: the open bound no longer applies to it. */
  #stopWaiting(tracked: Tracked): void {
    this.#opening.delete(tracked);
    // No timer left behind once nothing waits (a test's timer sanitizer would see it).
    if (this.#opening.size === 0 && this.#sweepTimer !== undefined) {
      clearTimeout(this.#sweepTimer);
      this.#sweepTimer = undefined;
    }
  }

  #release(socket: UpgradedSocket): void {
    if (!this.#held.delete(socket)) return;
    this.#options.metrics.socketsHeld.set(this.#held.size);
    if (this.#held.size === 0 && this.#emptied) {
      this.#emptied.resolve();
      this.#emptied = undefined;
    }
  }
}

export interface SessionDeps {
  readonly broadcaster: Broadcaster;
  /** The frames the client asked for (`?encoding=`); default text. */
  readonly encoding?: Encoding;
  readonly metrics: GatewayMetrics;
  readonly sessions: Sessions;
  readonly clientMaxFrameBytes: number;
  readonly clientMaxFramesPerSecond: number;
  readonly now: () => number;
  /** When the client's token expires (ms since the epoch, skew included); unset: never. */
  readonly expiresAtMs?: number;
}

/** Sent when a session's token expires: the client should fetch a new token and reconnect. */
export const TOKEN_EXPIRED = { code: CloseCode.tokenExpired, reason: "token expired" } as const;

/** setTimeout's longest delay (~24.8 days); a later expiry re-arms the timer. */
const MAX_TIMER_MS = 2 ** 31 - 1;

const PONG = '{"type":"pong"}';
/** Deno's reason when a client does not answer a ping within idleTimeout. */
const IDLE_TIMEOUT_REASON = "No response from ping frame.";

type ClosedBy = "protocol" | "idle_timeout" | "token_expired" | null;

/**
 * Close reasons as label objects made once: a fresh object per close would be garbage on the
 * connection path (the metric still formats the key; see the report on label lookups).
 */
const CLOSE_LABELS = {
  client: { reason: "client" },
  protocol: { reason: "protocol" },
  idle_timeout: { reason: "idle_timeout" },
  token_expired: { reason: "token_expired" },
  send_error: { reason: "send_error" },
  slow_consumer: { reason: "slow_consumer" },
  shutdown: { reason: "shutdown" },
} as const;

/** An authorized client's state: frame rules on `message`, joins on open, one close reason. */
class Session implements SessionHooks {
  #opened = false;
  #closeHandled = false;
  #windowStart: number;
  #framesInWindow = 0;
  #closedBy: ClosedBy = null;
  #expiryTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(readonly socket: UpgradedSocket, readonly deps: SessionDeps) {
    this.#windowStart = deps.now();
  }

  opened(): void {
    if (this.socket.readyState !== 1) return; // closed at once (shutdown began while it opened)
    this.#opened = true;
    this.deps.metrics.connectionsOpened.inc();
    // Expired while it opened: closed before it is given any data.
    if (this.deps.expiresAtMs !== undefined) this.#expireAt(this.deps.expiresAtMs);
    if (this.#closedBy === null) this.deps.broadcaster.add(this.socket, this.deps.encoding);
  }

  /** The `message` listener: every client frame is counted, checked and otherwise ignored. */
  handleEvent(event: Event): void {
    const data = (event as MessageEvent).data;
    const deps = this.deps;
    deps.metrics.clientFramesIgnored.inc();
    const t = deps.now();
    if (t - this.#windowStart >= 1000) {
      this.#windowStart = t;
      this.#framesInWindow = 0;
    }
    if (++this.#framesInWindow > deps.clientMaxFramesPerSecond) {
      return this.#closeFor(CloseCode.policyViolation, "too many frames");
    }
    if (typeof data !== "string") {
      return this.#closeFor(CloseCode.unsupportedData, "binary frames are not accepted");
    }
    if (data.length > deps.clientMaxFrameBytes) {
      return this.#closeFor(CloseCode.messageTooBig, "frame too big");
    }
    const socket = this.socket;
    if (isPing(data) && socket.readyState === 1 && socket.bufferedAmount === 0) {
      socket.send(PONG);
    }
  }

  closed(event: Event): void {
    // Deno can dispatch close twice (after an idle timeout: 1001, then 1005); count once.
    if (this.#closeHandled || !this.#opened) return;
    this.#closeHandled = true;
    clearTimeout(this.#expiryTimer);
    if ((event as CloseEvent).reason === IDLE_TIMEOUT_REASON) this.#closedBy = "idle_timeout";
    const broadcaster = this.deps.broadcaster;
    broadcaster.remove(this.socket, "closed");
    const removedFor = broadcaster.removalReason(this.socket);
    const reason = this.#closedBy ??
      (removedFor === undefined || removedFor === "closed" ? "client" : removedFor);
    this.deps.metrics.connectionsClosed.inc(CLOSE_LABELS[reason]);
  }

  #closeFor(code: number, reason: string, by: ClosedBy = "protocol"): void {
    this.#closedBy = by;
    this.deps.broadcaster.remove(this.socket, "closed");
    this.deps.sessions.close(this.socket, code, reason);
  }

  #expireAt(atMs: number): void {
    const wait = atMs - Date.now();
    if (wait <= 0) {
      return this.#closeFor(TOKEN_EXPIRED.code, TOKEN_EXPIRED.reason, "token_expired");
    }
    this.#expiryTimer = setTimeout(() => this.#expireAt(atMs), Math.min(wait, MAX_TIMER_MS));
  }
}

/** An authorized client: joins the broadcaster on open; frame rules; one close reason. */
export function startSession(socket: UpgradedSocket, deps: SessionDeps): void {
  const session = new Session(socket, deps);
  deps.sessions.attach(socket, session);
  socket.addEventListener("message", session);
}

/** A refused client: accepted, then closed with 1008 and the refusal before any data. */
export function refuseSession(
  socket: UpgradedSocket,
  sessions: Sessions,
  reason: Refusal = "unauthorized",
): void {
  sessions.attach(socket, {
    opened: () => sessions.close(socket, CloseCode.policyViolation, reason),
  });
}

function isPing(data: string): boolean {
  if (data.length > 64 || !data.includes("ping")) return false;
  try {
    const parsed = JSON.parse(data);
    return parsed !== null && typeof parsed === "object" && parsed.type === "ping";
  } catch {
    return false;
  }
}
