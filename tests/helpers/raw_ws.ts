/**
 * A raw TCP WebSocket peer for what a browser never does: stop reading, send malformed
 * upgrades, never answer pings. Only the handshake is parsed; the rest is bytes.
 */

export interface RawResponse {
  readonly status: number;
  readonly head: string;
}

/** A valid WebSocket upgrade request for /ws/stream, with a fresh key. */
export function upgradeRequest(addr: Deno.NetAddr): string {
  const key = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))));
  return `GET /ws/stream HTTP/1.1\r\nHost: ${addr.hostname}:${addr.port}\r\nUpgrade: websocket\r\n` +
    `Connection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`;
}

export class RawPeer implements AsyncDisposable {
  #closed = false;
  private constructor(readonly conn: Deno.TcpConn, readonly response: RawResponse) {}

  /** Sends `request` (default: a valid upgrade) and reads the response head, then stops reading. */
  static async connect(addr: Deno.NetAddr, request?: string): Promise<RawPeer> {
    const conn = await Deno.connect({ hostname: addr.hostname, port: addr.port });
    await writeAll(conn, new TextEncoder().encode(request ?? upgradeRequest(addr)));
    const head = await readHead(conn);
    const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0);
    return new RawPeer(conn, { status, head });
  }

  /** Sends one masked client frame. */
  async sendFrame(opcode: number, payload: Uint8Array, fin = true): Promise<void> {
    await writeAll(this.conn, encodeClientFrame(opcode, payload, fin));
  }

  /** Resolves when the server closes the TCP connection (reads and discards until EOF). */
  async untilClosed(): Promise<void> {
    const buffer = new Uint8Array(64 * 1024);
    try {
      while ((await this.conn.read(buffer)) !== null) {
        // discard
      }
    } catch {
      // reset by peer: closed too
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.conn.close();
    } catch {
      // already closed
    }
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }
}

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let written = 0;
  while (written < data.length) written += await conn.write(data.subarray(written));
}

async function readHead(conn: Deno.Conn): Promise<string> {
  const bytes: number[] = [];
  const one = new Uint8Array(1);
  // Byte by byte, so nothing after the head is consumed: the peer must not read frames.
  while (true) {
    const n = await conn.read(one);
    if (n === null) break;
    bytes.push(one[0]);
    const len = bytes.length;
    if (
      len >= 4 && bytes[len - 4] === 13 && bytes[len - 3] === 10 && bytes[len - 2] === 13 &&
      bytes[len - 1] === 10
    ) break;
  }
  return new TextDecoder().decode(new Uint8Array(bytes));
}

export function encodeClientFrame(opcode: number, payload: Uint8Array, fin = true): Uint8Array {
  const mask = crypto.getRandomValues(new Uint8Array(4));
  const length = payload.length;
  const header: number[] = [(fin ? 0x80 : 0) | (opcode & 0x0f)];
  if (length < 126) header.push(0x80 | length);
  else if (length < 65536) header.push(0x80 | 126, length >> 8, length & 0xff);
  else {
    header.push(0x80 | 127, 0, 0, 0, 0);
    header.push(
      (length >>> 24) & 0xff,
      (length >>> 16) & 0xff,
      (length >>> 8) & 0xff,
      length & 0xff,
    );
  }
  const frame = new Uint8Array(header.length + 4 + length);
  frame.set(header, 0);
  frame.set(mask, header.length);
  for (let i = 0; i < length; i++) frame[header.length + 4 + i] = payload[i] ^ mask[i % 4];
  return frame;
}
