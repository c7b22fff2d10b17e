/** Verifying a JWT with jose: signature, exp and nbf (with the allowed skew), aud, iss. */
import {
  createLocalJWKSet,
  type FlattenedJWSInput,
  type JWSHeaderParameters,
  type JWTPayload,
  jwtVerify,
} from "jose";
import { algorithmsFor, HMAC_ALGORITHMS, type PublicJwk } from "./keys.ts";

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
