/**
 * Logging in to NATS and TLS, against real nats-server processes: every login method relays,
 * refusals are one clear line (never a crash, never retried), and no secret is ever shown.
 */
import assert from "node:assert/strict";
import { type ConnectionOptions, credsAuthenticator, nkeyAuthenticator } from "@nats-io/nats-core";
import { startGateway } from "../../lib/gateway.ts";
import { connectNats } from "../../lib/nats/connection.ts";
import { NatsCredentialsError, NatsLoginError, NatsTlsError } from "../../lib/nats/errors.ts";
import { makeCerts, type TestCerts } from "../helpers/certs.ts";
import { Client, Publisher, recordingLogger, signal, testConfig } from "../helpers/fixtures.ts";
import { operatorSetup, userNkey } from "../helpers/nats_auth.ts";
import { NatsServer } from "../../tools/nats_server.ts";
import { GatewayProcess } from "../../tools/gateway_process.ts";

const secret = (name: string) => `${name}-${crypto.randomUUID()}`;

/** Fails if any secret (or its URL-encoded form) appears in any of the texts. */
function assertNoSecrets(texts: readonly string[], secrets: readonly string[]): void {
  const all = texts.join("\n");
  for (const s of secrets) {
    for (const form of new Set([s, encodeURIComponent(s), JSON.stringify(s).slice(1, -1)])) {
      assert.ok(!all.includes(form), `secret ${JSON.stringify(form)} leaked`);
    }
  }
}

async function httpText(addr: Deno.NetAddr, path: string): Promise<string> {
  const response = await fetch(`http://${addr.hostname}:${addr.port}${path}`);
  return await response.text();
}

/**
 * Starts an in-process gateway with `env`, publishes one message through a publisher logged in
 * with `publisherOptions`, and checks it reaches a WebSocket client and that no secret shows.
 */
async function assertRelays(
  natsUrl: string,
  env: Record<string, string>,
  publisherOptions: ConnectionOptions,
  secrets: readonly string[],
): Promise<void> {
  const logger = recordingLogger();
  await using gateway = await startGateway(testConfig(natsUrl, env), { logger });
  await using client = await Client.open(gateway.addr);
  await using publisher = await Publisher.connect(natsUrl.replace(/\/\/[^@]*@/, "//"), {
    ...publisherOptions,
  });
  const payload = signal(1);
  await publisher.publish(payload);
  assert.deepEqual(await client.waitFor(1), [payload]);
  const healthText = await httpText(gateway.addr, "/health");
  assert.equal(JSON.parse(healthText).status, "healthy");
  const texts = [
    healthText,
    await httpText(gateway.addr, "/metrics"),
    ...logger.lines.map((line) => JSON.stringify(line)),
  ];
  assertNoSecrets(texts, secrets);
}

/** A temp file holding `content`; removed on dispose. */
async function tempFile(content: string | Uint8Array): Promise<{ path: string } & AsyncDisposable> {
  const path = await Deno.makeTempFile({ prefix: "gateway-cred-" });
  await (typeof content === "string"
    ? Deno.writeTextFile(path, content)
    : Deno.writeFile(path, content));
  return { path, [Symbol.asyncDispose]: () => Deno.remove(path).catch(() => {}) };
}

function usersConfig(users: string): string {
  return `authorization {\n  users: [\n${users}\n  ]\n}\n`;
}

function tlsConfig(certs: TestCerts, verifyClients = false): string {
  return [
    "tls {",
    `  cert_file: "${certs.serverCertPath}"`,
    `  key_file: "${certs.serverKeyPath}"`,
    `  ca_file: "${certs.caPath}"`,
    `  verify: ${verifyClients}`,
    "  timeout: 2",
    "}",
    "",
  ].join("\n");
}

/** Runs connectNats and returns what it threw, with how long it took. */
async function refusal(
  servers: string[],
  credentials: Parameters<typeof connectNats>[0]["credentials"],
  connectTimeoutMs = 8_000,
): Promise<{ error: Error; ms: number; warnings: number }> {
  const logger = recordingLogger();
  const started = Date.now();
  try {
    const nc = await connectNats({ servers, connectTimeoutMs, name: "t", logger, credentials });
    await nc.close();
  } catch (error) {
    assert.ok(error instanceof Error);
    return { error, ms: Date.now() - started, warnings: logger.lines.length };
  }
  throw new Error("connectNats succeeded; a refusal was expected");
}

