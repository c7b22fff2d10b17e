/**
 * The Dockerfile, compose file and systemd unit refer to things that exist and agree with the
 * gateway's own defaults; the health-check modes work.
 */
import assert from "node:assert/strict";
import { parse as parseYaml } from "yaml";
import { parseConfig } from "../../lib/config/config.ts";
import { natsAddress } from "../../lib/config/permissions.ts";
import { NatsServer } from "../../tools/nats_server.ts";
import { GatewayProcess, startTaskArgs } from "../../tools/gateway_process.ts";

const root = new URL("../..", import.meta.url).pathname;

Deno.test("Dockerfile: copies existing paths, runs the compile task, checks health, non-root", async () => {
  const dockerfile = await Deno.readTextFile(`${root}Dockerfile`);
  const config = JSON.parse(await Deno.readTextFile(`${root}deno.json`));
  for (const match of dockerfile.matchAll(/^COPY (?!--from)(.+) \S+$/gm)) {
    for (const source of match[1].split(/\s+/)) {
      await Deno.stat(`${root}${source}`); // throws if the path does not exist
    }
  }
  for (const match of dockerfile.matchAll(/deno task (\w+)/g)) {
    assert.ok(config.tasks[match[1]], `task ${match[1]} is not in deno.json`);
  }
  const output = /GATEWAY_COMPILE_OUTPUT=(\S+)/.exec(dockerfile)?.[1];
  assert.ok(
    output && dockerfile.includes(`COPY --from=build ${output} `),
    "copies what it compiled",
  );
  assert.match(dockerfile, /^FROM denoland\/deno:2\.9\.6 AS build$/m);
  assert.match(dockerfile, /^USER nonroot$/m);
  // Liveness: during a NATS outage the container stays healthy (README "Operating it").
  assert.match(
    dockerfile,
    /^HEALTHCHECK .*\n\s+CMD \["\/usr\/local\/bin\/gateway", "--live-check"\]$/m,
  );
  assert.match(dockerfile, /NATS_URL=nats:\/\/nats:4222/);
  assert.match(dockerfile, /PORT=8000/);
});

Deno.test("systemd unit: dedicated user, hardening, restart on failure, env file", async () => {
  const unit = await Deno.readTextFile(`${root}deploy/gateway.service`);
  for (
    const line of [
      "ExecStart=/usr/local/bin/gateway",
      "DynamicUser=yes",
      "NoNewPrivileges=yes",
      "ProtectSystem=strict",
      "ProtectHome=yes",
      "Restart=on-failure",
      // Exit 2 is bad configuration: restarting cannot fix it, so systemd must not loop.
      "RestartPreventExitStatus=2",
      "EnvironmentFile=-/etc/gateway/gateway.env",
    ]
  ) assert.ok(unit.split("\n").includes(line), line);
  const example = await Deno.readTextFile(`${root}deploy/gateway.env.example`);
  assert.match(example, /^NATS_URL=/m);
});

Deno.test("main: bad configuration exits 2, the code the systemd unit does not restart", async () => {
  await using gateway = await GatewayProcess.spawn({ GATEWAY_PORT: "eighty" });
  assert.equal((await gateway.status).code, 2, gateway.output);
  assert.match(gateway.output, /Cannot parse GATEWAY_PORT as an integer/);
});

Deno.test("main --health-check exits 0 against a healthy gateway, 1 when none answers", async () => {
  await using nats = await NatsServer.start();
  await using gateway = await GatewayProcess.spawn({ NATS_URL: nats.url });
  const addr = await gateway.listening;
  const args = [...await startTaskArgs(), "--health-check"];
  await using healthy = await GatewayProcess.spawn({ GATEWAY_PORT: String(addr.port) }, args);
  assert.equal((await healthy.status).code, 0, healthy.output);
  gateway.kill("SIGTERM");
  await gateway.status;
  await using none = await GatewayProcess.spawn({ GATEWAY_PORT: String(addr.port) }, args);
  assert.equal((await none.status).code, 1);
  assert.match(none.output, /health check failed/);
});

