/**
 * Who may connect: where a client's token comes from, static tokens, JWTs verified with `jose`
 * (HMAC secret, PEM public key, JWKS file), per-route access from the `routes` claim, and the
 * allowed browser origins. The only I/O is reading the key files, once, when the Authenticator
 * starts (main.ts reads them first too, so a bad one exits 2 before anything else starts).
 */
import { createPublicKey } from "node:crypto";
import {
  createLocalJWKSet,
  decodeJwt,
  decodeProtectedHeader,
  type FlattenedJWSInput,
  type JWK,
  type JWSHeaderParameters,
  type JWTPayload,
  jwtVerify,
} from "jose";
import { pathMatches } from "../wildcard.ts";

/** Raised for an unusable auth setting; config.ts turns it into a ConfigError (exit 2). */
export class AuthConfigError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "AuthConfigError";
  }
}

/** A public key as JWK, with the `kid` that selects it (none for a PEM key). */
export type PublicJwk = JWK & { readonly kid?: string };

/** Why a client is refused: no valid token, or a valid one that does not cover the route. */
export type Refusal = "unauthorized" | "forbidden";

/** Where a token was found. */
export type TokenSource = "header" | "protocol" | "query";

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

/** HMAC algorithms: only ever with GATEWAY_JWT_SECRET, never with a public key. */
const HMAC_ALGORITHMS = ["HS256", "HS384", "HS512"] as const;
const RSA_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"];
const EC_ALGORITHMS: Readonly<Record<string, string>> = {
  "P-256": "ES256",
  "P-384": "ES384",
  "P-521": "ES512",
};
/** jose 6 accepts both names for Ed25519 signatures. */
const ED25519_ALGORITHMS = ["EdDSA", "Ed25519"];

/** Shortest GATEWAY_JWT_SECRET: RFC 7518 §3.2 wants an HMAC key at least as long as the hash. */
export const MIN_JWT_SECRET_BYTES = 32;
/** Longer tokens are refused unread: nothing legitimate is this big, and parsing costs. */
export const MAX_TOKEN_LENGTH = 8192;
/** `sub` and `kid` are client-controlled: logged cut to this length. */
const MAX_LOGGED_CLAIM = 64;
/** The protocol prefix that carries a token (`Sec-WebSocket-Protocol: bearer.<token>`). */
const PROTOCOL_TOKEN_PREFIX = "bearer.";

// ---------------------------------------------------------------------------------------------
// Key material, read and checked once at startup (synchronously: a bad file is a config error).

/** The signature algorithms a public key may verify; throws for an unusable key. */
export function algorithmsFor(jwk: PublicJwk, where: string): string[] {
  const byType = jwk.kty === "RSA"
    ? RSA_ALGORITHMS
    : jwk.kty === "EC" && typeof jwk.crv === "string" && EC_ALGORITHMS[jwk.crv]
    ? [EC_ALGORITHMS[jwk.crv]]
    : jwk.kty === "OKP" && jwk.crv === "Ed25519"
    ? ED25519_ALGORITHMS
    : undefined;
  if (byType === undefined) {
    throw new AuthConfigError(
      `${where} holds a key of an unsupported type (${
        String(jwk.kty).slice(0, 8)
      }): use RSA, EC P-256/P-384/P-521 or Ed25519`,
    );
  }
  if (jwk.alg === undefined) return [...byType];
  if (!byType.includes(jwk.alg)) {
    throw new AuthConfigError(
      `${where} holds a ${jwk.kty} key with "alg" ${
        JSON.stringify(String(jwk.alg).slice(0, 16))
      }, which such a key cannot verify (allowed: ${byType.join(", ")})`,
    );
  }
  return [jwk.alg];
}

