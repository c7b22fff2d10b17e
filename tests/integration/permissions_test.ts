/**
 * The runtime permissions (lib/config/permissions.ts): derived at launch by `deno task start`, baked in
 * at build time by `deno task compile`, checked up front with advice for the way it was started.
 */
import assert from "node:assert/strict";
import { parseConfig } from "../../lib/config/config.ts";
import { ConfigError } from "../../lib/config/config_error.ts";
import { ENV_VARIABLES } from "../../lib/config/settings.ts";
import { REMOVED_VARIABLES } from "../../lib/config/settings.ts";
import {
  buildScope,
  checkPermissions,
  launchScope,
  permissionFlags,
  PermissionScopeError,
} from "../../lib/config/permissions.ts";
import { compileArgs } from "../../scripts/compile.ts";
import { NatsServer } from "../../tools/nats_server.ts";
import { Client, health, Publisher, signal } from "../helpers/fixtures.ts";
import { GatewayProcess, LISTENING_LINE, startTaskArgs } from "../../tools/gateway_process.ts";

const root = new URL("../..", import.meta.url).pathname;
const LIB = "/srv/gateway/lib";

function flagValue(flags: readonly string[], name: string): string[] {
  const flag = flags.find((f) => f.startsWith(`--allow-${name}=`));
  assert.ok(flag, `--allow-${name}= in ${flags.join(" ")}`);
  return flag.slice(`--allow-${name}=`.length).split(",");
}

function assertAllJson(gateway: GatewayProcess): void {
  for (const line of [...gateway.lines, ...gateway.stderr]) {
    assert.doesNotThrow(() => JSON.parse(line), `not a JSON line: ${line}`);
  }
}

Deno.test("start task: runs the launcher, no permission set left in deno.json", async () => {
  const config = JSON.parse(await Deno.readTextFile(`${root}deno.json`));
  assert.equal(config.permissions, undefined, "no -P set: Deno warns about them in plain text");
  assert.deepEqual(await startTaskArgs(), [
    "run",
    "--quiet",
    "--no-prompt",
    "--allow-env",
    "--allow-read",
    "--allow-run=deno,sh",
    "scripts/start.ts",
  ]);
});

Deno.test("launchScope: exactly the configured hosts, listen address and files", () => {
  const config = parseConfig({
    NATS_URL:
      "nats://gw:s3cret-pass@nats-a.internal:4333,tls://10.0.0.7,nats://tok3n@[fd00::7]:4999",
    GATEWAY_HOST: "10.1.2.3",
    GATEWAY_PORT: "9000",
    NATS_CREDS: "/run/secrets/gw.creds",
    NATS_CA: "/etc/ssl/nats-ca.pem",
    NATS_CERT: "certs/client.pem",
    NATS_KEY: "certs/client.key",
    NATS_NKEY: "/run/secrets/gw.nk",
  });
  const flags = permissionFlags(launchScope(config, { envFile: "/etc/gw.env", libDir: LIB }));
  assert.equal(flags.length, 3);
  assert.deepEqual(flagValue(flags, "net"), [
    "nats-a.internal:4333",
    "10.0.0.7:4222",
    "[fd00::7]:4999",
    "10.1.2.3:9000",
  ]);
  assert.deepEqual(flagValue(flags, "read"), [
    "/etc/gw.env",
    LIB,
    "/run/secrets/gw.creds",
    "/run/secrets/gw.nk",
    "/etc/ssl/nats-ca.pem",
    "certs/client.pem",
    "certs/client.key",
  ]);
  // The removed names too, so that one still set is refused with its replacement.
  assert.deepEqual(flagValue(flags, "env"), [...ENV_VARIABLES, ...Object.keys(REMOVED_VARIABLES)]);
  const joined = flags.join(" ");
  for (const secret of ["s3cret-pass", "tok3n", "gw@"]) assert.ok(!joined.includes(secret), secret);
});