Deno.test("main --live-check exits 0 during a NATS outage, while --health-check exits 1", async () => {
  await using nats = await NatsServer.start();
  await using gateway = await GatewayProcess.spawn({ NATS_URL: nats.url });
  const addr = await gateway.listening;
  const check = async (flag: string) => {
    const args = [...await startTaskArgs(), flag];
    await using probe = await GatewayProcess.spawn({ GATEWAY_PORT: String(addr.port) }, args);
    return { code: (await probe.status).code, output: probe.output };
  };
  assert.equal((await check("--live-check")).code, 0);
  await nats.kill();
  // Wait for the gateway to notice, as Docker's next probe would.
  const healthStatus = async () => {
    const response = await fetch(`http://127.0.0.1:${addr.port}/health`);
    await response.body?.cancel();
    return response.status;
  };
  const deadline = Date.now() + 15_000;
  while (await healthStatus() === 200) {
    assert.ok(Date.now() < deadline, "/health never reported the outage");
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const live = await check("--live-check");
  assert.equal(live.code, 0, live.output);
  assert.match(live.output, /"status":"alive"/);
  const ready = await check("--health-check");
  assert.equal(ready.code, 1, ready.output);
  gateway.kill("SIGTERM");
  assert.equal((await gateway.status).code, 0, gateway.output);
  const none = await check("--live-check");
  assert.equal(none.code, 1);
  assert.match(none.output, /live check failed/);
});

interface ComposeService {
  image?: string;
  build?: { context: string; dockerfile?: string; args?: Record<string, string> };
  command?: string[];
  environment?: Record<string, string>;
  volumes?: string[];
  expose?: string[];
  ports?: string[];
  restart?: string;
  depends_on?: Record<string, { condition: string }>;
  healthcheck?: { test: string[] };
  ulimits?: { nofile: { soft: number; hard: number } };
}

interface ComposeFile {
  services: Record<string, ComposeService>;
  volumes: Record<string, unknown>;
}

const deployDir = `${root}deploy/`;

async function readCompose(): Promise<ComposeFile> {
  return parseYaml(await Deno.readTextFile(`${deployDir}docker-compose.yml`)) as ComposeFile;
}

/** The Dockerfile's runtime `ENV` lines as variables. */
async function dockerfileEnv(): Promise<Record<string, string>> {
  const dockerfile = await Deno.readTextFile(`${root}Dockerfile`);
  const block = /^ENV ((?:.*\\\n)*.*)$/m.exec(dockerfile)?.[1] ?? "";
  const pairs = block.split(/[\s\\]+/).filter((word) => word.includes("="));
  return Object.fromEntries(pairs.map((pair) => pair.split(/=(.*)/s).slice(0, 2)));
}

function resolveFromDeploy(path: string): string {
  return new URL(path, `file://${deployDir}`).pathname.replace(/\/$/, "");
}

Deno.test("compose: JetStream on a named volume, the gateway built from this repo, nginx in front", async () => {
  const { services, volumes } = await readCompose();
  const { nats, gateway, proxy } = services;
  assert.equal(nats.image, "nats:2.10-alpine");
  const natsArgs = nats.command ?? [];
  assert.ok(natsArgs.includes("-js"), "JetStream enabled");
  const store = natsArgs[natsArgs.indexOf("-sd") + 1];
  assert.ok(natsArgs.includes("-sd") && store, "a JetStream store directory");
  const storeVolume = nats.volumes?.find((v) => v.split(":")[1] === store);
  assert.ok(storeVolume && storeVolume.split(":")[0] in volumes, "the store is a named volume");

  assert.ok(gateway.build, "the gateway is built here");
  assert.equal(resolveFromDeploy(gateway.build.context), root.replace(/\/$/, ""));
  await Deno.stat(`${root}${gateway.build.dockerfile ?? "Dockerfile"}`);
  assert.equal(gateway.restart, "unless-stopped");
  assert.ok(gateway.depends_on?.nats, "the gateway waits for NATS");

  assert.equal(proxy.depends_on?.gateway?.condition, "service_healthy");
  const mounts = (proxy.volumes ?? []).map((v) => v.split(":"));
  const config = mounts.find(([source]) => resolveFromDeploy(source) === `${deployDir}nginx.conf`);
  assert.ok(config && config[2] === "ro", "deploy/nginx.conf mounted read-only");
  for (const [source] of mounts) {
    // The certificates are the operator's (README "Deploying with Docker Compose").
    if (source === "./certs") continue;
    await Deno.stat(resolveFromDeploy(source)); // throws if it does not exist
  }
});

Deno.test("compose: the gateway's healthcheck probes liveness, the same command as the Dockerfile's", async () => {
  const { gateway } = (await readCompose()).services;
  const dockerfile = await Deno.readTextFile(`${root}Dockerfile`);
  const command = JSON.parse(
    /^HEALTHCHECK [^\n]*\n\s+CMD (\[.*\])$/m.exec(dockerfile)?.[1] ?? "[]",
  );
  assert.deepEqual(gateway.healthcheck?.test, ["CMD", ...command]);
  assert.deepEqual(command.slice(1), ["--live-check"]);
});

Deno.test("compose: port, NATS address and connection cap agree with the gateway's configuration", async () => {
  const { services } = await readCompose();
  const { nats, gateway, proxy } = services;
  const config = parseConfig({ ...await dockerfileEnv(), ...gateway.environment });
  assert.deepEqual(gateway.expose, [String(config.port)]);
  const dockerfile = await Deno.readTextFile(`${root}Dockerfile`);
  const allowedHosts = (gateway.build?.args?.GATEWAY_NATS_HOSTS ??
    /^ARG GATEWAY_NATS_HOSTS=(\S*)$/m.exec(dockerfile)?.[1] ?? "").split(",");
  for (const server of config.natsServers) {
    const [host, port] = natsAddress(server).split(":");
    assert.ok(host in services, `NATS_URL names ${host}, a service of this file`);
    assert.ok(allowedHosts.includes(host), `the binary is built to reach ${host}`);
    // nats-server's default client port, which the nats service does not change.
    assert.equal(port, "4222");
    assert.ok(!nats.command?.some((arg) => ["-p", "--port"].includes(arg)));
  }
  // The binary cannot read its fd limit: the connection cap stays below it, with room to spare.
  assert.ok(config.maxConnections > 0 && config.maxConnections < gateway.ulimits!.nofile.soft);

  // The proxy's rewrite of deploy/nginx.conf, run here: each expression changes its one line.
  const script = (proxy.command ?? []).join(" ").replaceAll("$$", "$");
  const all = [...script.matchAll(/-e '([^']+)'/g)].map((m) => m[1]);
  // The TLS server is left out (tested below); the others rewrite one line each.
  const expressions = all.filter((e) => e !== "/# tls: begin/,/# tls: end/d");
  assert.equal(all.length, 3, script);
  assert.equal(expressions.length, 2, script);
  const shipped = await Deno.readTextFile(`${deployDir}nginx.conf`);
  const { stdout, success } = await new Deno.Command("sed", {
    args: ["-E", ...expressions.flatMap((e) => ["-e", e]), `${deployDir}nginx.conf`],
  }).output();
  assert.ok(success);
  const before = shipped.split("\n");
  const changed = new TextDecoder().decode(stdout).split("\n").filter((line, i) =>
    line !== before[i]
  );
  assert.equal(changed.length, 2, changed.join("\n"));
  assert.match(
    changed.join("\n"),
    new RegExp(`^\\s*server gateway:${config.port}; # deploy: upstream`, "m"),
  );
  assert.match(changed.join("\n"), /^\s*access_log \/dev\/stdout gateway; # deploy: access_log/m);
  assert.ok("gateway" in services);
});

Deno.test("compose: starts on a fresh clone: every mounted path is in the repository, TLS opt-in", async () => {
  const base = await readCompose();
  const tls = parseYaml(
    await Deno.readTextFile(`${deployDir}docker-compose.tls.yml`),
  ) as ComposeFile;
  for (const [name, service] of Object.entries(base.services)) {
    for (const volume of service.volumes ?? []) {
      const source = volume.split(":")[0];
      if (!source.startsWith(".") && !source.startsWith("/")) continue; // a named volume
      const stat = await Deno.stat(resolveFromDeploy(source)).catch(() => undefined);
      assert.ok(stat, `${name} mounts ${source}, which a fresh clone lacks`);
    }
  }
  assert.ok(!(base.services.proxy.ports ?? []).some((p) => p.endsWith(":443")));
  assert.ok(tls.services.proxy.ports?.includes("443:443"));
  assert.ok(tls.services.proxy.volumes?.some((v) => v.startsWith("./certs:")));
  // What the base file serves: deploy/nginx.conf without its TLS server, and nothing else gone.
  const { stdout } = await new Deno.Command("sed", {
    args: ["-E", "-e", "/# tls: begin/,/# tls: end/d", `${deployDir}nginx.conf`],
  }).output();
  const rendered = new TextDecoder().decode(stdout);
  assert.doesNotMatch(rendered, /ssl_certificate|listen 443/);
  assert.match(rendered, /listen 80 /);
  assert.match(rendered, /# deploy: admin listen/);
  // The override keeps the base file's rewrites, less the TLS deletion.
  const baseScript = (base.services.proxy.command ?? []).join(" ");
  const tlsScript = (tls.services.proxy.command ?? []).join(" ");
  assert.equal(tlsScript, baseScript.replace(" -e '/# tls: begin/,/# tls: end/d'", ""));
});
