/**
 * deploy/kubernetes/ against the gateway itself: every variable the manifests set is one the
 * gateway reads, their environment is a configuration it accepts, and the probes' paths and ports
 * answer as Kubernetes expects on a real gateway started with that environment.
 */
import assert from "node:assert/strict";
import { type Config, parseConfig } from "../../lib/config/config.ts";
import { ENV_VARIABLES } from "../../lib/config/settings.ts";
import { NatsServer } from "../../tools/nats_server.ts";
import { GatewayProcess, startTaskArgs } from "../../tools/gateway_process.ts";
import { Client, eventually } from "../helpers/fixtures.ts";
import {
  type Container,
  containerEnvironment,
  gatewayContainer,
  kustomizationResources,
  type Manifest,
  only,
  readManifests,
  resolvePort,
} from "../helpers/kubernetes.ts";

const manifests = await readManifests();
const deployment = only(manifests, "Deployment");
const container = gatewayContainer(deployment);
const environment = containerEnvironment(manifests, container);

/**
 * What the gateway makes of an environment: `deno task start --check-config` run with it (exit 0
 * expected), read back as a Config from the effective settings it prints.
 */
async function gatewayConfig(env: Record<string, string>): Promise<Config> {
  await using check = await GatewayProcess.spawn(env, [...await startTaskArgs(), "--check-config"]);
  assert.equal((await check.status).code, 0, check.output);
  const settings: Record<string, unknown> = JSON.parse(check.lines.join("\n"));
  // Secrets are shown redacted: those keep the values given.
  const shown = Object.entries(settings).filter(([, value]) =>
    !String(value).includes("[REDACTED]")
  );
  return parseConfig({
    ...env,
    ...Object.fromEntries(shown.map(([name, value]) => [name, String(value)])),
  });
}

/** The ConfigMap's and Secret's environment with the network parts made local to this test. */
function localEnvironment(natsUrl: string): Record<string, string> {
  return {
    ...environment.values,
    NATS_URL: natsUrl,
    GATEWAY_HOST: "127.0.0.1",
    GATEWAY_PORT: "0",
    GATEWAY_ADMIN_PORT: "127.0.0.1:0",
  };
}

/** The admin listener's address, from the gateway's "gateway listening" line. */
async function adminAddress(gateway: GatewayProcess): Promise<string> {
  await gateway.listening;
  for (const line of gateway.lines) {
    const match = /"msg":"gateway listening".*"admin_addr":"([^"]+)"/.exec(line);
    if (match) return match[1];
  }
  throw new Error(`no admin_addr in the listening line:\n${gateway.output}`);
}

function probePath(probe: Container["livenessProbe"], what: string) {
  assert.ok(probe?.httpGet, `${what} is an httpGet probe`);
  return { path: probe.httpGet.path, port: resolvePort(container, probe.httpGet.port) };
}

Deno.test("kubernetes: every variable the manifests set is one the gateway reads", () => {
  const known = new Set<string>(ENV_VARIABLES);
  const unknown = environment.names.filter((name) => !known.has(name));
  assert.deepEqual(unknown, [], `not read by lib/config/config.ts: ${unknown.join(", ")}`);
  assert.ok(environment.names.includes("NATS_URL"));
  // Credentials come from the Secret, never the ConfigMap.
  const configMap = only(manifests, "ConfigMap");
  for (const secret of ["NATS_PASSWORD", "NATS_TOKEN", "GATEWAY_JWT_SECRET"]) {
    assert.ok(!(secret in (configMap.data ?? {})), `${secret} belongs in the Secret`);
  }
  assert.ok("NATS_PASSWORD" in (only(manifests, "Secret").stringData ?? {}));
});

Deno.test("kubernetes: the manifests' environment is accepted; ports and timing agree with it", async () => {
  const config = await gatewayConfig(environment.values);
  assert.equal(resolvePort(container, "http"), config.port);
  assert.equal(resolvePort(container, "admin"), config.adminPort);
  const preStopSeconds = container.lifecycle?.preStop?.sleep?.seconds ?? 0;
  assert.ok(preStopSeconds > 0, "a preStop sleep lets endpoint removal spread before SIGTERM");
  const grace = deployment.spec.template.spec.terminationGracePeriodSeconds;
  assert.ok(
    grace > preStopSeconds + config.shutdownTimeoutMs / 1000,
    `terminationGracePeriodSeconds ${grace} must exceed preStop ${preStopSeconds} s + GATEWAY_SHUTDOWN_TIMEOUT_MS ${config.shutdownTimeoutMs} ms`,
  );
  // Kubernetes' service links (GATEWAY_SERVICE_HOST, GATEWAY_PORT=tcp://…) would clash.
  assert.equal(deployment.spec.template.spec.enableServiceLinks, false);
  // The prometheus rule's "near the limit" threshold is 90 % of the configured limit.
  const rules = Deno.readTextFileSync(
    new URL("../../deploy/prometheus/gateway_rules.yml", import.meta.url),
  );
  const threshold = /gateway_ws_sockets_held > (\d+)/.exec(rules)?.[1];
  assert.equal(Number(threshold), 0.9 * config.maxConnections);
});

