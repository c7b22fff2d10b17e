/**
 * Who may connect: the decision for one upgrade, from static tokens (GATEWAY_AUTH_TOKENS) and JWTs
 * (./jwt.ts, keys from ./keys.ts), the token's source (./tokens.ts) and its `routes` claim. The
 * only I/O is reading the key files, once, when the Authenticator is made.
 */
import { decodeJwt, decodeProtectedHeader, type JWTPayload } from "jose";
import { type JwtKeyFiles, readJwtKeys } from "./keys.ts";
import { JwtVerifier } from "./jwt.ts";
import { findToken, type FoundToken, routesCover, type TokenSource } from "./tokens.ts";

/** Why a client is refused: no valid token, or a valid one that does not cover the route. */
export type Refusal = "unauthorized" | "forbidden";

/** What a refusal log line may show: never the token, only its readable `sub` and `kid`. */
export interface RefusalDetail {
  /** A short cause: "no token", "unknown token", or jose's error code (e.g. ERR_JWT_EXPIRED). */
  readonly why: string;
  readonly source?: TokenSource;
  readonly sub?: string;
  readonly kid?: string;
}

export type AuthOutcome =
  | {
    readonly admitted: true; /** ms since the epoch when the session must end. */
    readonly expiresAtMs?: number;
  }
  | { readonly admitted: false; readonly reason: Refusal; readonly detail: RefusalDetail };

const ADMITTED: AuthOutcome = Object.freeze({ admitted: true });

/** Longer tokens are refused unread: nothing legitimate is this big, and parsing costs. */
export const MAX_TOKEN_LENGTH = 8192;

/** `sub` and `kid` are client-controlled: logged cut to this length. */
const MAX_LOGGED_CLAIM = 64;

export interface AuthenticatorOptions {
  /** GATEWAY_AUTH_TOKENS. */
  readonly tokens: readonly string[];
  /** Set when any GATEWAY_JWT_* key is configured. */
  readonly jwt?: JwtVerifier;
}

/** Decides whether one upgrade request may open its route. */
export class Authenticator {
  readonly #tokens: readonly string[];
  readonly #jwt: JwtVerifier | undefined;

  constructor(options: AuthenticatorOptions) {
    this.#tokens = options.tokens;
    this.#jwt = options.jwt;
  }

  /** The authenticator a configuration asks for (reads and imports the JWT keys it names). */
  static async fromConfig(config: AuthConfig): Promise<Authenticator> {
    const keys = readJwtKeys(config);
    const jwtConfigured = config.jwtSecret !== "" || keys.length > 0;
    const jwt = jwtConfigured
      ? await JwtVerifier.create({
        secret: config.jwtSecret,
        keys,
        audience: config.jwtAudience,
        issuer: config.jwtIssuer,
        clockSkewSeconds: config.jwtClockSkewSeconds,
      })
      : undefined;
    return new Authenticator({ tokens: config.authTokens, jwt });
  }

  /** False when no token is configured: every route is open. */
  get required(): boolean {
    return this.#tokens.length > 0 || this.#jwt !== undefined;
  }

  /** Synchronous unless a JWT has to be verified (jose is async: other clients go on). */
  authenticate(request: Request, path: string): AuthOutcome | Promise<AuthOutcome> {
    if (!this.required) return ADMITTED;
    const found = findToken(request);
    if (found === undefined) return refuse("unauthorized", { why: "no token" });
    if (found.token.length > MAX_TOKEN_LENGTH) {
      return refuse("unauthorized", { why: "token too long", source: found.source });
    }
    if (this.#isStaticToken(found.token)) return ADMITTED;
    if (this.#jwt === undefined) {
      return refuse("unauthorized", { why: "unknown token", source: found.source });
    }
    return this.#verify(this.#jwt, found, path);
  }

  async #verify(jwt: JwtVerifier, found: FoundToken, path: string): Promise<AuthOutcome> {
    let claims: JWTPayload;
    try {
      claims = await jwt.verify(found.token);
    } catch (err) {
      const code = (err as { code?: unknown })?.code;
      return refuse("unauthorized", {
        why: typeof code === "string" ? code : "invalid token",
        ...readable(found),
      });
    }
    if (!routesCover(claims.routes, path)) {
      return refuse("forbidden", { why: "route not in claim", ...readable(found) });
    }
    return typeof claims.exp === "number"
      ? { admitted: true, expiresAtMs: claims.exp * 1000 + jwt.clockSkewMs }
      : ADMITTED;
  }

  /** Compared with every token, in time that does not depend on where a guess first differs. */
  #isStaticToken(given: string): boolean {
    let match = false;
    for (const token of this.#tokens) match = constantTimeEqual(given, token) || match;
    return match;
  }
}

/** The fields of Config that say who may connect. */
export interface AuthConfig extends JwtKeyFiles {
  readonly authTokens: readonly string[];
  readonly jwtSecret: string;
  readonly jwtAudience: string;
  readonly jwtIssuer: string;
  readonly jwtClockSkewSeconds: number;
}

function refuse(reason: Refusal, detail: RefusalDetail): AuthOutcome {
  return { admitted: false, reason, detail };
}

/** Where the token came from and its `sub` and `kid` if readable, cut short; nothing else. */
function readable(found: FoundToken): { source: TokenSource; sub?: string; kid?: string } {
  const sub = tryRead(() => decodeJwt(found.token).sub);
  const kid = tryRead(() => decodeProtectedHeader(found.token).kid);
  return {
    source: found.source,
    ...(sub === undefined ? {} : { sub }),
    ...(kid === undefined ? {} : { kid }),
  };
}

/** A string claim or header of an unverified token, or undefined when it cannot be read. */
function tryRead(read: () => unknown): string | undefined {
  try {
    const value = read();
    return typeof value === "string" ? value.slice(0, MAX_LOGGED_CLAIM) : undefined;
  } catch {
    return undefined; // unreadable (malformed token): nothing to show
  }
}

function constantTimeEqual(a: string, b: string): boolean {
  let difference = a.length ^ b.length;
  for (let i = 0; i < b.length; i++) difference |= (a.charCodeAt(i) | 0) ^ b.charCodeAt(i);
  return difference === 0;
}
