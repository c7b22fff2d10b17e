/**
 * The compiled load client (tools/load_client.c): N WebSocket connections on one epoll loop, so
 * the clients are not the bottleneck when a relay delivers 100k+ frames/s. Shared by
 * `deno task bench` and the load tests that need many reading clients.
 */

export interface CStats {
  received: number;
  /** Payload bytes of every data frame, as received. */
  bytes: number;
  /** Binary (compressed) frames among them. */
  binary: number;
  gaps: number;
  outOfOrder: number;
  open: number;
  closed: number;
  latency: { count: number; p50: number; p99: number; p999: number; max: number };
  /** First frame after the 101. */
  snapshot: { count: number; p50: number; p99: number };
  /** First frame after the start of the connect. */
  first: { count: number; p50: number; p99: number; max: number };
}

/** One process of tools/load_client.c, optionally pinned to a CPU. */
export class CClient {
  readonly child: Deno.ChildProcess;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #lines: ReadableStreamDefaultReader<string>;
  #buffer = "";

  constructor(binary: string, port: number, n: number, cpu?: number, path = "/ws/stream") {
    const args = [binary, String(port), String(n), path];
    const command = cpu === undefined ? args : ["taskset", "-c", String(cpu), ...args];
    this.child = new Deno.Command(command[0], {
      args: command.slice(1),
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    this.#writer = this.child.stdin.getWriter();
    this.#lines = this.child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  }

  async #line(): Promise<string> {
    while (!this.#buffer.includes("\n")) {
      const { value, done } = await this.#lines.read();
      if (done) throw new Error("load client exited");
      this.#buffer += value;
    }
    const index = this.#buffer.indexOf("\n");
    const line = this.#buffer.slice(0, index);
    this.#buffer = this.#buffer.slice(index + 1);
    return line;
  }

  async ready(): Promise<void> {
    await this.#line();
  }

  /** Counters since the previous call (latencies too); snapshot times are per connection. */
  async stats(): Promise<CStats> {
    await this.#writer.write(new TextEncoder().encode("stats\n"));
    return JSON.parse(await this.#line());
  }

  /** Frames received since the last stats(), without resetting (latencies keep accumulating). */
  async count(): Promise<number> {
    await this.#writer.write(new TextEncoder().encode("count\n"));
    return JSON.parse(await this.#line()).received;
  }

  async quit(): Promise<void> {
    await this.#writer.write(new TextEncoder().encode("quit\n")).catch(() => {});
    await this.#writer.close().catch(() => {});
    await this.#lines.cancel().catch(() => {});
    await this.child.status;
  }
}

/**
 * Compiles tools/load_client.c to `output` with the C compiler (`cc`): with zlib where its headers
 * are installed (compressed frames are then timed too), else without.
 */
export async function buildLoadClient(output: string): Promise<{ path: string; zlib: boolean }> {
  const source = new URL("./load_client.c", import.meta.url).pathname;
  const build = (args: string[]) =>
    new Deno.Command("cc", { args: ["-O2", "-o", output, source, ...args], stderr: "null" })
      .spawn().status.then((status) => status.success, () => false);
  if (await build(["-lz"])) return { path: output, zlib: true };
  if (await build(["-DNO_ZLIB"])) return { path: output, zlib: false };
  throw new Error("cannot compile tools/load_client.c (needs cc)");
}
