/**
 * The NATS connection: credentials and TLS files read once at startup, connect with retries,
 * and refusals (login, TLS, permissions) told apart from an unreachable server.
 */
import {
  type Authenticator,
  type ConnectionOptions,
  credsAuthenticator,
  errors,
  isIP,
  type NatsConnection,
  NatsConnectionImpl,
  nkeyAuthenticator,
  nkeys,
  setTransportFactory,
  tokenAuthenticator,
  usernamePasswordAuthenticator,
} from "@nats-io/transport-deno";
// The npm build's transport class, to wrap it (see GuardedTransport); not in the main entry.
import { nodeResolveHost, NodeTransport } from "@nats-io/transport-deno/lib/node_transport.js";
import { checkServerIdentity, connect as tlsConnect, type TLSSocket } from "node:tls";
import type { Config } from "../config.ts";
import type { Logger } from "../log.ts";
import { redactUrl } from "../redact.ts";
import { delay, errorMessage } from "../util.ts";

/** Raised when NATS cannot be used at startup; the message says what to do. */
export class NatsUnavailableError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "NatsUnavailableError";
  }
}

/** The server refused the login (wrong password, unknown user, bad signature…): never retried. */
export class NatsLoginError extends NatsUnavailableError {
  constructor(message: string) {
    super(message);
    this.name = "NatsLoginError";
  }
}

/** The TLS handshake failed or TLS was missing on one side: never retried. */
export class NatsTlsError extends NatsUnavailableError {
  constructor(message: string) {
    super(message);
    this.name = "NatsTlsError";
  }
}

/** A credential or TLS file named by a NATS_* variable cannot be read or used. */
export class NatsCredentialsError extends NatsUnavailableError {
  constructor(message: string) {
    super(message);
    this.name = "NatsCredentialsError";
  }
}

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

export interface BusOptions {
  /** Seed servers, `host:port`, `nats://host:port` or `tls://host:port`, without credentials. */
  readonly servers: readonly string[];
  /** How long startup keeps retrying an unreachable server. */
  readonly connectTimeoutMs: number;
  /** Name shown by the NATS server for this connection. */
  readonly name: string;
  readonly logger: Logger;
  /** Login and TLS; files are read once, before the first attempt. Default: none. */
  readonly credentials?: Partial<NatsCredentials>;
}

/** What a refused login was made with, for the error message; never holds a secret. */
interface Login {
  readonly authenticator?: Authenticator;
  /** `for user "gw"`, `with a token`, `with nkey UABC… (NATS_NKEY)`… */
  readonly who: string;
}

interface Tls {
  readonly ca?: string;
  readonly cert?: string;
  readonly key?: string;
}

/**
 * Connects to NATS, retrying an unreachable server until `connectTimeoutMs` has passed; a
 * refused login or failed TLS handshake fails at once. Host names are not resolved by the
 * client so that Deno's `--allow-net` host scoping applies to the names configured.
 */
export async function connectNats(options: BusOptions): Promise<NatsConnection> {
  const credentials = options.credentials ?? {};
  const login = await loadLogin(credentials);
  const tls = await loadTls(credentials, options.servers);
  const where = displayServers(options.servers);
  const deadline = Date.now() + options.connectTimeoutMs;
  let attempt = 0;
  while (true) {
    attempt++;
    const trace: AttemptTrace = { socketErrors: [], verifiesClients: false };
    try {
      return await connectOnce(clientOptions(options, login, tls, deadline), trace);
    } catch (err) {
      if (isPermissionError(err)) throw err;
      const refusal = describeRefusal(err, trace, { login, where, credentials });
      if (refusal) throw refusal;
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new NatsUnavailableError(
          `Cannot connect to NATS at ${where} after ${attempt} attempts in ${options.connectTimeoutMs} ms (GATEWAY_NATS_CONNECT_TIMEOUT_MS): ${
            errorMessage(err)
          }`,
        );
      }
      if (attempt === 1) {
        options.logger.warn("nats not reachable yet, retrying", {
          servers: where,
          error: errorMessage(err),
          retry_for_ms: left,
        });
      }
      await delay(Math.min(250, left));
    }
  }
}

