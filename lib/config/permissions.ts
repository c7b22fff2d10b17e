/**
 * The gateway's runtime permissions: the one module that defines them for both ways it runs.
 *
 * - `deno task start` (scripts/start.ts) derives them at launch from the configuration
 *   (launchScope): the NATS servers and the listen address it names, the files it names, the
 *   variables the gateway reads. Nothing else, so pointing it at another NATS needs no edit.
 * - `deno task compile` (scripts/compile.ts) bakes them in at build time (buildScope): this
 *   machine and any address to listen on, plus GATEWAY_NATS_HOSTS / GATEWAY_LISTEN_HOSTS, and
 *   files under /etc/gateway plus GATEWAY_READ_PATHS. A binary cannot widen itself at launch.
 *
 * checkPermissions runs before the gateway connects, so a configuration outside the scope fails
 * with one line that says what to do for the way the process was started.
 */
import { type Config } from "./config.ts";
import { ConfigError } from "./config_error.ts";
import { ENV_VARIABLES, REMOVED_VARIABLES, type Setting, SETTINGS } from "./settings.ts";

/**
 * The variables a process may look up: those it reads, and the removed ones, so that one still
 * set is found (and refused with its replacement) under a scoped --allow-env too.
 */
const ENV_NAMES = [...ENV_VARIABLES, ...Object.keys(REMOVED_VARIABLES)];

/** What a process may reach, read and look up; each list becomes one `--allow-*` flag. */
export interface PermissionScope {
  /** `host` (any port) or `host:port`; IPv6 hosts in brackets. */
  readonly net: readonly string[];
  readonly env: readonly string[];
  /** Files or directories, absolute or relative to the working directory. */
  readonly read: readonly string[];
}

/** Raised when the configuration names a host, address or file outside the process's scope. */
export class PermissionScopeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "PermissionScopeError";
  }
}

/** Hosts every binary may reach: this machine. */
const LOCAL_HOSTS = ["localhost", "127.0.0.1", "[::1]"];
/** Addresses every binary may listen on besides the local hosts: all interfaces. */
const ANY_ADDRESSES = ["0.0.0.0", "[::]"];
/**
 * What every binary may read: the default env file, /etc/gateway (env file, NATS credentials and
 * certificates), and `lib`, kept from the start path's rules although a binary loads its embedded
 * worker modules without a read check.
 */
const BINARY_READ = [".env", "/etc/gateway", "lib"];

/** The files a configuration names (`file` settings of lib/config/settings.ts), by variable; unset ones are left out. */
export function configuredFiles(config: Config): { name: string; path: string }[] {
  return ENV_VARIABLES
    .filter((name) => (SETTINGS[name] as Setting<unknown>).file)
    .map((name) => ({ name, path: String(config.settings[name]) }))
    .filter(({ path }) => path !== "");
}

/** `host:port` of one `natsServers` entry (`nats://h:p`, `tls://h:p`, `h:p`, `h`). */
export function natsAddress(server: string): string {
  const url = new URL(server.includes("://") ? server : `nats://${server}`);
  return `${url.hostname}:${url.port || "4222"}`;
}

/** `host:port` for a listen address; IPv6 hosts in brackets, as Deno's permissions write them. */
export function listenAddress(host: string, port: number): string {
  return `${host.includes(":") && !host.startsWith("[") ? `[${host}]` : host}:${port}`;
}

export interface LaunchOptions {
  /** The env file main.ts reads: GATEWAY_ENV_FILE, else `.env`. */
  readonly envFile: string;
  /** Directory of the worker modules (`lib/`): `deno run` checks a worker's graph against read. */
  readonly libDir: string;
  /** `--health-check` mode, which asks 127.0.0.1:port instead of listening. */
  readonly healthCheck?: boolean;
}

/** The address a probe asks for a listener on `host`: loopback when it listens everywhere. */
function loopbackFor(host: string): string {
  return ["0.0.0.0", "::", "[::]"].includes(host) ? "127.0.0.1" : host;
}

/** What `deno task start` grants: exactly what this configuration names, ports included. */
export function launchScope(config: Config, options: LaunchOptions): PermissionScope {
  // Port 0 asks for any free port, and with GATEWAY_WORKERS the port picked first is bound
  // again by each worker: the host is all that can be granted ahead.
  const listen = listenAddress(config.host, config.port);
  const admin = config.adminPort >= 0 ? listenAddress(config.adminHost, config.adminPort) : "";
  // /health lives on the admin port when there is one; /livez on both.
  const probed = config.adminPort > 0
    ? listenAddress(loopbackFor(config.adminHost), config.adminPort)
    : listenAddress("127.0.0.1", config.port);
  const net = [
    ...config.natsServers.map(natsAddress),
    config.port === 0 ? withoutPort(listen) : listen,
    ...(admin === "" ? [] : [config.adminPort === 0 ? withoutPort(admin) : admin]),
    ...(options.healthCheck ? [listenAddress(loopbackFor(config.host), config.port), probed] : []),
  ];
  const read = [options.envFile, options.libDir];
  for (const { name, path } of configuredFiles(config)) {
    // Deno splits permission lists on commas, so such a path could not be granted exactly.
    if (path.includes(",")) {
      throw new ConfigError(
        `${name} must be a path without commas (Deno's --allow-read cannot name it): current value is "${path}"`,
      );
    }
    read.push(path);
  }
  return { net: unique(net), env: ENV_NAMES, read: unique(read) };
}

