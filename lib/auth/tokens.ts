/** Where a client's token comes from, the subprotocol to echo, and the `routes` claim. */
import { pathMatches } from "../wildcard.ts";

/** Where a token was found. */
export type TokenSource = "header" | "protocol" | "query";

/** The protocol prefix that carries a token (`Sec-WebSocket-Protocol: bearer.<token>`). */
const PROTOCOL_TOKEN_PREFIX = "bearer.";

export interface FoundToken {
  readonly token: string;
  readonly source: TokenSource;
}

/** The offered subprotocols, however the commas are spaced. */
function offeredProtocols(request: Request): string[] {
  const header = request.headers.get("sec-websocket-protocol") ?? "";
  return header.split(",").map((p) => p.trim()).filter((p) => p !== "");
}

/** The token a client presents: `Authorization: Bearer`, a `bearer.` subprotocol, or `?token=`. */
export function findToken(request: Request): FoundToken | undefined {
  const bearer = /^Bearer\s+(\S+)$/i.exec(request.headers.get("authorization") ?? "")?.[1];
  if (bearer) return { token: bearer, source: "header" };
  const protocol = offeredProtocols(request).find((p) => p.startsWith(PROTOCOL_TOKEN_PREFIX));
  if (protocol && protocol.length > PROTOCOL_TOKEN_PREFIX.length) {
    return { token: protocol.slice(PROTOCOL_TOKEN_PREFIX.length), source: "protocol" };
  }
  const query = new URL(request.url).searchParams.get("token");
  return query ? { token: query, source: "query" } : undefined;
}

/**
 * The subprotocol to echo: the first the client offered that is not a token. A browser that
 * offers protocols fails a handshake that selects none, so a client sending its token this way
 * offers a second one too (e.g. `["gateway", "bearer.<token>"]`); the token is never echoed.
 */
export function selectProtocol(request: Request): string | undefined {
  // Deno.upgradeWebSocket accepts only an entry of the header split on ", " exactly.
  const asDenoSplits = (request.headers.get("sec-websocket-protocol") ?? "").split(", ");
  return offeredProtocols(request).find((p) =>
    !p.startsWith(PROTOCOL_TOKEN_PREFIX) && asDenoSplits.includes(p)
  );
}

/** Whether a token's `routes` claim lets it open `path`; absent covers every route. */
export function routesCover(claim: unknown, path: string): boolean {
  if (claim === undefined) return true;
  if (!Array.isArray(claim)) return false;
  return claim.some((pattern) => typeof pattern === "string" && pathMatches(pattern, path));
}