function readKeyFile(variable: string, path: string): string {
  try {
    return Deno.readTextFileSync(path);
  } catch (err) {
    const why = err instanceof Deno.errors.NotFound
      ? "no such file"
      : err instanceof Deno.errors.PermissionDenied || err instanceof Deno.errors.NotCapable
      ? "this process may not read it"
      : "it cannot be read";
    throw new AuthConfigError(`${variable} names a file that cannot be used: "${path}" (${why})`);
  }
}

/** GATEWAY_JWT_PUBLIC_KEY: one PEM public key (SPKI, PKCS#1 or a certificate) as a JWK. */
export function readPublicKeyFile(path: string): PublicJwk {
  const variable = "GATEWAY_JWT_PUBLIC_KEY";
  const text = readKeyFile(variable, path);
  // createPublicKey would quietly derive the public half: a private key has no place here.
  if (/PRIVATE KEY-----/.test(text)) {
    throw new AuthConfigError(
      `${variable} must name a public key, but "${path}" holds a private key: give the gateway the public key only (the file is not shown)`,
    );
  }
  let jwk: PublicJwk;
  try {
    jwk = createPublicKey(text).export({ format: "jwk" }) as PublicJwk;
  } catch {
    throw new AuthConfigError(
      `${variable} must name a PEM public key (RSA, EC or Ed25519): "${path}" is not one (the file is not shown)`,
    );
  }
  algorithmsFor(jwk, `${variable} ("${path}")`);
  return jwk;
}

/** GATEWAY_JWT_JWKS: a JWKS document (`{"keys": [...]}`) of public signing keys. */
export function readJwksFile(path: string): PublicJwk[] {
  const variable = "GATEWAY_JWT_JWKS";
  const text = readKeyFile(variable, path);
  let keys: unknown;
  try {
    keys = (JSON.parse(text) as { keys?: unknown })?.keys;
  } catch {
    keys = undefined;
  }
  if (!Array.isArray(keys) || keys.length === 0) {
    throw new AuthConfigError(
      `${variable} must name a JWKS file ({"keys": [...]} with at least one key): "${path}" is not one (the file is not shown)`,
    );
  }
  return keys.map((key, index) => checkJwk(key, `${variable} ("${path}") key ${index + 1}`));
}

/** The public keys of GATEWAY_JWT_PUBLIC_KEY and GATEWAY_JWT_JWKS; throws AuthConfigError. */
export function readJwtKeys(paths: JwtKeyFiles): PublicJwk[] {
  return [
    ...(paths.jwtPublicKeyPath ? [readPublicKeyFile(paths.jwtPublicKeyPath)] : []),
    ...(paths.jwtJwksPath ? readJwksFile(paths.jwtJwksPath) : []),
  ];
}

/** The fields of Config that name JWT key files ("" for none). */
export interface JwtKeyFiles {
  readonly jwtPublicKeyPath: string;
  readonly jwtJwksPath: string;
}

function checkJwk(key: unknown, where: string): PublicJwk {
  if (key === null || typeof key !== "object" || Array.isArray(key)) {
    throw new AuthConfigError(`${where} is not a JSON object`);
  }
  const jwk = key as PublicJwk;
  // "d" (and RSA's primes) are private; "k" is a shared secret: never in a public key set.
  if ("d" in jwk || "p" in jwk || "k" in jwk || jwk.kty === "oct") {
    throw new AuthConfigError(
      `${where} holds private or secret key material: a JWKS for the gateway holds public keys only (use GATEWAY_JWT_SECRET for HMAC)`,
    );
  }
  if (jwk.kid !== undefined && typeof jwk.kid !== "string") {
    throw new AuthConfigError(`${where} has a "kid" that is not a string`);
  }
  algorithmsFor(jwk, where);
  try {
    createPublicKey({ key: { ...jwk }, format: "jwk" });
  } catch {
    throw new AuthConfigError(`${where} is not a valid public key`);
  }
  return jwk;
}

// ---------------------------------------------------------------------------------------------
// Verification.

