/**
 * One client from upgrade to close. `Sessions` counts every upgraded socket until its close
 * event — opening, open, or closed by us but not yet gone — so the connection limit holds
 * whatever a peer does; `startSession` applies the frame rules and records one close reason.
 */
import { type Broadcaster, type ClientSocket, CloseCode } from "./broadcaster.ts";
import type { GatewayMetrics } from "./metrics.ts";
import type { Refusal } from "./auth.ts";

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

/** Every socket from its upgrade until its close event (or until released unopened). */
export class Sessions {
  readonly #held = new Set<UpgradedSocket>();
  readonly #openTimers = new Map<UpgradedSocket, ReturnType<typeof setTimeout>>();
  readonly #options: SessionsOptions;
  #closeAllWith: { code: number; reason: string } | undefined;
  #emptied: PromiseWithResolvers<void> | undefined;

  constructor(options: SessionsOptions) {
    this.#options = options;
  }

  /** Sockets that count against the connection limit: opening, open, or closing. */
  get held(): number {
    return this.#held.size;
  }

  /** Counts a socket from its upgrade; `close` must follow, or the open bound releases it. */
  track(socket: UpgradedSocket): void {
    this.#held.add(socket);
    this.#options.metrics.socketsHeld.set(this.#held.size);
    const timer = setTimeout(() => {
      if (!this.#openTimers.delete(socket)) return;
      this.#options.metrics.upgradesAbandoned.inc();
      this.#release(socket);
    }, this.#options.openTimeoutMs ?? DEFAULT_OPEN_TIMEOUT_MS);
    this.#openTimers.set(socket, timer);
    socket.addEventListener("open", () => {
      clearTimeout(this.#openTimers.get(socket));
      this.#openTimers.delete(socket);
      // Opened after shutdown began: it gets the same goodbye as the others.
      if (this.#closeAllWith) {
        this.close(socket, this.#closeAllWith.code, this.#closeAllWith.reason);
      }
    });
    socket.addEventListener("close", () => {
      clearTimeout(this.#openTimers.get(socket));
      this.#openTimers.delete(socket);
      this.#release(socket);
    });
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
    for (const socket of [...this.#held]) {
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

  #release(socket: UpgradedSocket): void {
    this.#held.delete(socket);
    this.#options.metrics.socketsHeld.set(this.#held.size);
    if (this.#held.size === 0 && this.#emptied) {
      this.#emptied.resolve();
      this.#emptied = undefined;
    }
  }
}

export interface SessionDeps {
  readonly broadcaster: Broadcaster;
  readonly metrics: GatewayMetrics;
  readonly sessions: Sessions;
  readonly clientMaxFrameBytes: number;
  readonly clientMaxFramesPerSecond: number;
  readonly now: () => number;
  /** When the client's token expires (ms since the epoch, skew included); unset: never. */
  readonly expiresAtMs?: number;
}

/** Sent when a session's token expires: the client should fetch a new token and reconnect. */
export const TOKEN_EXPIRED = { code: 4001, reason: "token expired" } as const;

/** setTimeout's longest delay (~24.8 days); a later expiry re-arms the timer. */
const MAX_TIMER_MS = 2 ** 31 - 1;

const PONG = '{"type":"pong"}';
/** Deno's reason when a client does not answer a ping within idleTimeout. */
const IDLE_TIMEOUT_REASON = "No response from ping frame.";

/** An authorized client: joins the broadcaster on open; frame rules; one close reason. */
export function startSession(socket: UpgradedSocket, deps: SessionDeps): void {
  let opened = false;
  let windowStart = deps.now();
  let framesInWindow = 0;
  let closedBy: "protocol" | "idle_timeout" | "token_expired" | null = null;
  let expiryTimer: ReturnType<typeof setTimeout> | undefined;

  const closeFor = (code: number, reason: string, by: typeof closedBy = "protocol") => {
    closedBy = by;
    deps.broadcaster.remove(socket, "closed");
    deps.sessions.close(socket, code, reason);
  };
  const expireAt = (atMs: number) => {
    const wait = atMs - Date.now();
    if (wait <= 0) return closeFor(TOKEN_EXPIRED.code, TOKEN_EXPIRED.reason, "token_expired");
    expiryTimer = setTimeout(() => expireAt(atMs), Math.min(wait, MAX_TIMER_MS));
  };

  socket.addEventListener("open", () => {
    if (socket.readyState !== 1) return; // closed at once (shutdown began while it opened)
    opened = true;
    deps.metrics.connectionsOpened.inc();
    // Expired while it opened: closed before it is given any data.
    if (deps.expiresAtMs !== undefined) expireAt(deps.expiresAtMs);
    if (closedBy === null) deps.broadcaster.add(socket);
  });
  socket.addEventListener("message", (event) => {
    const data = (event as MessageEvent).data;
    deps.metrics.clientFramesIgnored.inc();
    const t = deps.now();
    if (t - windowStart >= 1000) {
      windowStart = t;
      framesInWindow = 0;
    }
    if (++framesInWindow > deps.clientMaxFramesPerSecond) {
      return closeFor(CloseCode.policyViolation, "too many frames");
    }
    if (typeof data !== "string") {
      return closeFor(CloseCode.unsupportedData, "binary frames are not accepted");
    }
    if (data.length > deps.clientMaxFrameBytes) {
      return closeFor(CloseCode.messageTooBig, "frame too big");
    }
    if (isPing(data) && socket.readyState === 1 && socket.bufferedAmount === 0) {
      socket.send(PONG);
    }
  });
  let closeHandled = false;
  socket.addEventListener("close", (event) => {
    // Deno can dispatch close twice (after an idle timeout: 1001, then 1005); count once.
    if (closeHandled || !opened) return;
    closeHandled = true;
    clearTimeout(expiryTimer);
    if ((event as CloseEvent).reason === IDLE_TIMEOUT_REASON) closedBy = "idle_timeout";
    deps.broadcaster.remove(socket, "closed");
    const removedFor = deps.broadcaster.removalReason(socket);
    const reason = closedBy ??
      (removedFor === undefined || removedFor === "closed" ? "client" : removedFor);
    deps.metrics.connectionsClosed.inc({ reason });
  });
  socket.addEventListener("error", () => {
    // A close event follows; it does the bookkeeping.
  });
}

/** A refused client: accepted, then closed with 1008 and the refusal before any data. */
export function refuseSession(
  socket: UpgradedSocket,
  sessions: Sessions,
  reason: Refusal = "unauthorized",
): void {
  socket.addEventListener("open", () => {
    sessions.close(socket, CloseCode.policyViolation, reason);
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
