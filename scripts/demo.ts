/**
 * `deno task demo`: everything needed to watch the gateway work, in one command.
 *
 * 1. a private nats-server with JetStream on a free port and a temporary store (or `NATS_URL`);
 * 2. the gateway, started the way `deno task start` starts it, on `GATEWAY_PORT` (default 8000)
 *    of `GATEWAY_HOST` (default 127.0.0.1); the rest of the environment is passed on;
 * 3. a synthetic Core publisher (scripts/publisher.ts): a `levels.signals.v1` snapshot every
 *    `DEMO_INTERVAL_MS` (default 250).
 *
 * It prints the viewer's URL (`viewer: http://127.0.0.1:8000/`) and the gateway's log (stderr).
 * SIGINT (Ctrl-C) or SIGTERM stops the publisher, then the gateway, then nats-server, removes the
 * temporary store, and exits 0. If the gateway exits by itself, so does the demo, with its code.
 */
import { redactUrl } from "../lib/config/redact.ts";
import { errorMessage } from "../lib/util.ts";
import { NatsServer } from "../tools/nats_server.ts";
import { LISTENING_LINE, startTaskArgs } from "../tools/gateway_process.ts";
import { type RunningPublisher, startPublisher } from "./publisher.ts";

/** How long the gateway may take to drain its clients before it is killed. */
const GATEWAY_STOP_TIMEOUT_MS = 10_000;

/** The gateway as `deno task start` runs it: the launcher, which runs main.ts. */
class GatewayChild implements AsyncDisposable {
  readonly listening: Promise<Deno.NetAddr>;
  readonly exited: Promise<number>;
  readonly #child: Deno.ChildProcess;

  constructor(env: Record<string, string>, args: string[]) {
    this.#child = new Deno.Command(Deno.execPath(), {
      args,
      cwd: decodeURIComponent(new URL("..", import.meta.url).pathname),
      env,
      stdin: "null",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const listening = Promise.withResolvers<Deno.NetAddr>();
    this.listening = listening.promise;
    this.exited = this.#child.status.then((status) => status.code);
    this.#forwardLog(listening.resolve).finally(() =>
      listening.reject(new Error("the gateway exited before listening"))
    );
    this.listening.catch(() => {});
  }

  /** Copies the gateway's JSON log lines to stderr, spotting the one that gives its address. */
  async #forwardLog(onListening: (addr: Deno.NetAddr) => void): Promise<void> {
    let buffer = "";
    for await (const chunk of this.#child.stdout.pipeThrough(new TextDecoderStream())) {
      buffer += chunk;
      const lines = buffer.split("\n");
      buffer = lines.pop()!;
      for (const line of lines) {
        console.error(line);
        const match = LISTENING_LINE.exec(line);
        if (match) onListening({ transport: "tcp", hostname: match[1], port: Number(match[2]) });
      }
    }
  }

  /** SIGTERM (the launcher forwards it to main.ts), then SIGKILL if it does not stop in time. */
  async [Symbol.asyncDispose](): Promise<void> {
    signal(this.#child, "SIGTERM");
    const timer = setTimeout(() => signal(this.#child, "SIGKILL"), GATEWAY_STOP_TIMEOUT_MS);
    await this.exited;
    clearTimeout(timer);
  }
}

function signal(child: Deno.ChildProcess, name: Deno.Signal): void {
  try {
    child.kill(name);
  } catch {
    // Exited already: nothing to stop.
  }
}

/** Resolves with the first SIGINT/SIGTERM; the listeners go when disposed. */
function stopSignal(): { promise: Promise<Deno.Signal> } & Disposable {
  const { promise, resolve } = Promise.withResolvers<Deno.Signal>();
  const names = ["SIGINT", "SIGTERM"] as const;
  const listeners = names.map((name) => [name, () => resolve(name)] as const);
  for (const [name, listener] of listeners) Deno.addSignalListener(name, listener);
  return {
    promise,
    [Symbol.dispose]: () => {
      for (const [name, listener] of listeners) Deno.removeSignalListener(name, listener);
    },
  };
}

/** A browsable address for the viewer: a wildcard listen address is reached on loopback. */
function viewerUrl(addr: Deno.NetAddr): string {
  const host = addr.hostname === "0.0.0.0"
    ? "127.0.0.1"
    : addr.hostname === "::"
    ? "[::1]"
    : addr.hostname.includes(":")
    ? `[${addr.hostname}]`
    : addr.hostname;
  return `http://${host}:${addr.port}/`;
}

function positiveInteger(name: string, fallback: string): number {
  const text = Deno.env.get(name)?.trim() || fallback;
  const value = Number(text);
  if (!Number.isInteger(value) || value < 1) {
    throw new Error(`Cannot parse ${name} as a positive integer: current value is "${text}"`);
  }
  return value;
}

/** Runs until a stop signal or the gateway's own exit; everything started is stopped in reverse. */
export async function runDemo(): Promise<number> {
  using stop = stopSignal();
  await using started = new AsyncDisposableStack();
  const intervalMs = positiveInteger("DEMO_INTERVAL_MS", "250");
  let natsUrl = Deno.env.get("NATS_URL")?.trim();
  if (!natsUrl) {
    const nats = started.use(await NatsServer.start());
    natsUrl = nats.url;
    console.log(`nats-server: ${natsUrl} (private, store ${nats.storeDir})`);
  } else {
    console.log(`nats-server: ${redactUrl(natsUrl)} (from NATS_URL)`);
  }
  const gateway = started.use(
    new GatewayChild({
      ...Deno.env.toObject(),
      NATS_URL: natsUrl,
      GATEWAY_HOST: Deno.env.get("GATEWAY_HOST")?.trim() || "127.0.0.1",
      GATEWAY_PORT: Deno.env.get("GATEWAY_PORT")?.trim() || "8000",
    }, await startTaskArgs()),
  );
  const up = await Promise.race([
    gateway.listening.then((addr) => ({ addr }), () => ({ addr: undefined })),
    stop.promise.then(() => ({ addr: undefined })),
  ]);
  if (!up.addr) return await exitCode(stop.promise, gateway.exited);
  const publisher: RunningPublisher = started.use(
    await startPublisher({
      natsUrl,
      intervalMs,
      onProblem: (message, error) =>
        console.error(`publisher: ${message}${error ? `: ${errorMessage(error)}` : ""}`),
    }),
  );
  console.log(`publisher: levels.signals every ${intervalMs} ms`);
  console.log(`viewer: ${viewerUrl(up.addr)}`);
  console.log("Ctrl-C stops everything");
  const code = await exitCode(stop.promise, gateway.exited);
  console.log(`stopping (published ${publisher.published} snapshots)`);
  return code;
}

/** 0 after a stop signal; the gateway's code when it exited first (1 if that was 0: unexpected). */
async function exitCode(stopped: Promise<Deno.Signal>, exited: Promise<number>): Promise<number> {
  const outcome = await Promise.race([
    stopped.then(() => ({ gatewayCode: undefined })),
    exited.then((gatewayCode) => ({ gatewayCode })),
  ]);
  if (outcome.gatewayCode === undefined) return 0;
  console.error(`the gateway exited with code ${outcome.gatewayCode}; stopping the demo`);
  return outcome.gatewayCode || 1;
}

if (import.meta.main) {
  try {
    Deno.exit(await runDemo());
  } catch (error) {
    console.error(`demo failed: ${errorMessage(error)}`);
    Deno.exit(1);
  }
}