Deno.test("user and password from NATS_USER/NATS_PASSWORD: relays, password never shown", async () => {
  const password = secret("pw");
  await using nats = await NatsServer.start({
    config: usersConfig(`    { user: gw, password: "${password}" }`),
  });
  await assertRelays(nats.url, { NATS_USER: "gw", NATS_PASSWORD: password }, {
    user: "gw",
    pass: password,
  }, [password]);
});

Deno.test("token from NATS_TOKEN and from NATS_URL: relays, token never shown", async () => {
  const token = secret("tok");
  await using nats = await NatsServer.start({
    config: `authorization {\n  token: "${token}"\n}\n`,
  });
  await assertRelays(nats.url, { NATS_TOKEN: token }, { token }, [token]);
  const inUrl = nats.url.replace("nats://", `nats://${token}@`);
  await assertRelays(inUrl, {}, { token }, [token]);
});

Deno.test("nkey seed file from NATS_NKEY: relays, seed never shown", async () => {
  const nkey = userNkey();
  await using nats = await NatsServer.start({
    config: usersConfig(`    { nkey: ${nkey.publicKey} }`),
  });
  await using seedFile = await tempFile(nkey.seed);
  await assertRelays(nats.url, { NATS_NKEY: seedFile.path }, {
    authenticator: nkeyAuthenticator(new TextEncoder().encode(nkey.seed.trim())),
  }, [nkey.seed.trim()]);
});

Deno.test("creds file from NATS_CREDS, server in operator mode: relays, JWT and seed never shown", async () => {
  const setup = await operatorSetup();
  await using nats = await NatsServer.start({ config: setup.serverConfig });
  await using credsFile = await tempFile(setup.creds);
  await assertRelays(nats.url, { NATS_CREDS: credsFile.path }, {
    authenticator: credsAuthenticator(setup.creds),
  }, setup.secrets);
});

Deno.test("TLS: server certificate from a test CA, nats:// and tls:// URLs, client certificate", async () => {
  await using certs = await makeCerts();
  await using nats = await NatsServer.start({ config: tlsConfig(certs) });
  const publisherTls = { tls: { ca: await Deno.readTextFile(certs.caPath) } };
  await assertRelays(nats.url, { NATS_CA: certs.caPath }, publisherTls, []);
  await assertRelays(
    nats.url.replace("nats://", "tls://"),
    { NATS_CA: certs.caPath },
    publisherTls,
    [],
  );

  await using mutual = await NatsServer.start({ config: tlsConfig(certs, true) });
  const clientFiles = { NATS_CERT: certs.clientCertPath, NATS_KEY: certs.clientKeyPath };
  await assertRelays(mutual.url, { NATS_CA: certs.caPath, ...clientFiles }, {
    tls: {
      ...publisherTls.tls,
      cert: await Deno.readTextFile(certs.clientCertPath),
      key: await Deno.readTextFile(certs.clientKeyPath),
    },
  }, [await Deno.readTextFile(certs.clientKeyPath)]);
});

Deno.test("wrong password, via main.ts: one JSON line naming user and server, exit 1, no retry", async () => {
  const password = secret("right");
  const wrong = secret("wrong");
  await using nats = await NatsServer.start({
    config: usersConfig(`    { user: gw, password: "${password}" }`),
  });
  const hostPort = nats.url.slice("nats://".length);
  const started = Date.now();
  await using gateway = await GatewayProcess.spawn({
    NATS_URL: `nats://gw:${wrong}@${hostPort}`,
    GATEWAY_NATS_CONNECT_TIMEOUT_MS: "20000",
  });
  const status = await gateway.status;
  assert.equal(status.code, 1, gateway.output);
  assert.ok(Date.now() - started < 15_000, "not retried for the whole connect timeout");
  const lines = [...gateway.lines, ...gateway.stderr].filter((line) => line.trim() !== "");
  for (const line of lines) assert.doesNotThrow(() => JSON.parse(line), `not JSON: ${line}`);
  const output = gateway.output;
  assert.match(
    output,
    new RegExp(
      `NATS refused the login for user \\\\"gw\\\\" at ${hostPort}: Authorization Violation`,
    ),
  );
  assert.doesNotMatch(output, /not reachable|ECONNRESET|Uncaught|\n\s+at /);
  assertNoSecrets([output], [wrong]);
});