Deno.test("launchScope: defaults, IPv6 listen, health check, no duplicates", () => {
  const defaults = launchScope(parseConfig({}), { envFile: ".env", libDir: LIB });
  assert.deepEqual(defaults.net, ["localhost:4222", "0.0.0.0:8000"]);
  assert.deepEqual(defaults.read, [".env", LIB]);
  const v6 = launchScope(
    parseConfig({
      NATS_URL: "nats://[::1]:4222,[::1]:4222",
      GATEWAY_HOST: "::",
      GATEWAY_PORT: "0",
    }),
    { envFile: ".env", libDir: LIB, healthCheck: true },
  );
  assert.deepEqual(v6.net, ["[::1]:4222", "[::]", "127.0.0.1:0"], "port 0: any port");
});

Deno.test("launchScope: a file path with a comma is a configuration error", () => {
  const config = parseConfig({ NATS_CREDS: "/tmp/a,b.creds" });
  assert.throws(
    () => launchScope(config, { envFile: ".env", libDir: LIB }),
    (err) =>
      err instanceof ConfigError &&
      /NATS_CREDS must be a path without commas .*current value is "\/tmp\/a,b\.creds"/.test(
        err.message,
      ),
  );
});

Deno.test("compile: the binary scope, widened only by the build-time lists", async () => {
  const plain = await compileArgs({});
  for (const flag of permissionFlags(buildScope())) assert.ok(plain.includes(flag), flag);
  assert.deepEqual(flagValue(plain, "net"), [
    "localhost",
    "127.0.0.1",
    "[::1]",
    "0.0.0.0",
    "[::]",
  ]);
  assert.deepEqual(flagValue(plain, "read"), [".env", "/etc/gateway", "lib"]);
  assert.deepEqual(flagValue(plain, "env"), [...ENV_VARIABLES, ...Object.keys(REMOVED_VARIABLES)]);
  assert.ok(plain.includes("--unstable-net"), "SO_REUSEPORT for GATEWAY_WORKERS");
  assert.ok(plain.includes("--exclude-unused-npm"), "no test-only npm packages in the binary");
  assert.equal(plain[plain.indexOf("--include") + 1], "lib/cluster/worker.ts");
  assert.ok(!plain.some((a) => a === "-A" || a === "--allow-all" || a.startsWith("--allow-run")));
  const widened = await compileArgs({
    GATEWAY_NATS_HOSTS: "nats-1.internal,10.0.0.7",
    GATEWAY_LISTEN_HOSTS: "10.0.0.5",
    GATEWAY_READ_PATHS: "/run/secrets/gw.creds",
  });
  assert.deepEqual(flagValue(widened, "net").slice(5), ["nats-1.internal", "10.0.0.7", "10.0.0.5"]);
  assert.deepEqual(flagValue(widened, "read").slice(3), ["/run/secrets/gw.creds"]);
  await assert.rejects(
    () => compileArgs({ GATEWAY_NATS_HOSTS: "nats:4222" }),
    /GATEWAY_NATS_HOSTS must be a comma-separated list of host names or IPs without ports: current value is "nats:4222"/,
  );
});

/** Deno.permissions.query as a binary built with `scope` would answer it. */
function fakeQuery(granted: (d: Deno.PermissionDescriptor) => boolean) {
  return (d: Deno.PermissionDescriptor) =>
    Promise.resolve({ state: granted(d) ? "granted" : "denied" } as Deno.PermissionStatus);
}

const onlyLocal = fakeQuery((d) =>
  d.name === "net"
    ? /^(localhost|127\.0\.0\.1|0\.0\.0\.0):\d+$/.test(d.host ?? "")
    : d.name === "read" && String(d.path).startsWith("/etc/gateway/")
);

