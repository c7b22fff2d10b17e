/** Runs the real main.ts as `deno task start` does: same permission flags, read from deno.json. */

/** The args of the `start` task after `deno`, e.g. ["run", "-P=gateway", "main.ts"]. */
export async function startTaskArgs(): Promise<string[]> {
  const config = JSON.parse(await Deno.readTextFile(new URL("../../deno.json", import.meta.url)));
  const [deno, ...args] = (config.tasks.start as string).split(/\s+/);
  if (deno !== "deno") throw new Error(`start task does not run deno: ${config.tasks.start}`);
  return args;
}

/**
 * The line saying the process serves: "gateway listening" with one worker, "workers started"
 * with several (each worker's own "gateway listening" line carries a "worker" field first).
 */
export const LISTENING_LINE =
  /"msg":"(?:gateway listening|workers started)","addr":"([^"]+):(\d+)"/;

export class GatewayProcess implements AsyncDisposable {
  readonly lines: string[] = [];
  readonly stderr: string[] = [];
  readonly status: Promise<Deno.CommandStatus>;
  readonly listening: Promise<Deno.NetAddr>;

  private constructor(readonly child: Deno.ChildProcess) {
    this.status = child.status;
    let resolveAddr: (addr: Deno.NetAddr) => void;
    let rejectAddr: (err: Error) => void;
    this.listening = new Promise((resolve, reject) => {
      resolveAddr = resolve;
      rejectAddr = reject;
    });
    this.listening.catch(() => {});
    const collect = async (stream: ReadableStream<Uint8Array>, into: string[]) => {
      let buffer = "";
      for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
        buffer += chunk;
        const parts = buffer.split("\n");
        buffer = parts.pop()!;
        for (const line of parts) {
          into.push(line);
          const listening = LISTENING_LINE.exec(line);
          if (listening) {
            resolveAddr({ transport: "tcp", hostname: listening[1], port: Number(listening[2]) });
          }
        }
      }
      if (buffer) into.push(buffer);
    };
    const done = Promise.all([
      collect(child.stdout, this.lines),
      collect(child.stderr, this.stderr),
    ]);
    done.then(() => rejectAddr(new Error(`gateway exited before listening:\n${this.output}`)));
  }

  /** Everything the process printed, both streams. */
  get output(): string {
    return [...this.lines, ...this.stderr].join("\n");
  }

  static async spawn(env: Record<string, string>, args?: string[]): Promise<GatewayProcess> {
    const child = new Deno.Command(Deno.execPath(), {
      args: args ?? await startTaskArgs(),
      cwd: new URL("../..", import.meta.url).pathname,
      env: { GATEWAY_HOST: "127.0.0.1", GATEWAY_PORT: "0", NO_COLOR: "1", ...env },
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    return new GatewayProcess(child);
  }

  kill(signal: Deno.Signal = "SIGTERM"): void {
    try {
      this.child.kill(signal);
    } catch {
      // Already exited.
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.kill("SIGKILL");
    await this.status;
  }
}
