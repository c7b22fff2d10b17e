/**
 * The one file that knows which NATS transport runs: the npm build of nats.js's Node transport
 * (JSR, where the design's @nats-io/transport-deno lives, is not reachable from our machines;
 * docs/architecture.md). Moving to transport-deno changes this file and deno.json only.
 */
import type { ConnectionOptions, NatsConnection } from "@nats-io/nats-core";
// nats-core's internals the transport hooks into, as the transport package exports them.
import { isIP, NatsConnectionImpl, setTransportFactory } from "@nats-io/transport-node";
// The transport class, to wrap it (see GuardedTransport); not in the package's main entry.
import { nodeResolveHost, NodeTransport } from "@nats-io/transport-node/lib/node_transport.js";
import { checkServerIdentity, connect as tlsConnect, type TLSSocket } from "node:tls";

/** A plain client connection (tests, the demo publisher, the benchmark). */
export { connect } from "@nats-io/transport-node";

/**
 * What one attempt's transports saw beyond what nats.js reports: with TLS 1.3 a server that
 * refuses the client certificate does so after the handshake (an alert, or just a closed
 * socket), which reaches nats.js only as a connect timeout.
 */
export interface AttemptTrace {
  readonly socketErrors: Error[];
  /** The server's INFO said it verifies client certificates (`tls_verify`). */
  verifiesClients: boolean;
}

/** Raised by the transport: the server verifies client certificates and we have none. */
export class ClientCertificateRequired extends Error {}

/**
 * One `connect()` of the npm transport, with sockets that keep an error listener (see
 * GuardedTransport). Set per call, since the library's own `connect()` resets the factory.
 */
export function connectOnce(
  options: ConnectionOptions,
  trace: AttemptTrace,
): Promise<NatsConnection> {
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