export interface JwtOptions {
  /** GATEWAY_JWT_SECRET; "" for none. */
  readonly secret: string;
  /** From GATEWAY_JWT_PUBLIC_KEY and GATEWAY_JWT_JWKS. */
  readonly keys: readonly PublicJwk[];
  /** Required `aud` ("" accepts any). */
  readonly audience: string;
  /** Required `iss` ("" accepts any). */
  readonly issuer: string;
  readonly clockSkewSeconds: number;
}

/** Verifies JWTs with the configured keys; only the algorithms those keys allow. */
export class JwtVerifier {
  readonly #hmacKeys: ReadonlyMap<string, CryptoKey>;
  readonly #jwks: ReturnType<typeof createLocalJWKSet> | undefined;
  readonly #algorithms: string[];
  readonly #options: JwtOptions;

  private constructor(options: JwtOptions, hmacKeys: Map<string, CryptoKey>) {
    this.#options = options;
    this.#hmacKeys = hmacKeys;
    this.#jwks = options.keys.length > 0
      ? createLocalJWKSet({ keys: options.keys.map((k) => ({ ...k })) })
      : undefined;
    const algorithms = new Set<string>(hmacKeys.keys());
    for (const key of options.keys) {
      for (const alg of algorithmsFor(key, "key")) algorithms.add(alg);
    }
    this.#algorithms = [...algorithms];
  }

  /** Imports the HMAC keys once (Web Crypto keys are bound to one hash each). */
  static async create(options: JwtOptions): Promise<JwtVerifier> {
    const hmacKeys = new Map<string, CryptoKey>();
    if (options.secret !== "") {
      const raw = new TextEncoder().encode(options.secret);
      for (const alg of HMAC_ALGORITHMS) {
        const hash = `SHA-${alg.slice(2)}`;
        hmacKeys.set(
          alg,
          await crypto.subtle.importKey("raw", raw, { name: "HMAC", hash }, false, ["verify"]),
        );
      }
    }
    return new JwtVerifier(options, hmacKeys);
  }

  get algorithms(): readonly string[] {
    return this.#algorithms;
  }

  /** The allowance on `exp`/`nbf`; a session also ends this long after `exp`. */
  get clockSkewMs(): number {
    return this.#options.clockSkewSeconds * 1000;
  }

  /** The verified claims; rejects with jose's error (its `code` says why) otherwise. */
  async verify(token: string): Promise<JWTPayload> {
    const { payload } = await jwtVerify(token, (header, input) => this.#keyFor(header, input), {
      algorithms: this.#algorithms,
      clockTolerance: this.#options.clockSkewSeconds,
      ...(this.#options.audience ? { audience: this.#options.audience } : {}),
      ...(this.#options.issuer ? { issuer: this.#options.issuer } : {}),
    });
    return payload;
  }

  #keyFor(header: JWSHeaderParameters, input: FlattenedJWSInput): CryptoKey | Promise<CryptoKey> {
    // `algorithms` has already refused what no configured key allows, `none` included; an HS*
    // header only ever gets the secret, so a public key is never used as an HMAC secret.
    const hmac = this.#hmacKeys.get(header.alg ?? "");
    if (hmac) return hmac;
    if (this.#jwks === undefined) throw new Error("no public key configured");
    return this.#jwks(header, input);
  }
}

// ---------------------------------------------------------------------------------------------
// Token sources.

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

// ---------------------------------------------------------------------------------------------
// Per-route access.

/** Whether a token's `routes` claim lets it open `path`; absent covers every route. */
export function routesCover(claim: unknown, path: string): boolean {
  if (claim === undefined) return true;
  if (!Array.isArray(claim)) return false;
  return claim.some((pattern) => typeof pattern === "string" && pathMatches(pattern, path));
}

// ---------------------------------------------------------------------------------------------
// The decision for one upgrade.

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

// ---------------------------------------------------------------------------------------------
// Origins.

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