Deno.test("checkPermissions: a binary refuses a host outside its build with how to rebuild", async () => {
  const config = parseConfig({ NATS_URL: "nats://u:pw@nats.example.invalid:4222,localhost" });
  await assert.rejects(
    () => checkPermissions(config, { query: onlyLocal, standalone: true }),
    (err) => {
      assert.ok(err instanceof PermissionScopeError);
      assert.equal(
        err.message,
        `NATS_URL names nats.example.invalid:4222, which this build may not reach. Rebuild with the host allowed, e.g. GATEWAY_NATS_HOSTS=nats.example.invalid deno task compile (docs/deploying.md "Permissions").`,
      );
      return true;
    },
  );
  await assert.rejects(
    () =>
      checkPermissions(parseConfig({ GATEWAY_HOST: "10.0.0.5" }), {
        query: onlyLocal,
        standalone: true,
      }),
    /GATEWAY_HOST\/GATEWAY_PORT 10\.0\.0\.5:8000 .*GATEWAY_LISTEN_HOSTS=10\.0\.0\.5 deno task compile/,
  );
  await assert.rejects(
    () =>
      checkPermissions(parseConfig({ NATS_CREDS: "/home/op/gw.creds" }), {
        query: onlyLocal,
        standalone: true,
      }),
    /NATS_CREDS names \/home\/op\/gw\.creds, which this build may not read\. Put the file under \/etc\/gateway\/, or rebuild with GATEWAY_READ_PATHS=\/home\/op\/gw\.creds deno task compile/,
  );
  await checkPermissions(parseConfig({ NATS_CREDS: "/etc/gateway/gw.creds" }), {
    query: onlyLocal,
    standalone: true,
  });
});

Deno.test("checkPermissions: under deno run, the refusal points at deno task start", async () => {
  await assert.rejects(
    () =>
      checkPermissions(parseConfig({ NATS_URL: "nats://nats-b:4222" }), {
        query: onlyLocal,
        standalone: false,
      }),
    (err) => {
      assert.ok(err instanceof PermissionScopeError);
      assert.match(err.message, /NATS_URL names nats-b:4222, which this process may not reach/);
      assert.match(err.message, /`deno task start`/);
      assert.doesNotMatch(err.message, /compile/);
      return true;
    },
  );
});

Deno.test("deno run main.ts with narrower flags: exit 2 (a configuration error), the start path's advice, JSON only", async () => {
  const args = [
    "run",
    "--quiet",
    "--no-prompt",
    "--allow-env",
    "--allow-read",
    "--allow-net=127.0.0.1:0",
    "main.ts",
  ];
  await using gateway = await GatewayProcess.spawn({ NATS_URL: "nats://127.0.0.2:4222" }, args);
  assert.equal((await gateway.status).code, 2);
  assert.match(gateway.output, /NATS_URL names 127\.0\.0\.2:4222, which this process may not/);
  assert.match(gateway.output, /deno task start/);
  assert.doesNotMatch(gateway.output, /^\s+at /m, "no stack trace");
  assertAllJson(gateway);
});

/** A private nats-server on 127.0.0.2, outside what the old fixed permission set allowed. */
async function natsOn127002(): Promise<NatsServer> {
  return await NatsServer.start({ args: ["-a", "127.0.0.2"] });
}

Deno.test("deno task start: relays from NATS on 127.0.0.2 with flags derived for it", async () => {
  await using nats = await natsOn127002();
  const natsUrl = `nats://127.0.0.2:${nats.port}`;
  await using gateway = await GatewayProcess.spawn({ NATS_URL: natsUrl });
  const addr = await gateway.listening;
  await using publisher = await Publisher.connect(natsUrl);
  await using client = await Client.open(addr);
  await publisher.publish(signal(1));
  assert.deepEqual(await client.waitFor(1), [signal(1)]);

  const pid = await gateway.gatewayPid();
  const argv = (await Deno.readTextFile(`/proc/${pid}/cmdline`)).split("\0");
  assert.ok(argv.includes(`${root}main.ts`), argv.join(" "));
  assert.deepEqual(flagValue(argv, "net"), [`127.0.0.2:${nats.port}`, "127.0.0.1"]);
  assert.deepEqual(flagValue(argv, "read"), [".env", `${root}lib`]);
  assert.ok(!argv.some((a) => /^--allow-(all|run|write|sys|ffi)|^-A$/.test(a)), argv.join(" "));
  gateway.kill("SIGTERM");
  assert.equal((await gateway.status).code, 0);
  assertAllJson(gateway);
});

