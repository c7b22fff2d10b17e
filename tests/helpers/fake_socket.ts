/** A recording stand-in for a server WebSocket, at the edge of the Broadcaster and handler. */
import type { ClientSocket } from "../../lib/relay/broadcaster.ts";

export class FakeSocket extends EventTarget implements ClientSocket {
  readyState = 1;
  bufferedAmount = 0;
  /** Text frames, in order. */
  readonly sent: string[] = [];
  /** Every frame in order: text as a string, binary as a copy of its bytes. */
  readonly frames: (string | Uint8Array)[] = [];
  closedWith: { code?: number; reason?: string } | undefined;
  /** When set, send() throws this. */
  failWith: Error | undefined;
  /** When true, every send adds its length to bufferedAmount (a client that never reads). */
  stalled = false;

  send(data: string | ArrayBuffer): void {
    if (this.failWith) throw this.failWith;
    if (typeof data === "string") {
      this.sent.push(data);
      this.frames.push(data);
      if (this.stalled) this.bufferedAmount += data.length;
    } else {
      this.frames.push(new Uint8Array(data.slice(0)));
      if (this.stalled) this.bufferedAmount += data.byteLength;
    }
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
