/** The Dockerfile and systemd unit refer to things that exist; the health-check mode works. */
import assert from "node:assert/strict";
import { NatsServer } from "../helpers/nats_server.ts";
import { GatewayProcess, startTaskArgs } from "../helpers/process.ts";

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
  assert.match(
    dockerfile,
    /^HEALTHCHECK .*\n\s+CMD \["\/usr\/local\/bin\/gateway", "--health-check"\]$/m,
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
      "EnvironmentFile=-/etc/gateway/gateway.env",
    ]
  ) assert.ok(unit.split("\n").includes(line), line);
  const example = await Deno.readTextFile(`${root}deploy/gateway.env.example`);
  assert.match(example, /^NATS_URL=/m);
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