Deno.test("deno task start: SIGTERM reaches the gateway, which closes clients and exits 0", async () => {
  await using nats = await natsOn127002();
  await using gateway = await GatewayProcess.spawn({ NATS_URL: `nats://127.0.0.2:${nats.port}` });
  await using client = await Client.open(await gateway.listening);
  gateway.kill("SIGTERM");
  assert.equal((await client.closed).code, 1001);
  const status = await gateway.status;
  assert.equal(status.code, 0, gateway.output);
  assert.match(gateway.output, /"msg":"signal received","signal":"SIGTERM"/);
  assertAllJson(gateway);
});

Deno.test("deno task start: SIGINT and SIGHUP pass through too", async () => {
  await using nats = await natsOn127002();
  for (const sig of ["SIGINT", "SIGHUP"] as const) {
    await using gateway = await GatewayProcess.spawn({
      NATS_URL: `nats://127.0.0.2:${nats.port}`,
    });
    // main.ts listens for signals once started: a health answer says it is.
    assert.equal((await health(await gateway.listening)).status, 200);
    gateway.kill(sig);
    assert.equal((await gateway.status).code, 0, gateway.output);
    assert.match(gateway.output, new RegExp(`"msg":"signal received","signal":"${sig}"`));
  }
});

Deno.test("deno task start: exit codes pass through, one JSON line for bad config", async () => {
  await using bad = await GatewayProcess.spawn({ GATEWAY_PORT: "eighty" });
  assert.equal((await bad.status).code, 2);
  assert.equal(bad.lines.length + bad.stderr.length, 1, bad.output);
  assert.match(bad.output, /"msg":"invalid configuration".*Cannot parse GATEWAY_PORT/);
  assertAllJson(bad);

  const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (closed.addr as Deno.NetAddr).port;
  closed.close();
  await using unreachable = await GatewayProcess.spawn({
    NATS_URL: `nats://127.0.0.1:${port}`,
    GATEWAY_NATS_CONNECT_TIMEOUT_MS: "300",
  });
  assert.equal((await unreachable.status).code, 1, unreachable.output);
  assertAllJson(unreachable);
});

const denort = Deno.env.get("DENORT_BIN");
Deno.test({
  name: "compile: the binary starts two workers, reports health and relays a message",
  ignore: !denort,
  async fn() {
    await using nats = await NatsServer.start();
    const dir = await Deno.makeTempDir();
    const output = `${dir}/gateway`;
    const compile = await new Deno.Command(Deno.execPath(), {
      args: ["task", "compile"],
      cwd: root,
      env: { GATEWAY_COMPILE_OUTPUT: output },
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(compile.success, new TextDecoder().decode(compile.stderr));
    const binary = new Deno.Command(output, {
      env: {
        NATS_URL: nats.url,
        GATEWAY_HOST: "127.0.0.1",
        GATEWAY_PORT: "0",
        GATEWAY_WORKERS: "2",
      },
      clearEnv: true,
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const reader = binary.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    let match: RegExpExecArray | null = null;
    while (!match) {
      const { value, done } = await reader.read();
      if (done) break;
      text += value;
      match = LISTENING_LINE.exec(text);
    }
    assert.ok(match, text);
    const addr: Deno.NetAddr = { transport: "tcp", hostname: "127.0.0.1", port: Number(match[2]) };
    const health = await (await fetch(`http://127.0.0.1:${addr.port}/health`)).json();
    assert.equal(health.status, "healthy");
    assert.equal(health.workers.length, 2);
    await using publisher = await Publisher.connect(nats.url);
    await using client = await Client.open(addr);
    await publisher.publish(signal(1));
    assert.deepEqual(await client.waitFor(1), [signal(1)]);
    binary.kill("SIGTERM");
    assert.equal((await binary.status).code, 0);
    await reader.cancel();
    await binary.stderr.cancel();
    await Deno.remove(dir, { recursive: true });
  },
});
if (!denort) {
  console.log(
    "compile smoke test skipped: DENORT_BIN is not set, and deno compile cannot download its runtime base binary (denort) here; set DENORT_BIN=/path/to/denort to run it",
  );
}
