/** A recording stand-in for a server WebSocket, at the edge of the Broadcaster and handler. */
import type { ClientSocket } from "../../lib/broadcaster.ts";

export class FakeSocket extends EventTarget implements ClientSocket {
  readyState = 1;
  bufferedAmount = 0;
  readonly sent: string[] = [];
  closedWith: { code?: number; reason?: string } | undefined;
  /** When set, send() throws this. */
  failWith: Error | undefined;
  /** When true, every send adds its length to bufferedAmount (a client that never reads). */
  stalled = false;

  send(data: string): void {
    if (this.failWith) throw this.failWith;
    this.sent.push(data);
    if (this.stalled) this.bufferedAmount += data.length;
  }

  close(code?: number, reason?: string): void {
    this.closedWith = { code, reason };
    this.readyState = 2;
  }

  /** Lets `bytes` of the queue go and keeps the stall as it is (a client reading a little). */
  consume(bytes: number): void {
    this.bufferedAmount = Math.max(0, this.bufferedAmount - bytes);
  }

  /** Lets the queued bytes go, as a client that reads again. */
  drain(): void {
    this.stalled = false;
    this.bufferedAmount = 0;
  }
}
