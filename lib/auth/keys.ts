/**
 * Key material for JWTs: the secret, a PEM public key or a JWKS file, read and checked once when
 * the authenticator starts (and by --check-config); the algorithms each key allows.
 */
import { createPublicKey } from "node:crypto";
import { type JWK } from "jose";

/** Raised for an unusable auth setting; config.ts turns it into a ConfigError (exit 2). */
export class AuthConfigError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "AuthConfigError";
  }
}

/** A public key as JWK, with the `kid` that selects it (none for a PEM key). */
export type PublicJwk = JWK & { readonly kid?: string };

/** HMAC algorithms: only ever with GATEWAY_JWT_SECRET, never with a public key. */
export const HMAC_ALGORITHMS = ["HS256", "HS384", "HS512"] as const;

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
