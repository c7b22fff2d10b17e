/**
 * Opt-in compressed frames (`?encoding=deflate-raw`): what a client may ask for, and one
 * message's frames, its text and its raw DEFLATE (RFC 1951), compressed at most once per message
 * whatever the number of clients. docs/protocol.md has the wire contract.
 */
import { deflateRawSync } from "node:zlib";

/** `text`: UTF-8 text frames (the default); `deflate-raw`: binary frames of raw DEFLATE. */
export type Encoding = "text" | "deflate-raw";

export const ENCODINGS: readonly Encoding[] = ["text", "deflate-raw"];

/** The `encoding` query parameter's value, or undefined when the gateway does not know it. */
export function parseEncoding(value: string | null): Encoding | undefined {
  if (value === null) return "text";
  return (ENCODINGS as readonly string[]).includes(value) ? value as Encoding : undefined;
}

/**
 * zlib level 6 (zlib's default). On scripts/publisher.ts's snapshots (200 × 6.8 KB, node:zlib,
 * 2-core machine, 2026-12-05): level 1 → 27% of the size, 3 → 20.6%, 6 → 19.6% in ~56 µs,
 * 9 → 19.3% in ~83 µs. Compressed once per message, so the cost is per message, not per client.
 */
const DEFLATE_LEVEL = 6;

const utf8 = new TextEncoder();

/**
 * One message as clients get it. The DEFLATE form is made on first use (the first compressed
 * client it is sent to), then shared: a message no compressed client gets (skipped while the
 * route is behind, a topic without compressed clients) costs no compression.
 */
export class Frames {
  /** The exact published bytes as text (lib/relay/payload.ts checked they are UTF-8). */
  readonly text: string;
  /** UTF-8 size of `text`: what a text frame queues. */
  readonly textBytes: number;
  /** Raw DEFLATE of the text's bytes; null: not smaller, so compressed clients get `text`. */
  #deflated: ArrayBuffer | null | undefined;

  constructor(text: string, textBytes = utf8Length(text)) {
    this.text = text;
    this.textBytes = textBytes;
  }

  /** The binary frame for compressed clients, or null when it would not be smaller. */
  deflated(): ArrayBuffer | null {
    if (this.#deflated === undefined) {
      const compressed = deflateRawSync(utf8.encode(this.text), { level: DEFLATE_LEVEL });
      // An exact ArrayBuffer: Deno sends one with a fast call and copies it once per socket.
      this.#deflated = compressed.byteLength < this.textBytes
        ? compressed.buffer.slice(
          compressed.byteOffset,
          compressed.byteOffset + compressed.byteLength,
        ) as ArrayBuffer
        : null;
    }
    return this.#deflated;
  }
}

/** UTF-8 size of a string without encoding it. */
export function utf8Length(text: string): number {
  let bytes = text.length;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code < 0x80) continue;
    if (code < 0x800) bytes += 1;
    else if (code >= 0xd800 && code <= 0xdbff && i + 1 < text.length) {
      bytes += 2; // a surrogate pair: 2 UTF-16 units, 4 bytes
      i++;
    } else bytes += 2;
  }
  return bytes;
}