function clientOptions(
  options: BusOptions,
  login: Login,
  tls: Tls | undefined,
  deadline: number,
): ConnectionOptions {
  return {
    servers: [...options.servers],
    name: options.name,
    // Connect to the configured names, so permission scoping by host holds.
    resolve: false,
    // Members a cluster advertises are outside a scoped binary's allow list; the
    // configured seed list is the whole cluster we use (README "Clusters").
    ignoreClusterUpdates: true,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    reconnectJitter: 250,
    timeout: Math.min(2_000, Math.max(100, deadline - Date.now())),
    ...(login.authenticator ? { authenticator: login.authenticator } : {}),
    // An object (even empty) makes TLS required; undefined lets the server decide.
    ...(tls ? { tls } : {}),
  };
}

/** Whether an error comes from Deno's permission checks. */
export function isPermissionError(err: unknown): boolean {
  return err instanceof Deno.errors.NotCapable || err instanceof Deno.errors.PermissionDenied;
}

/** The server list as shown to people: credentials redacted, the default scheme left out. */
function displayServers(servers: readonly string[]): string {
  return redactUrl(servers.join(",")).replaceAll("nats://", "");
}

/**
 * What one attempt's transports saw beyond what nats.js reports: with TLS 1.3 a server that
 * refuses the client certificate does so after the handshake (an alert, or just a closed
 * socket), which reaches nats.js only as a connect timeout.
 */
interface AttemptTrace {
  readonly socketErrors: Error[];
  /** The server's INFO said it verifies client certificates (`tls_verify`). */
  verifiesClients: boolean;
}

/** Raised by the transport: the server verifies client certificates and we have none. */
class ClientCertificateRequired extends Error {}

/**
 * One `connect()` of the npm transport, with sockets that keep an error listener (see
 * GuardedTransport). Set per call, since the library's own `connect()` resets the factory.
 */
function connectOnce(options: ConnectionOptions, trace: AttemptTrace): Promise<NatsConnection> {
  setTransportFactory({
    factory: () => new GuardedTransport(trace),
    dnsResolveFn: nodeResolveHost,
  });
  return NatsConnectionImpl.connect(options);
}

type Socket = NodeTransport["socket"];
type ServerAddress = { hostname: string; port: number; tlsName: string };

/**
 * nats.js's Node transport strips every listener from a socket it gives up (refused login,
 * reconnect) and then destroys it; under Deno a read already failing on that socket (the
 * server closed it: ECONNRESET, or a TLS alert) is emitted after that, with no 'error'
 * listener left, and kills the process as an uncaught error. Here every socket keeps a
 * listener that records the error; the client reports the failure itself.
 */
class GuardedTransport extends NodeTransport {
  #host = "";

  readonly #trace: AttemptTrace;
  readonly #onSocketError: (err: Error) => void;

