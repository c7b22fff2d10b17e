/**
 * Runs the shipped deploy/nginx.conf on loopback: the lines marked `# deploy: ...` are rewritten
 * (ports, upstream, paths, certificates, read timeout) and nothing else, so the test exercises
 * the file operators install. nginx is found on PATH, at /usr/sbin/nginx, or at $NGINX_BIN.
 */

const CANDIDATES = ["nginx", "/usr/sbin/nginx"];
const SHIPPED = new URL("../../deploy/nginx.conf", import.meta.url);

async function runs(bin: string): Promise<boolean> {
  try {
    const { success } = await new Deno.Command(bin, {
      args: ["-v"],
      stdout: "null",
      stderr: "null",
    })
      .output();
    return success;
  } catch {
    return false;
  }
}

/** The nginx binary, or undefined (with the reason) when none is installed. */
export async function findNginx(): Promise<{ bin?: string; reason: string }> {
  const explicit = Deno.env.get("NGINX_BIN");
  if (explicit) {
    if (await runs(explicit)) return { bin: explicit, reason: "" };
    return { reason: `NGINX_BIN is set but does not run: current value is "${explicit}"` };
  }
  for (const candidate of CANDIDATES) {
    if (await runs(candidate)) return { bin: candidate, reason: "" };
  }
  return { reason: "nginx not found on PATH or at /usr/sbin/nginx (apt-get install -y nginx)" };
}

/** What a loopback copy of the shipped file needs. */
export interface NginxSettings {
  /** Working directory: pid, logs, temp paths, the generated config. */
  readonly dir: string;
  readonly upstream: Deno.NetAddr;
  readonly publicPort: number;
  readonly tlsPort: number;
  readonly adminPort: number;
  /** proxy_read_timeout in seconds; must stay above 2 × the gateway's GATEWAY_IDLE_TIMEOUT_S. */
  readonly readTimeoutS: number;
  readonly certFile: string;
  readonly keyFile: string;
}

type Rewrite = (line: string, s: NginxSettings) => string;

const onlyPort = (port: (s: NginxSettings) => number): Rewrite => (line, s) =>
  line.replace(/listen [^\s;]+/, `listen 127.0.0.1:${port(s)}`);

/** One rewrite per `# deploy:` marker (matched by the marker's first words). */
const REWRITES: [string, Rewrite][] = [
  ["user", () => Deno.uid() === 0 ? "user root;" : "# user: not root, workers keep our uid"],
  ["pid", (_, s) => `pid ${s.dir}/nginx.pid;`],
  ["error_log", (_, s) => `error_log ${s.dir}/error.log info;`],
  ["access_log", (line, s) => line.replace(/access_log \S+/, `access_log ${s.dir}/access.log`)],
  ["temp path", (line, s) => line.replace(/(\w+_temp_path) \/var\/lib\/nginx\//, `$1 ${s.dir}/`)],
  ["upstream", (line, s) => line.replace(/server \S+;/, `server 127.0.0.1:${s.upstream.port};`)],
  ["read timeout", (line, s) => line.replace(/\d+s;/, `${s.readTimeoutS}s;`)],
  ["public listen", onlyPort((s) => s.publicPort)],
  ["tls listen", onlyPort((s) => s.tlsPort)],
  ["admin listen", onlyPort((s) => s.adminPort)],
  ["server_name", (line) => line.replace(/server_name \S+;/, "server_name localhost;")],
  ["certificate key", (line, s) => line.replace(/\/\S+;/, `${s.keyFile};`)],
  ["certificate", (line, s) => line.replace(/\/\S+;/, `${s.certFile};`)],
];

/** The shipped config with every marked line rewritten; throws if a marker is unknown or unused. */
export function renderConfig(template: string, settings: NginxSettings): string {
  const used = new Set<string>();
  const lines = template.split("\n").map((line) => {
    // A marker ends a directive; comment lines merely mention the convention.
    const marker = /^\s*[^#\s].*# deploy: (.*)$/.exec(line)?.[1];
    if (marker === undefined) return line;
    const rule = REWRITES.find(([name]) => marker.startsWith(name));
    if (!rule) throw new Error(`deploy/nginx.conf: no test rewrite for "# deploy: ${marker}"`);
    used.add(rule[0]);
    const indent = /^\s*/.exec(line)![0];
    return indent + rule[1](line.replace(/\s*# deploy: .*$/, "").trim(), settings);
  });
  const unused = REWRITES.map(([name]) => name).filter((name) => !used.has(name));
  if (unused.length) throw new Error(`deploy/nginx.conf lacks markers: ${unused.join(", ")}`);
  return lines.join("\n");
}

/** A free loopback port (closed again at once; the caller binds it right after). */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

export class NginxProcess implements AsyncDisposable {
  private constructor(
    readonly child: Deno.ChildProcess,
    readonly settings: NginxSettings,
    readonly configFile: string,
  ) {}

  /** Writes the rendered config, checks it with `nginx -t`, starts nginx in the foreground. */
  static async start(bin: string, settings: NginxSettings): Promise<NginxProcess> {
    const configFile = `${settings.dir}/nginx.conf`;
    await Deno.writeTextFile(configFile, renderConfig(await Deno.readTextFile(SHIPPED), settings));
    const base = ["-p", settings.dir, "-e", `${settings.dir}/error.log`, "-c", configFile];
    const check = await new Deno.Command(bin, {
      args: [...base, "-t"],
      stdout: "piped",
      stderr: "piped",
    })
      .output();
    if (!check.success) {
      throw new Error(`nginx -t rejected the config:\n${new TextDecoder().decode(check.stderr)}`);
    }
    const child = new Deno.Command(bin, {
      args: [...base, "-g", "daemon off;"],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    const nginx = new NginxProcess(child, settings, configFile);
    await nginx.#untilListening();
    return nginx;
  }

  get publicAddr(): Deno.NetAddr {
    return { transport: "tcp", hostname: "127.0.0.1", port: this.settings.publicPort };
  }

  get tlsAddr(): Deno.NetAddr {
    return { transport: "tcp", hostname: "127.0.0.1", port: this.settings.tlsPort };
  }

  get adminAddr(): Deno.NetAddr {
    return { transport: "tcp", hostname: "127.0.0.1", port: this.settings.adminPort };
  }

  /** nginx's error log, for failure messages and assertions on what it refused. */
  async errorLog(): Promise<string> {
    try {
      return await Deno.readTextFile(`${this.settings.dir}/error.log`);
    } catch {
      return "";
    }
  }

  async #untilListening(): Promise<void> {
    const deadline = Date.now() + 10_000;
    let exited = false;
    this.child.status.then(() => exited = true);
    while (true) {
      try {
        (await Deno.connect({ hostname: "127.0.0.1", port: this.settings.adminPort })).close();
        return;
      } catch {
        if (exited || Date.now() > deadline) {
          throw new Error(`nginx did not start listening:\n${await this.errorLog()}`);
        }
        // Polled: nginx announces readiness on no channel we can await.
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      this.child.kill("SIGTERM"); // fast shutdown: the master waits for its workers
    } catch {
      // already exited
    }
    await this.child.status;
  }
}
