/** The browser origins that may connect (GATEWAY_ALLOWED_ORIGINS). */
import { AuthConfigError } from "./keys.ts";

/** GATEWAY_ALLOWED_ORIGINS: `*` (any), or exact origins such as `https://app.example.com`. */
export function parseAllowedOrigins(raw: string | undefined): string[] {
  if (raw === undefined || raw.trim() === "*") return ["*"];
  const entries = raw.split(",").map((entry) => entry.trim()).filter((entry) => entry !== "");
  for (const entry of entries) {
    let origin: string | undefined;
    try {
      const url = new URL(entry);
      origin = ["http:", "https:"].includes(url.protocol) ? url.origin : undefined;
    } catch {
      origin = undefined;
    }
    if (origin !== entry) {
      throw new AuthConfigError(
        `GATEWAY_ALLOWED_ORIGINS must be "*" or a comma-separated list of origins such as https://app.example.com (scheme, host and port only, as browsers send them): entry "${entry}" is not one${
          origin ? ` (write "${origin}")` : ""
        }`,
      );
    }
  }
  return entries;
}

/** Which browser origins may open a WebSocket and read the HTTP endpoints (CORS). */
export class OriginPolicy {
  readonly #allowed: ReadonlySet<string> | undefined;

  /** `["*"]`: any origin, today's behaviour. */
  constructor(allowed: readonly string[] = ["*"]) {
    this.#allowed = allowed.includes("*") ? undefined : new Set(allowed);
  }

  /** A request without Origin is not from a browser page: origins do not apply to it. */
  allows(origin: string | null): boolean {
    return origin === null || this.#allowed === undefined || this.#allowed.has(origin);
  }

  /** CORS headers for a response to a request with this Origin. */
  corsHeaders(origin: string | null): Record<string, string> {
    if (this.#allowed === undefined) return { "access-control-allow-origin": "*" };
    // Vary: a cache must not serve one origin's answer to another.
    return origin !== null && this.#allowed.has(origin)
      ? { "access-control-allow-origin": origin, vary: "Origin" }
      : { vary: "Origin" };
  }
}
