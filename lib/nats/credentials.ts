/**
 * The NATS login and TLS files named by NATS_* settings, read and checked once before the
 * first connect: a bad file fails at startup, and no error ever shows a file's content.
 */
import {
  type Authenticator,
  credsAuthenticator,
  nkeyAuthenticator,
  nkeys,
  tokenAuthenticator,
  usernamePasswordAuthenticator,
} from "@nats-io/nats-core";
import type { Config } from "../config/config.ts";
import { errorMessage } from "../util.ts";
import { isPermissionError, NatsCredentialsError } from "./errors.ts";

/** The login and TLS settings of Config (all optional: empty means unset). */
export type NatsCredentials = Pick<
  Config,
  | "natsUser"
  | "natsPassword"
  | "natsToken"
  | "natsNkeyPath"
  | "natsCredsPath"
  | "natsCaPath"
  | "natsCertPath"
  | "natsKeyPath"
>;

/** What a refused login was made with, for the error message; never holds a secret. */
export interface Login {
  readonly authenticator?: Authenticator;
  /** `for user "gw"`, `with a token`, `with nkey UABC… (NATS_NKEY)`… */
  readonly who: string;
}

export interface Tls {
  readonly ca?: string;
  readonly cert?: string;
  readonly key?: string;
}

/** Reads a file named by a NATS_* variable; the error names the variable and path, never content. */
async function readCredentialFile(variable: string, path: string): Promise<Uint8Array> {
  try {
    return await Deno.readFile(path);
  } catch (err) {
    const reason = err instanceof Deno.errors.NotFound
      ? "no such file"
      : isPermissionError(err)
      ? "Deno's read permission does not cover this path"
      : err instanceof Deno.errors.IsADirectory
      ? "it is a directory"
      : errorMessage(err);
    throw new NatsCredentialsError(
      `Cannot read ${variable}: current value is "${path}" (${reason})`,
    );
  }
}

/** The single login method configured, its file (if any) read and checked now. */
export async function loadLogin(c: Partial<NatsCredentials>): Promise<Login> {
  const methods = [
    c.natsUser ? "NATS_USER/NATS_PASSWORD" : "",
    c.natsToken ? "NATS_TOKEN" : "",
    c.natsNkeyPath ? "NATS_NKEY" : "",
    c.natsCredsPath ? "NATS_CREDS" : "",
  ].filter((m) => m !== "");
  if (methods.length > 1) {
    throw new NatsCredentialsError(
      `Set one NATS login, not several: ${
        methods.join(", ")
      } are set (credentials in NATS_URL count as NATS_USER/NATS_PASSWORD or NATS_TOKEN)`,
    );
  }
  if (c.natsUser) {
    return {
      authenticator: usernamePasswordAuthenticator(c.natsUser, c.natsPassword ?? ""),
      who: `for user ${JSON.stringify(c.natsUser)}`,
    };
  }
  if (c.natsToken) return { authenticator: tokenAuthenticator(c.natsToken), who: "with a token" };
  if (c.natsNkeyPath) return await loadNkey(c.natsNkeyPath);
  if (c.natsCredsPath) return await loadCreds(c.natsCredsPath);
  return {
    who: c.natsCertPath
      ? "with the client certificate (NATS_CERT)"
      : "with no credentials (set NATS_USER and NATS_PASSWORD, NATS_TOKEN, NATS_NKEY or NATS_CREDS)",
  };
}

/** A user nkey seed file: the seed (`SU…`) on a line of its own, as `nk -gen user` writes it. */
async function loadNkey(path: string): Promise<Login> {
  const text = new TextDecoder().decode(await readCredentialFile("NATS_NKEY", path));
  const seed = text.split(/\s+/).find((word) => /^SU[A-Z2-7]{50,}$/.test(word));
  const publicKey = seed === undefined ? undefined : publicKeyOf(new TextEncoder().encode(seed));
  if (seed === undefined || publicKey === undefined) {
    throw new NatsCredentialsError(
      `NATS_NKEY must name a file holding a user nkey seed (SU…): current value is "${path}" (no valid seed found; the file is not shown)`,
    );
  }
  return {
    authenticator: nkeyAuthenticator(new TextEncoder().encode(seed)),
    who: `with nkey ${publicKey} (NATS_NKEY)`,
  };
}

/** A `.creds` file (user JWT + seed), parsed and checked now so a bad file fails at startup. */
async function loadCreds(path: string): Promise<Login> {
  const bytes = await readCredentialFile("NATS_CREDS", path);
  const authenticator = credsAuthenticator(bytes);
  let publicKey: string;
  try {
    // Signing a nonce parses the JWT and the seed, as the first login will.
    publicKey = String((authenticator("probe") as { nkey?: string }).nkey ?? "");
    if (!publicKey) throw new Error("no seed");
  } catch {
    throw new NatsCredentialsError(
      `NATS_CREDS must name a .creds file (user JWT and nkey seed): current value is "${path}" (it does not parse; the file is not shown)`,
    );
  }
  return { authenticator, who: `with the creds file "${path}" for ${publicKey} (NATS_CREDS)` };
}

function publicKeyOf(seed: Uint8Array): string | undefined {
  try {
    return nkeys.fromSeed(seed).getPublicKey();
  } catch {
    return undefined; // The caller reports the file as invalid, without its content.
  }
}

/** TLS options from NATS_CA/NATS_CERT/NATS_KEY and tls:// URLs; undefined when TLS is not asked for. */
export async function loadTls(
  c: Partial<NatsCredentials>,
  servers: readonly string[],
): Promise<Tls | undefined> {
  if (Boolean(c.natsCertPath) !== Boolean(c.natsKeyPath)) {
    throw new NatsCredentialsError(
      "NATS_CERT and NATS_KEY go together: set both (client certificate and its key) or neither",
    );
  }
  const wantsTls = servers.some((s) => s.startsWith("tls://"));
  if (!wantsTls && !c.natsCaPath && !c.natsCertPath) return undefined;
  const read = async (variable: string, path: string | undefined) =>
    path ? new TextDecoder().decode(await readCredentialFile(variable, path)) : undefined;
  const [ca, cert, key] = await Promise.all([
    read("NATS_CA", c.natsCaPath),
    read("NATS_CERT", c.natsCertPath),
    read("NATS_KEY", c.natsKeyPath),
  ]);
  return {
    ...(ca !== undefined ? { ca } : {}),
    ...(cert !== undefined ? { cert } : {}),
    ...(key !== undefined ? { key } : {}),
  };
}
