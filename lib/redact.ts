/** Secrets never leave the process: URLs are shown with their credentials replaced. */

export const REDACTED = "[REDACTED]";

/**
 * A server list (`nats://user:pass@a:4222,b:4222`) with every password or token replaced:
 * `nats://user:[REDACTED]@a:4222`; a token (`nats://tok@a:4222`) becomes `[REDACTED]@`.
 * Anything that does not parse as a URL is shown only up to its scheme, never as given.
 */
export function redactUrl(list: string): string {
  return list.split(",").map((entry) => redactOne(entry.trim())).join(",");
}

function redactOne(entry: string): string {
  const at = entry.lastIndexOf("@");
  if (at < 0) return entry;
  const schemeEnd = entry.indexOf("://");
  const start = schemeEnd < 0 ? 0 : schemeEnd + 3;
  const userinfo = entry.slice(start, at);
  const colon = userinfo.indexOf(":");
  const shown = colon < 0 ? REDACTED : `${userinfo.slice(0, colon)}:${REDACTED}`;
  return `${entry.slice(0, start)}${shown}${entry.slice(at)}`;
}