  constructor(trace: AttemptTrace) {
    super();
    this.#trace = trace;
    // Bounded: the factory (and this trace) also serves every later reconnect.
    this.#onSocketError = (err) => {
      if (trace.socketErrors.length < 16) trace.socketErrors.push(err);
    };
  }

  override async connect(hp: ServerAddress, options: ConnectionOptions): Promise<void> {
    this.#host = hp.hostname;
    // With `resolve: false` nats.js leaves the TLS name empty; an IP cannot be one (SNI).
    const tlsName = hp.tlsName || (isIP(hp.hostname) ? "" : hp.hostname);
    await super.connect({ ...hp, tlsName }, options);
  }

  override async dial(hp: { hostname: string; port: number }) {
    return keepErrorListener(await super.dial(hp), this.#onSocketError);
  }

  /** Fails at once where the server's INFO says it wants a client certificate we lack. */
  override async peekInfo() {
    const info = await super.peekInfo();
    if (info.tls_verify === true) {
      this.#trace.verifiesClients = true;
      const tls = this.options.tls;
      if (!(typeof tls === "object" && tls?.cert)) throw new ClientCertificateRequired();
    }
    return info;
  }

  /**
   * The library's upgrade, but the TLS socket is guarded from its creation (an alert can
   * arrive with the last handshake bytes), and the certificate is checked against the host
   * dialled: without a server name Deno checks it against "localhost".
   */
  override startTLS(): Promise<TLSSocket> {
    const host = this.#host;
    const socket = tlsConnect({
      socket: this.socket,
      ...(this.tlsName ? { servername: this.tlsName } : {}),
      rejectUnauthorized: true,
      checkServerIdentity: (_name, cert) => checkServerIdentity(host, cert),
      ...(typeof this.options.tls === "object" ? this.options.tls : {}),
    });
    keepErrorListener(socket, this.#onSocketError);
    return new Promise((resolve, reject) => {
      let failure: Error | undefined;
      socket.once("secureConnect", () => {
        socket.removeAllListeners();
        resolve(socket);
      });
      socket.on("error", (err) => (failure = err));
      socket.once("close", () => {
        socket.removeAllListeners();
        reject(failure ?? new Error("connection closed during the TLS handshake"));
      });
    });
  }
}

/** Keeps an 'error' listener on `socket` even after `removeAllListeners()`. */
function keepErrorListener<S extends Socket>(socket: S, listener: (err: Error) => void): S {
  socket.on("error", listener);
  const removeAll = socket.removeAllListeners.bind(socket);
  socket.removeAllListeners = (eventName?: string | symbol) => {
    if (eventName === undefined) removeAll();
    else removeAll(eventName);
    if (eventName === undefined || eventName === "error") socket.on("error", listener);
    return socket;
  };
  return socket;
}

interface RefusalContext {
  readonly login: Login;
  readonly where: string;
  readonly credentials: Partial<NatsCredentials>;
}

/**
 * The error to stop with when a failed attempt is a refusal that retrying cannot fix (login,
 * TLS), or undefined for a failure worth retrying (refused connection, timeout).
 */
function describeRefusal(
  err: unknown,
  trace: AttemptTrace,
  { login, where, credentials }: RefusalContext,
): Error | undefined {
  if (
    err instanceof errors.AuthorizationError || err instanceof errors.UserAuthenticationExpiredError
  ) {
    return new NatsLoginError(`NATS refused the login ${login.who} at ${where}: ${err.message}`);
  }
  const tlsFailed = (reason: string) =>
    new NatsTlsError(`TLS to NATS at ${where} failed: ${reason}`);
  if (err instanceof errors.ConnectionError && err.message.includes("does not support 'tls'")) {
    return tlsFailed(
      "the server does not offer TLS, but a tls:// URL or NATS_CA/NATS_CERT asks for it",
    );
  }
  if (err instanceof ClientCertificateRequired) {
    return tlsFailed(
      "the server requires a client certificate (tls_verify): set NATS_CERT and NATS_KEY",
    );
  }
  // A TLS failure is the attempt's error, or (alert after the handshake) one its sockets saw.
  const tlsError = [err, ...trace.socketErrors].find(isTlsFailure);
  if (tlsError !== undefined) {
    const reason = errorMessage(tlsError);
    const code = String((tlsError as { code?: unknown }).code ?? "");
    const shown = code && !reason.includes(code) ? `${reason} (${code})` : reason;
    return tlsFailed(`${shown}${tlsHint(`${code} ${reason}`, credentials)}`);
  }
  // Closed without an alert read: the alert can be lost when the server closes first.
  if (trace.verifiesClients && trace.socketErrors.length > 0) {
    return tlsFailed(
      `the server closed the connection after the TLS handshake (${
        errorMessage(trace.socketErrors[0])
      }): it verifies client certificates and did not accept the one in NATS_CERT`,
    );
  }
  return undefined;
}

/** Node/Deno TLS error codes and messages that mean the handshake or a certificate failed. */
const TLS_FAILURE =
  /certificate|CERT_|self.signed|unknown.?ca|UnknownIssuer|altname|NotValidForName|handshake|alert|ERR_TLS|ERR_SSL|EPROTO/i;

function isTlsFailure(err: unknown): err is Error {
  if (!(err instanceof Error)) return false;
  return TLS_FAILURE.test(`${String((err as { code?: unknown }).code ?? "")} ${err.message}`);
}

/** What to change, by the kind of TLS failure and the settings given. */
function tlsHint(failure: string, c: Partial<NatsCredentials>): string {
  if (/altname|NotValidForName/i.test(failure)) {
    return " (the server's certificate does not name the host in NATS_URL)";
  }
  if (/verify|self.signed|issuer|unknown.?ca|CERT_/i.test(failure)) {
    return c.natsCaPath
      ? " (the server's certificate is not signed by the CA in NATS_CA)"
      : " (the server requires TLS: set NATS_CA to the CA that signed its certificate)";
  }
  if (/alert/i.test(failure)) {
    return c.natsCertPath
      ? " (the server did not accept the client certificate in NATS_CERT)"
      : " (the server may require a client certificate: set NATS_CERT and NATS_KEY)";
  }
  return "";
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
async function loadLogin(c: Partial<NatsCredentials>): Promise<Login> {
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
async function loadTls(
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
