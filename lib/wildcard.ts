/**
 * The one wildcard matcher: a pattern and a name split into tokens; `*` matches one non-empty
 * token, `>` (NATS subjects only) one or more tokens to the end. Used for NATS subjects (a
 * stream's subjects, a route's consumer filter) and for paths (the `routes` claim of a token).
 */
function matches(pattern: string, name: string, separator: "." | "/"): boolean {
  const want = pattern.split(separator);
  const have = name.split(separator);
  for (let i = 0; i < want.length; i++) {
    if (separator === "." && want[i] === ">") return have.length > i;
    if (i >= have.length) return false;
    if (want[i] === "*" ? have[i] === "" : want[i] !== have[i]) return false;
  }
  return want.length === have.length;
}

/** Whether a NATS subject pattern (`levels.*`, `levels.>`) takes `subject`. */
export function subjectMatches(pattern: string, subject: string): boolean {
  return matches(pattern, subject, ".");
}

/** Whether a path pattern (`/ws/levels/*`: `*` is one segment) takes `path`. */
export function pathMatches(pattern: string, path: string): boolean {
  return matches(pattern, path, "/");
}