Deno.test("kubernetes: non-root, read-only root, no privilege escalation, resources set", () => {
  const pod = deployment.spec.template.spec;
  assert.equal(pod.securityContext.runAsNonRoot, true);
  assert.ok(pod.securityContext.runAsUser > 0);
  assert.equal(container.securityContext?.readOnlyRootFilesystem, true);
  assert.equal(container.securityContext?.allowPrivilegeEscalation, false);
  assert.deepEqual((container.securityContext?.capabilities as { drop: string[] }).drop, ["ALL"]);
  for (const kind of ["requests", "limits"] as const) {
    assert.ok(container.resources?.[kind]?.cpu, `cpu ${kind}`);
    assert.ok(container.resources?.[kind]?.memory, `memory ${kind}`);
  }
});

Deno.test("kubernetes: Service, PodDisruptionBudget and HPA select the Deployment's pods", async () => {
  const podLabels: Record<string, string> = deployment.spec.template.metadata.labels;
  const selects = (selector: Record<string, string>) =>
    Object.entries(selector).every(([key, value]) => podLabels[key] === value);
  const service = only(manifests, "Service");
  assert.ok(selects(service.spec.selector));
  for (const port of service.spec.ports) resolvePort(container, port.targetPort);
  assert.ok(selects(only(manifests, "PodDisruptionBudget").spec.selector.matchLabels));
  assert.ok(selects(deployment.spec.selector.matchLabels));
  const hpa = only(manifests, "HorizontalPodAutoscaler");
  assert.deepEqual(hpa.spec.scaleTargetRef, {
    apiVersion: "apps/v1",
    kind: "Deployment",
    name: deployment.metadata.name,
  });
  assert.ok(hpa.spec.minReplicas >= 2, "one replica draining must leave another serving");
  const files = [...new Set(manifests.map((m: Manifest) => m.file))].sort();
  assert.deepEqual((await kustomizationResources()).sort(), files);
});

Deno.test("kubernetes: the probes answer on a gateway run with the manifests' environment", async () => {
  const liveness = probePath(container.livenessProbe, "livenessProbe");
  const readiness = probePath(container.readinessProbe, "readinessProbe");
  assert.equal(liveness.path, "/livez");
  assert.equal(readiness.path, "/readyz");
  const config = await gatewayConfig(environment.values);
  assert.equal(liveness.port, config.adminPort);
  assert.equal(readiness.port, config.adminPort);

  // A NATS server that wants the Secret's credentials.
  const { NATS_USER: user, NATS_PASSWORD: password } = environment.values;
  await using nats = await NatsServer.start({
    config: `authorization { user: ${JSON.stringify(user)}, password: ${
      JSON.stringify(password)
    } }\n`,
  });
  await using gateway = await GatewayProcess.spawn(localEnvironment(nats.url));
  const admin = await adminAddress(gateway);
  const get = (path: string, addr = admin) =>
    fetch(`http://${addr}${path}`).then(async (r) => ({
      status: r.status,
      body: await r.text(),
    }));
  await eventually(async () => (await get(readiness.path)).status === 200, "/readyz 200");
  assert.equal((await get(liveness.path)).status, 200);
  const publicAddr = await gateway.listening;
  const publicHost = `${publicAddr.hostname}:${publicAddr.port}`;
  // The public port does not serve readiness: the probes must name the admin port.
  assert.equal((await get(readiness.path, publicHost)).status, 404);

  // Readiness is not liveness: without NATS the pod leaves the Service but is not restarted.
  await nats.kill();
  await eventually(async () => (await get(readiness.path)).status === 503, "/readyz 503");
  assert.equal((await get(liveness.path)).status, 200);
  await nats.restart();
  await eventually(async () => (await get(readiness.path)).status === 200, "/readyz 200 again");

  // SIGTERM (after preStop): every client gets 1001, the process exits well inside the grace.
  const client = await Client.open(publicAddr);
  const started = Date.now();
  gateway.kill("SIGTERM");
  assert.equal((await client.closed).code, 1001);
  const status = await gateway.status;
  const stopMs = Date.now() - started;
  assert.equal(status.code, 0, gateway.output);
  assert.ok(stopMs < config.shutdownTimeoutMs + 2_000, `stopped in ${stopMs} ms`);
});

Deno.test("kubernetes: service links would break the pod, hence enableServiceLinks: false", async () => {
  await using nats = await NatsServer.start();
  // What Kubernetes adds for a Service named "gateway" in the namespace when links are on.
  const links = {
    GATEWAY_SERVICE_HOST: "10.96.0.10",
    GATEWAY_SERVICE_PORT: "80",
    GATEWAY_PORT_80_TCP: "tcp://10.96.0.10:80",
  };
  await using gateway = await GatewayProcess.spawn({ ...localEnvironment(nats.url), ...links });
  const status = await gateway.status;
  assert.equal(status.code, 2, gateway.output);
  assert.match(gateway.output, /GATEWAY_SERVICE_HOST/);
});