Deno.test("password in NATS_URL, via main.ts: relays; logs, /health and /metrics show it redacted", async () => {
  const password = secret("p@ss:w/rd");
  await using nats = await NatsServer.start({
    config: usersConfig(`    { user: gw, password: "${password}" }`),
  });
  const url = nats.url.replace("nats://", `nats://gw:${encodeURIComponent(password)}@`);
  await using gateway = await GatewayProcess.spawn({ NATS_URL: url });
  const addr = await gateway.listening;
  await using client = await Client.open(addr);
  await using publisher = await Publisher.connect(nats.url, { user: "gw", pass: password });
  await publisher.publish(signal(1));
  await client.waitFor(1);
  const healthText = await httpText(addr, "/health");
  assert.equal(JSON.parse(healthText).nats_url, `nats://gw:[REDACTED]@127.0.0.1:${nats.port}`);
  const metricsText = await httpText(addr, "/metrics");
  gateway.kill("SIGTERM");
  assert.equal((await gateway.status).code, 0, gateway.output);
  assertNoSecrets([healthText, metricsText, gateway.output], [password]);
});

Deno.test("TLS with an unknown CA, via main.ts: one JSON line naming server and reason, exit 1", async () => {
  await using certs = await makeCerts();
  await using nats = await NatsServer.start({ config: tlsConfig(certs) });
  const hostPort = nats.url.slice("nats://".length);
  await using gateway = await GatewayProcess.spawn({
    NATS_URL: `tls://${hostPort}`,
    NATS_CA: certs.otherCaPath,
    GATEWAY_NATS_CONNECT_TIMEOUT_MS: "20000",
  });
  const status = await gateway.status;
  assert.equal(status.code, 1, gateway.output);
  const lines = [...gateway.lines, ...gateway.stderr].filter((line) => line.trim() !== "");
  for (const line of lines) assert.doesNotThrow(() => JSON.parse(line), `not JSON: ${line}`);
  assert.match(
    gateway.output,
    new RegExp(`TLS to NATS at tls://${hostPort} failed: .*not signed by the CA in NATS_CA`),
  );
  assert.doesNotMatch(gateway.output, /not reachable|Uncaught|\n\s+at /);
});

