/** Secrets never leave the process: URLs are shown with their credentials replaced. */

export const REDACTED = "[REDACTED]";

/** A server entry with no credentials: `[scheme://]host[:port]`. */
const PLAIN_SERVER = /^\s*(?:[a-z][a-z0-9+.-]*:\/\/)?(?:\[[0-9a-f:.]*\]|[\w.-]+)(?::\d+)?\/?\s*$/i;

/**
 * A server list (`nats://user:pass@a:4222,b:4222`) with every password or token replaced:
 * `nats://user:[REDACTED]@a:4222`; a token (`nats://tok@a:4222`) becomes `[REDACTED]@`.
 * Works on the raw text, so a value that does not parse is redacted too: a password holding
 * an unencoded `,` (which splits it into entries that are not servers) is hidden whole.
 */
export function redactUrl(list: string): string {
  const entries = list.split(",");
  const shown: string[] = [];
  for (let i = 0; i < entries.length; i++) {
    let entry = entries[i];
    // Not a server and an `@` follows: the start of a password that holds a comma.
    if (!entry.includes("@") && !PLAIN_SERVER.test(entry)) {
      const end = entries.findIndex((e, j) => j > i && e.includes("@"));
      if (end > i) {
        entry = entries.slice(i, end + 1).join(",");
        i = end;
      }
    }
    shown.push(redactEntry(entry));
  }
  return shown.join(",");
}

/** One entry: everything between the scheme and the last `@` is the userinfo. */
function redactEntry(entry: string): string {
  const at = entry.lastIndexOf("@");
  if (at < 0) return entry;
  const schemeEnd = entry.indexOf("://");
  const start = schemeEnd < 0 || schemeEnd > at ? 0 : schemeEnd + 3;
  const userinfo = entry.slice(start, at);
  const colon = userinfo.indexOf(":");
  const user = colon < 0 ? "" : `${userinfo.slice(0, colon)}:`;
  return `${entry.slice(0, start)}${user}${REDACTED}${entry.slice(at)}`;
}
