/**
 * Runs the gateway as `deno task start` does: the start task's command line from deno.json, i.e.
 * the launcher (scripts/start.ts), which derives the permissions and runs main.ts with them.
 */

/** The args of the `start` task after `deno`, e.g. ["run", …, "scripts/start.ts"]. */
export async function startTaskArgs(): Promise<string[]> {
  const config = JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url)));
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
    // Resolves once everything printed is collected, so `output` is complete when it does.
    this.status = Promise.all([child.status, done]).then(([status]) => status);
  }

  /** Everything the process printed, both streams. */
  get output(): string {
    return [...this.lines, ...this.stderr].join("\n");
  }

  /**
   * `args`: the deno arguments, by default the start task's; `env` is all the environment it
   * gets besides PATH (the launcher runs `deno` from PATH) and the defaults below.
   */
  static async spawn(
    env: Record<string, string>,
    args?: string[],
    options: { readonly fdLimit?: number } = {},
  ): Promise<GatewayProcess> {
    const denoArgs = args ?? await startTaskArgs();
    // Under `ulimit -n`: a shell lowers the limit, then becomes deno (exec keeps the pid).
    const [command, commandArgs] = options.fdLimit === undefined
      ? [Deno.execPath(), denoArgs]
      : ["sh", [
        "-c",
        `ulimit -n ${options.fdLimit} && exec "$0" "$@"`,
        Deno.execPath(),
        ...denoArgs,
      ]];
    const child = new Deno.Command(command, {
      args: commandArgs,
      cwd: new URL("..", import.meta.url).pathname,
      env: {
        PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
        GATEWAY_HOST: "127.0.0.1",
        GATEWAY_PORT: "0",
        NO_COLOR: "1",
        ...env,
      },
      clearEnv: true,
      // Its own process group, so disposing kills the launcher's child (main.ts) with it.
      detached: true,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    return new GatewayProcess(child);
  }

  /** Signals the spawned process: the launcher, which forwards SIGINT/SIGTERM/SIGHUP. */
  kill(signal: Deno.Signal = "SIGTERM"): void {
    try {
      this.child.kill(signal);
    } catch {
      // Already exited.
    }
  }

  /**
   * The pid of the process running main.ts: the launcher's child under the start task (for
   * RSS and the like); the spawned process itself when `args` ran main.ts directly.
   */
  async gatewayPid(): Promise<number> {
    await this.listening;
    const tasks = `/proc/${this.child.pid}/task`;
    const children: number[] = [];
    for await (const task of Deno.readDir(tasks)) {
      const text = await Deno.readTextFile(`${tasks}/${task.name}/children`).catch(() => "");
      children.push(...text.trim().split(/\s+/).filter((pid) => pid !== "").map(Number));
    }
    if (children.length > 1) throw new Error(`more than one child: ${children.join(", ")}`);
    return children[0] ?? this.child.pid;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      Deno.kill(-this.child.pid, "SIGKILL");
    } catch {
      // The group is gone already.
    }
    await this.status;
  }
}