Deno.test("refused logins name the method and fail at once: token, nkey, creds, none", async () => {
  const token = secret("tok");
  await using tokenServer = await NatsServer.start({
    config: `authorization {\n  token: "${token}"\n}\n`,
  });
  const hostPort = tokenServer.url.slice("nats://".length);
  const wrongToken = await refusal([tokenServer.url], { natsToken: secret("bad") });
  assert.ok(wrongToken.error instanceof NatsLoginError);
  assert.equal(
    wrongToken.error.message,
    `NATS refused the login with a token at ${hostPort}: Authorization Violation`,
  );
  const none = await refusal([tokenServer.url], {});
  assert.match(none.error.message, /NATS refused the login with no credentials \(set NATS_USER/);

  const known = userNkey();
  const stranger = userNkey();
  await using nkeyServer = await NatsServer.start({
    config: usersConfig(`    { nkey: ${known.publicKey} }`),
  });
  await using strangerSeed = await tempFile(stranger.seed);
  const nkey = await refusal([nkeyServer.url], { natsNkeyPath: strangerSeed.path });
  assert.ok(nkey.error instanceof NatsLoginError);
  assert.match(nkey.error.message, new RegExp(`with nkey ${stranger.publicKey} \\(NATS_NKEY\\)`));
  assertNoSecrets([nkey.error.message], [stranger.seed.trim()]);

  const trusted = await operatorSetup();
  const untrusted = await operatorSetup();
  await using operatorServer = await NatsServer.start({ config: trusted.serverConfig });
  await using credsFile = await tempFile(untrusted.creds);
  const creds = await refusal([operatorServer.url], { natsCredsPath: credsFile.path });
  assert.ok(creds.error instanceof NatsLoginError);
  assert.match(creds.error.message, /with the creds file ".*" for U[A-Z0-9]+ \(NATS_CREDS\)/);
  assertNoSecrets([creds.error.message], untrusted.secrets);

  for (const { ms, warnings } of [wrongToken, none, nkey, creds]) {
    assert.ok(ms < 5_000, `refusal took ${ms} ms`);
    assert.equal(warnings, 0, "no 'not reachable' warning for a refusal");
  }
});

Deno.test("TLS failures are one clear error each, not retried", async () => {
  await using certs = await makeCerts();
  await using elsewhere = await makeCerts({ serverNames: ["DNS:nats.example"] });
  await using tlsServer = await NatsServer.start({ config: tlsConfig(certs) });
  await using misnamed = await NatsServer.start({ config: tlsConfig(elsewhere) });
  await using mutual = await NatsServer.start({ config: tlsConfig(certs, true) });
  await using plain = await NatsServer.start();
  const at = (s: NatsServer) => s.url.slice("nats://".length);
  const cases: [string, string[], Record<string, string>, RegExp][] = [
    ["unknown CA", [tlsServer.url], { natsCaPath: certs.otherCaPath }, /not signed by the CA/],
    ["server requires TLS", [tlsServer.url], {}, /requires TLS: set NATS_CA/],
    ["name mismatch", [misnamed.url], { natsCaPath: elsewhere.caPath }, /does not name the host/],
    ["client requires TLS", [`tls://${at(plain)}`], {}, /server does not offer TLS/],
    ["no client certificate", [mutual.url], { natsCaPath: certs.caPath }, /set NATS_CERT/],
    ["client certificate from another CA", [mutual.url], {
      natsCaPath: certs.caPath,
      natsCertPath: elsewhere.clientCertPath,
      natsKeyPath: elsewhere.clientKeyPath,
    }, /did not accept/],
  ];
  for (const [name, servers, credentials, reason] of cases) {
    const { error, ms, warnings } = await refusal(servers, credentials);
    assert.ok(error instanceof NatsTlsError, `${name}: ${error.name}: ${error.message}`);
    assert.match(error.message, new RegExp(`^TLS to NATS at .*${servers[0].split(":").pop()}`));
    assert.match(error.message, reason, name);
    assert.ok(ms < 5_000, `${name} took ${ms} ms`);
    assert.equal(warnings, 0, `${name}: no 'not reachable' warning`);
  }
});

Deno.test("credential files: missing, unreadable or invalid is a clear error without content", async () => {
  await using nats = await NatsServer.start();
  const missing = await refusal([nats.url], { natsNkeyPath: "/nonexistent/user.nk" });
  assert.ok(missing.error instanceof NatsCredentialsError);
  assert.equal(
    missing.error.message,
    'Cannot read NATS_NKEY: current value is "/nonexistent/user.nk" (no such file)',
  );
  const garbage = secret("not-a-seed");
  await using badSeed = await tempFile(garbage);
  const invalid = await refusal([nats.url], { natsNkeyPath: badSeed.path });
  assert.match(invalid.error.message, /NATS_NKEY must name a file holding a user nkey seed/);
  await using badCreds = await tempFile(garbage);
  const invalidCreds = await refusal([nats.url], { natsCredsPath: badCreds.path });
  assert.match(invalidCreds.error.message, /NATS_CREDS must name a \.creds file/);
  assertNoSecrets([invalid.error.message, invalidCreds.error.message], [garbage]);
  const several = await refusal([nats.url], { natsUser: "gw", natsToken: "t" });
  assert.match(several.error.message, /Set one NATS login, not several/);
  const halfPair = await refusal([nats.url], { natsCertPath: "/etc/hostname" });
  assert.match(halfPair.error.message, /NATS_CERT and NATS_KEY go together/);
});

Deno.test({
  name: "credential file outside Deno's read permission: a clear error naming the variable",
  permissions: { read: ["/nonexistent-allowed-dir"], net: true, env: true },
  fn: async () => {
    const { error } = await refusal(["127.0.0.1:1"], { natsCaPath: "/etc/hostname" });
    assert.ok(error instanceof NatsCredentialsError);
    assert.equal(
      error.message,
      `Cannot read NATS_CA: current value is "/etc/hostname" (Deno's read permission does not cover this path)`,
    );
  },
});
