/** The one validation a NATS payload passes before it may reach a client or the cache. */

export type InvalidReason = "empty" | "too_large" | "invalid_utf8" | "invalid_json" | "not_object";

export type PayloadCheck =
  | { readonly ok: true; readonly text: string }
  | { readonly ok: false; readonly reason: InvalidReason };

const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * Accepts a payload that is non-empty, at most `maxBytes`, valid UTF-8 and a JSON object; the
 * returned text is the payload's bytes unchanged, ready to be sent as one text frame.
 */
export function checkPayload(data: Uint8Array, maxBytes: number): PayloadCheck {
  if (data.byteLength === 0) return { ok: false, reason: "empty" };
  if (data.byteLength > maxBytes) return { ok: false, reason: "too_large" };
  let text: string;
  try {
    text = utf8.decode(data);
  } catch {
    return { ok: false, reason: "invalid_utf8" };
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return { ok: false, reason: "invalid_json" };
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    return { ok: false, reason: "not_object" };
  }
  return { ok: true, text };
}
