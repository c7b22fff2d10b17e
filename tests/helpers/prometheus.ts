/**
 * Debian's `promtool` and `prometheus` for tests: found on PATH (or $PROMTOOL_BIN /
 * $PROMETHEUS_BIN), and a private Prometheus on a free loopback port with a temp store,
 * scraping the targets given, queried through its HTTP API.
 */
import { freePort } from "./nginx.ts";

async function runs(bin: string, args: string[]): Promise<boolean> {
  try {
    const { success } = await new Deno.Command(bin, { args, stdout: "null", stderr: "null" })
      .output();
    return success;
  } catch {
    return false;
  }
}

/** The binary named by `variable`, else `name` on PATH; undefined (with the reason) when none runs. */
export async function findBinary(
  name: "promtool" | "prometheus",
  variable: string,
): Promise<{ bin?: string; reason: string }> {
  const bin = Deno.env.get(variable) || name;
  if (await runs(bin, ["--version"])) return { bin, reason: "" };
  return {
    reason: `${bin} not found or does not run (apt-get install -y prometheus, or set ${variable})`,
  };
}

export interface PrometheusOptions {
  readonly bin: string;
  /** host:port targets of the job "gateway", scraped at /metrics. */
  readonly targets: readonly string[];
  /** Absolute paths of rule files to load. */
  readonly ruleFiles: readonly string[];
  /** Scrape and rule evaluation interval. */
  readonly intervalSeconds?: number;
}

/** A sample of an instant vector: its labels and value as Prometheus' API gives them. */
export interface Sample {
  readonly metric: Record<string, string>;
  readonly value: [number, string];
}

export class PrometheusProcess implements AsyncDisposable {
  readonly #stderr: string[] = [];
  readonly #done: Promise<unknown>;

  private constructor(
    readonly child: Deno.ChildProcess,
    readonly dir: string,
    readonly url: string,
  ) {
    this.#done = (async () => {
      for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
        this.#stderr.push(chunk);
      }
    })();
  }

  /** What Prometheus logged, for failure messages. */
  get log(): string {
    return this.#stderr.join("").split("\n").slice(-30).join("\n");
  }

  static async start(options: PrometheusOptions): Promise<PrometheusProcess> {
    const dir = await Deno.makeTempDir({ prefix: "gateway-prometheus-" });
    const interval = `${options.intervalSeconds ?? 1}s`;
    // JSON is YAML: no YAML writer needed for the config.
    const config = {
      global: { scrape_interval: interval, evaluation_interval: interval },
      rule_files: options.ruleFiles,
      scrape_configs: [{
        job_name: "gateway",
        metrics_path: "/metrics",
        static_configs: [{ targets: options.targets }],
      }],
    };
    await Deno.writeTextFile(`${dir}/prometheus.yml`, JSON.stringify(config, null, 2));
    const port = freePort();
    const child = new Deno.Command(options.bin, {
      args: [
        `--config.file=${dir}/prometheus.yml`,
        `--storage.tsdb.path=${dir}/data`,
        `--web.listen-address=127.0.0.1:${port}`,
      ],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const prometheus = new PrometheusProcess(child, dir, `http://127.0.0.1:${port}`);
    try {
      await prometheus.#waitReady(30_000);
    } catch (err) {
      await prometheus[Symbol.asyncDispose]();
      throw err;
    }
    return prometheus;
  }

  /** Polls /-/ready (Prometheus has no readiness event to wait on), bounded. */
  async #waitReady(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let exited = false;
    this.child.status.then(() => exited = true);
    while (Date.now() < deadline && !exited) {
      const ready = await fetch(`${this.url}/-/ready`).then((r) => {
        r.body?.cancel();
        return r.ok;
      }, () => false);
      if (ready) return;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    throw new Error(`prometheus not ready (${exited ? "exited" : "timed out"}):\n${this.log}`);
  }

  /** GET /api/v1/<path>: the `data` of a successful answer. */
  async api(path: string, params: Record<string, string> = {}): Promise<unknown> {
    const response = await fetch(`${this.url}/api/v1/${path}?${new URLSearchParams(params)}`);
    const body = await response.json();
    if (body.status !== "success") throw new Error(`${path}: ${JSON.stringify(body)}`);
    return body.data;
  }

  /** An instant query's samples. */
  async query(expr: string): Promise<Sample[]> {
    const data = await this.api("query", { query: expr }) as { result: Sample[] };
    return data.result;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      this.child.kill("SIGTERM");
    } catch {
      // Already exited.
    }
    await this.child.status;
    await this.#done;
    await Deno.remove(this.dir, { recursive: true });
  }
}