export interface BuildWidening {
  /** NATS hosts the binary may reach (names or IPs, any port). */
  readonly natsHosts?: readonly string[];
  /** Addresses the binary may listen on. */
  readonly listenHosts?: readonly string[];
  /** Files or directories the binary may read besides .env and /etc/gateway. */
  readonly readPaths?: readonly string[];
}

/** What `deno task compile` bakes in: hosts without ports, since a build cannot know them. */
export function buildScope(widening: BuildWidening = {}): PermissionScope {
  return {
    net: unique([
      ...LOCAL_HOSTS,
      ...ANY_ADDRESSES,
      ...(widening.natsHosts ?? []),
      ...(widening.listenHosts ?? []),
    ]),
    env: ENV_NAMES,
    read: unique([...BINARY_READ, ...(widening.readPaths ?? [])]),
  };
}

/** The scope as `deno run` / `deno compile` flags. */
export function permissionFlags(scope: PermissionScope): string[] {
  return [
    `--allow-net=${scope.net.join(",")}`,
    `--allow-env=${scope.env.join(",")}`,
    `--allow-read=${scope.read.join(",")}`,
  ];
}

type PermissionQuery = (descriptor: Deno.PermissionDescriptor) => Promise<Deno.PermissionStatus>;

export interface CheckOptions {
  /** Deno.permissions.query, or a fake in tests. */
  readonly query?: PermissionQuery;
  /** Whether this is a compiled binary (Deno.build.standalone): decides what the error advises. */
  readonly standalone?: boolean;
}

/**
 * Checks that this process may reach every NATS server, bind its listen address and read every
 * file the configuration names; throws PermissionScopeError with what to do otherwise.
 */
export async function checkPermissions(config: Config, options: CheckOptions = {}): Promise<void> {
  const query = options.query ?? ((d) => Deno.permissions.query(d));
  const advice = (options.standalone ?? Deno.build.standalone) ? BINARY_ADVICE : START_ADVICE;
  const granted = async (d: Deno.PermissionDescriptor) => (await query(d)).state === "granted";

  const refusedHosts: string[] = [];
  for (const host of unique(config.natsServers.map(natsAddress))) {
    if (!(await granted({ name: "net", host }))) refusedHosts.push(host);
  }
  if (refusedHosts.length > 0) throw new PermissionScopeError(advice.nats(refusedHosts));
  const listens = [[config.host, config.port] as const];
  if (config.adminPort >= 0) listens.push([config.adminHost, config.adminPort] as const);
  for (const [host, port] of listens) {
    const listen = listenAddress(host, port);
    if (!(await granted({ name: "net", host: listen }))) {
      throw new PermissionScopeError(advice.listen(listen, host));
    }
  }
  for (const { name, path } of configuredFiles(config)) {
    if (!(await granted({ name: "read", path }))) {
      throw new PermissionScopeError(advice.read(name, path));
    }
  }
}

interface Advice {
  nats(hosts: string[]): string;
  listen(address: string, host: string): string;
  read(name: string, path: string): string;
}

/** A binary's scope is fixed when it is built: the fix is a rebuild. */
const BINARY_ADVICE: Advice = {
  nats: (hosts) =>
    `NATS_URL names ${hosts.join(", ")}, which this build may not reach. ` +
    `Rebuild with the host allowed, e.g. GATEWAY_NATS_HOSTS=${
      hosts.map(withoutPort).join(",")
    } deno task compile (docs/deploying.md "Permissions").`,
  listen: (address, host) =>
    `GATEWAY_HOST/GATEWAY_PORT ${address} is outside what this build may listen on. ` +
    `Rebuild with GATEWAY_LISTEN_HOSTS=${host} deno task compile (docs/deploying.md "Permissions").`,
  read: (name, path) =>
    `${name} names ${path}, which this build may not read. Put the file under /etc/gateway/, ` +
    `or rebuild with GATEWAY_READ_PATHS=${path} deno task compile (docs/deploying.md "Permissions").`,
};

/** Under `deno run`, the scope comes from the flags: `deno task start` derives them. */
const START_ADVICE: Advice = {
  nats: (hosts) =>
    `NATS_URL names ${hosts.join(", ")}, which this process may not reach. Start the gateway ` +
    `with \`deno task start\`, which allows what the configuration names, or add the hosts to ` +
    `your own --allow-net (docs/deploying.md "Permissions").`,
  listen: (address) =>
    `GATEWAY_HOST/GATEWAY_PORT ${address} is outside what this process may listen on. Start ` +
    `the gateway with \`deno task start\`, or add ${address} to your own --allow-net ` +
    `(docs/deploying.md "Permissions").`,
  read: (name, path) =>
    `${name} names ${path}, which this process may not read. Start the gateway with ` +
    `\`deno task start\`, or add the path to your own --allow-read (docs/deploying.md "Permissions").`,
};

function withoutPort(address: string): string {
  return address.replace(/:\d+$/, "");
}

function unique(values: readonly string[]): string[] {
  return [...new Set(values)];
}
