/**
 * Signing keys and JWTs made at test time with jose: nothing secret is checked in, and each
 * run signs with fresh keys.
 */
import { exportJWK, exportSPKI, generateKeyPair, type JWK, type JWTPayload, SignJWT } from "jose";

/** A freshly generated key pair with its public half as PEM and as JWK. */
export interface TestKey {
  readonly alg: string;
  readonly kid: string | undefined;
  readonly privateKey: CryptoKey;
  readonly publicPem: string;
  readonly publicJwk: JWK;
}

/** 48 random bytes as text: a valid GATEWAY_JWT_SECRET. */
export function randomSecret(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(48));
  return btoa(String.fromCharCode(...bytes));
}

export async function generateTestKey(alg: string, kid?: string): Promise<TestKey> {
  const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true });
  const publicJwk = await exportJWK(publicKey);
  return {
    alg,
    kid,
    privateKey,
    publicPem: await exportSPKI(publicKey),
    publicJwk: kid === undefined ? publicJwk : { ...publicJwk, kid },
  };
}

/** A JWKS document holding the public halves of `keys`. */
export function jwksOf(...keys: TestKey[]): string {
  return JSON.stringify({ keys: keys.map((key) => key.publicJwk) });
}

export interface TokenOptions {
  /** Seconds from now; default 300. `null`: no `exp`. */
  readonly expiresInS?: number | null;
  /** Seconds from now for `nbf`; unset: no `nbf`. */
  readonly notBeforeInS?: number;
  /** Overrides the key's `kid` in the header (undefined: the key's own, if any). */
  readonly kid?: string;
  /** Overrides the signing algorithm (e.g. HS256 with a public key's PEM as the secret). */
  readonly alg?: string;
}

/** A JWT signed with `key` (a TestKey, or an HMAC secret given as text). */
export async function signToken(
  key: TestKey | { readonly secret: string; readonly alg?: string },
  claims: JWTPayload = {},
  options: TokenOptions = {},
): Promise<string> {
  const alg = options.alg ?? key.alg ?? "HS256";
  const kid = options.kid ?? ("kid" in key ? key.kid : undefined);
  const now = Math.floor(Date.now() / 1000);
  let jwt = new SignJWT({ sub: "user-1", ...claims })
    .setProtectedHeader(kid === undefined ? { alg } : { alg, kid })
    .setIssuedAt(now);
  const expiresIn = options.expiresInS === undefined ? 300 : options.expiresInS;
  if (expiresIn !== null) jwt = jwt.setExpirationTime(now + expiresIn);
  if (options.notBeforeInS !== undefined) jwt = jwt.setNotBefore(now + options.notBeforeInS);
  const signingKey = "secret" in key ? new TextEncoder().encode(key.secret) : key.privateKey;
  return await jwt.sign(signingKey);
}

/** An unsecured JWT (`alg: none`): valid-looking, never acceptable. */
export function unsecuredToken(claims: JWTPayload = { sub: "user-1" }): string {
  const encode = (value: unknown) =>
    btoa(JSON.stringify(value)).replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_");
  const exp = Math.floor(Date.now() / 1000) + 300;
  return `${encode({ alg: "none", typ: "JWT" })}.${encode({ ...claims, exp })}.`;
}

/** A temp directory holding the given files; removed on dispose. */
export async function tempFiles(
  files: Record<string, string>,
): Promise<{ readonly path: (name: string) => string } & AsyncDisposable> {
  const dir = await Deno.makeTempDir({ prefix: "gateway-auth-" });
  for (const [name, text] of Object.entries(files)) {
    await Deno.writeTextFile(`${dir}/${name}`, text);
  }
  return {
    path: (name) => `${dir}/${name}`,
    [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }),
  };
}
