/**
 * Starts a private nats-server with JetStream on a free loopback port and a temp store.
 * Found on PATH, at /usr/sbin/nats-server, or at $NATS_SERVER_BIN.
 */

const CANDIDATES = ["nats-server", "/usr/sbin/nats-server", "/usr/local/bin/nats-server"];

async function runs(bin: string): Promise<boolean> {
  try {
    const { success } = await new Deno.Command(bin, {
      args: ["--version"],
      stdout: "null",
      stderr: "null",
    }).output();
    return success;
  } catch {
    return false;
  }
}

/** The nats-server binary to use; throws a clear error when none is installed. */
export async function findNatsServer(): Promise<string> {
  const explicit = Deno.env.get("NATS_SERVER_BIN");
  if (explicit) {
    if (await runs(explicit)) return explicit;
    throw new Error(`NATS_SERVER_BIN is set but does not run: current value is "${explicit}"`);
  }
  for (const candidate of CANDIDATES) {
    if (await runs(candidate)) return candidate;
  }
  throw new Error(
    "nats-server not found on PATH or at /usr/sbin/nats-server; install it (apt-get install nats-server) or set NATS_SERVER_BIN",
  );
}

export interface NatsServerOptions {
  /** nats-server config file text (e.g. authorization, tls, operator); written into the store dir. */
  readonly config?: string;
  /** Extra command-line arguments, after the defaults (which they may override). */
  readonly args?: readonly string[];
}

export class NatsServer implements AsyncDisposable {
  #child: Deno.ChildProcess | undefined;
  #log: string[] = [];
  private constructor(
    readonly bin: string,
    readonly storeDir: string,
    public port: number,
    readonly options: NatsServerOptions = {},
  ) {}

  /** `nats://127.0.0.1:PORT` */
  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  get running(): boolean {
    return this.#child !== undefined;
  }

  /** Recent server log lines, for failure messages. */
  get log(): string {
    return this.#log.slice(-50).join("\n");
  }

  /** With no options: a bare server with JetStream, no auth, no TLS. */
  static async start(options: NatsServerOptions = {}): Promise<NatsServer> {
    const bin = await findNatsServer();
    const storeDir = await Deno.makeTempDir({ prefix: "gateway-nats-" });
    const server = new NatsServer(bin, storeDir, -1, options);
    try {
      await server.restart();
    } catch (err) {
      await Deno.remove(storeDir, { recursive: true }).catch(() => {});
      throw err;
    }
    return server;
  }

  /** The command line: config file first, so the port and store given here win. */
  async #args(): Promise<string[]> {
    const args: string[] = [];
    if (this.options.config !== undefined) {
      const path = `${this.storeDir}/nats-server.conf`;
      await Deno.writeTextFile(path, this.options.config);
      args.push("-c", path);
    }
    args.push("-a", "127.0.0.1", "-p", String(this.port), "-js", "-sd", this.storeDir);
    return [...args, ...(this.options.args ?? [])];
  }

  /** Starts the server (again) on the same port and store. */
  async restart(): Promise<void> {
    if (this.#child) throw new Error("nats-server is already running");
    const child = new Deno.Command(this.bin, {
      args: await this.#args(),
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    this.#child = child;
    const lines = child.stderr.pipeThrough(new TextDecoderStream()).pipeThrough(
      new LineSplitter(),
    );
    const reader = lines.getReader();
    const deadline = setTimeout(() => reader.cancel("timeout"), 10_000);
    try {
      while (true) {
        const { value, done } = await reader.read();
        if (done) throw new Error(`nats-server exited before it was ready:\n${this.log}`);
        this.#log.push(value);
        const listening = /Listening for client connections on [^\s]+:(\d+)/.exec(value);
        if (listening) this.port = Number(listening[1]);
        if (value.includes("Server is ready")) break;
      }
    } finally {
      clearTimeout(deadline);
    }
    // Keep draining the log so the server never blocks on a full pipe.
    (async () => {
      try {
        while (true) {
          const { value, done } = await reader.read();
          if (done) break;
          this.#log.push(value);
          if (this.#log.length > 500) this.#log.splice(0, 250);
        }
      } catch {
        // The stream ends with the process.
      }
    })();
  }

  /** Kills the server (SIGKILL: an abrupt outage) and waits for it to exit. */
  async kill(signal: Deno.Signal = "SIGKILL"): Promise<void> {
    const child = this.#child;
    if (!child) return;
    this.#child = undefined;
    try {
      child.kill(signal);
    } catch {
      // Already gone.
    }
    await child.status;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.kill("SIGTERM");
    await Deno.remove(this.storeDir, { recursive: true }).catch(() => {});
  }
}

class LineSplitter extends TransformStream<string, string> {
  constructor() {
    let buffer = "";
    super({
      transform(chunk, controller) {
        buffer += chunk;
        const lines = buffer.split("\n");
        buffer = lines.pop()!;
        for (const line of lines) controller.enqueue(line);
      },
      flush(controller) {
        if (buffer) controller.enqueue(buffer);
      },
    });
  }
}
