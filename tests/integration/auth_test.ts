/**
 * Who may connect, with real WebSocket clients against a real gateway holding a snapshot:
 * static tokens, JWTs of each key kind, per-route claims, expiry, origins, key-file errors.
 */
import assert from "node:assert/strict";
import { startGateway } from "../../lib/gateway.ts";
import { NatsServer } from "../../tools/nats_server.ts";
import {
  Client,
  eventually,
  Publisher,
  recordingLogger,
  signal,
  testConfig,
} from "../helpers/fixtures.ts";
import {
  generateTestKey,
  jwksOf,
  randomSecret,
  signToken,
  tempFiles,
  type TestKey,
  unsecuredToken,
} from "../helpers/jwt.ts";
import { GatewayProcess } from "../../tools/gateway_process.ts";
import { RawPeer } from "../helpers/raw_ws.ts";

const TOKEN = "dashboard-token-7f3a9c41e2";

Deno.test("auth: a client without a valid token is closed with 1008; one with it gets the stream", async () => {
  await using nats = await NatsServer.start();
  await using gateway = await startGateway(
    testConfig(nats.url, { GATEWAY_AUTH_TOKENS: `${TOKEN},second-token-0123456789` }),
    { logger: recordingLogger() },
  );
  await using publisher = await Publisher.connect(nats.url);
  await publisher.publish(signal(1));
  const base = `ws://127.0.0.1:${gateway.addr.port}/ws/stream`;

  for (const url of [base, `${base}?token=not-the-token-000000`]) {
    const refused = new Client(new WebSocket(url));
    const close = await refused.closed;
    assert.equal(close.code, 1008);
    assert.equal(close.reason, "unauthorized");
    assert.deepEqual(refused.messages, []);
  }

  await using client = new Client(new WebSocket(`${base}?token=${TOKEN}`));
  assert.deepEqual(await client.waitFor(1), [signal(1)]);
  await publisher.publish(signal(2));
  assert.deepEqual(await client.waitFor(2), [signal(1), signal(2)]);
  assert.equal(gateway.metrics.connectionsRejected.get({ reason: "unauthorized" }), 2);
  // /health stays open for load balancers and orchestrators.
  const health = await fetch(`http://127.0.0.1:${gateway.addr.port}/health`);
  assert.equal(health.status, 200);
  await health.body?.cancel();
});

// --- Signed tokens, origins, per-route access (README "Who may connect") -----------------------

const STATIC_TOKEN = "static-token-0123456789";

/** One key of each kind, written where the gateway reads them; disposed with the temp dir. */
async function keySet() {
  const [rs, es, ed] = await Promise.all([
    generateTestKey("RS256"),
    generateTestKey("ES256", "k-es"),
    generateTestKey("EdDSA", "k-ed"),
  ]);
  const secret = randomSecret();
  const files = await tempFiles({ "public.pem": rs.publicPem, "jwks.json": jwksOf(es, ed) });
  return { rs, es, ed, secret, files };
}

function jwtEnv(keys: Awaited<ReturnType<typeof keySet>>, env: Record<string, string> = {}) {
  return {
    GATEWAY_JWT_SECRET: keys.secret,
    GATEWAY_JWT_PUBLIC_KEY: keys.files.path("public.pem"),
    GATEWAY_JWT_JWKS: keys.files.path("jwks.json"),
    GATEWAY_JWT_AUDIENCE: "dashboard",
    GATEWAY_JWT_ISSUER: "login",
    GATEWAY_AUTH_TOKENS: STATIC_TOKEN,
    ...env,
  };
}

const CLAIMS = { aud: "dashboard", iss: "login" };

/** `promise`, or a failure naming `what` after `ms` (a missing close must not hang the run). */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no ${what} within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** A real client; `headers` and `protocols` as Deno's WebSocket takes them. */
function connect(
  addr: Deno.NetAddr,
  { query = "", headers, protocols }: {
    query?: string;
    headers?: Record<string, string>;
    protocols?: string[];
  } = {},
): Client {
  const url = `ws://127.0.0.1:${addr.port}/ws/stream${query}`;
  // Deno's WebSocket takes headers (a browser cannot: it uses the protocol or the query).
  const options = { headers, protocols } as unknown as string[];
  return new Client(new WebSocket(url, options));
}

/**
 * Every byte a raw client gets after the 101, parsed as frames, until the server's close frame
 * (answered, so the server finishes its side).
 */
async function framesUntilClose(
  addr: Deno.NetAddr,
  query: string,
): Promise<{ opcode: number; payload: Uint8Array }[]> {
  const key = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))));
  await using peer = await RawPeer.connect(
    addr,
    `GET /ws/stream${query} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n` +
      `Connection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
  );
  assert.equal(peer.response.status, 101);
  const frames: { opcode: number; payload: Uint8Array }[] = [];
  let bytes = new Uint8Array(0);
  const chunk = new Uint8Array(4096);
  while (frames.at(-1)?.opcode !== 8) {
    const n = await peer.conn.read(chunk);
    if (n === null) break;
    bytes = new Uint8Array([...bytes, ...chunk.subarray(0, n)]);
    // Server frames are unmasked; these are all short (length < 126).
    while (bytes.length >= 2 && bytes.length >= 2 + (bytes[1] & 0x7f)) {
      const length = bytes[1] & 0x7f;
      frames.push({ opcode: bytes[0] & 0x0f, payload: bytes.slice(2, 2 + length) });
      bytes = bytes.slice(2 + length);
    }
  }
  await peer.sendFrame(8, frames.at(-1)?.payload.slice(0, 2) ?? new Uint8Array());
  return frames;
}

Deno.test("jwt: HS256, RS256, ES256 and EdDSA tokens from the header, a protocol or the query get the stream", async () => {
  await using nats = await NatsServer.start();
  const keys = await keySet();
  await using _files = keys.files;
  await using gateway = await startGateway(testConfig(nats.url, jwtEnv(keys)), {
    logger: recordingLogger(),
  });
  await using publisher = await Publisher.connect(nats.url);
  await publisher.publish(signal(1));
  const addr = gateway.addr;
  const hs = await signToken({ secret: keys.secret }, CLAIMS);
  const clients = [
    connect(addr, { headers: { authorization: `Bearer ${hs}` } }),
    connect(addr, { protocols: ["gateway", `bearer.${await signToken(keys.rs, CLAIMS)}`] }),
    connect(addr, { query: `?token=${await signToken(keys.es, CLAIMS)}` }),
    connect(addr, { query: `?token=${await signToken(keys.ed, CLAIMS)}` }),
    connect(addr, { query: `?token=${STATIC_TOKEN}` }),
  ];
  for (const client of clients) assert.deepEqual(await client.waitFor(1), [signal(1)]);
  assert.equal(clients[1].socket.protocol, "gateway", "the non-token protocol is echoed");
  await publisher.publish(signal(2));
  for (const client of clients) assert.deepEqual(await client.waitFor(2), [signal(1), signal(2)]);
  await Promise.all(clients.map((client) => client.close()));
  assert.equal(gateway.metrics.connectionsOpened.get(), 5);
});

Deno.test("jwt: refused tokens get 1008 with the reason and not one payload byte", async () => {
  await using nats = await NatsServer.start();
  const keys = await keySet();
  await using _files = keys.files;
  const logger = recordingLogger();
  await using gateway = await startGateway(testConfig(nats.url, jwtEnv(keys)), { logger });
  await using publisher = await Publisher.connect(nats.url);
  await publisher.publish(signal(1));
  const stranger = await generateTestKey("ES256", "k-es");
  const refused: [string, string, string][] = [
    ["no token", "", "unauthorized"],
    ["expired", await signToken(keys.es, CLAIMS, { expiresInS: -120 }), "unauthorized"],
    ["not yet valid", await signToken(keys.es, CLAIMS, { notBeforeInS: 120 }), "unauthorized"],
    ["wrong signature", await signToken(stranger, CLAIMS), "unauthorized"],
    ["wrong audience", await signToken(keys.ed, { ...CLAIMS, aud: "admin" }), "unauthorized"],
    ["wrong issuer", await signToken(keys.rs, { ...CLAIMS, iss: "evil" }), "unauthorized"],
    ["alg none", unsecuredToken(CLAIMS), "unauthorized"],
    [
      "HS256 keyed with the public key",
      await signToken({ secret: keys.rs.publicPem }, CLAIMS, { alg: "HS256" }),
      "unauthorized",
    ],
    ["malformed", "eyJhbGciOiJFUzI1NiJ9.bm90IGpzb24.c2ln", "unauthorized"],
    [
      "another route",
      await signToken(keys.es, { ...CLAIMS, sub: "alice", routes: ["/ws/levels/*"] }),
      "forbidden",
    ],
  ];
  for (const [name, token, reason] of refused) {
    const client = connect(gateway.addr, { query: token ? `?token=${token}` : "" });
    const close = await client.closed;
    assert.deepEqual([close.code, close.reason], [1008, reason], name);
    assert.deepEqual(client.messages, [], name);
  }
  // The same at the byte level: the one frame after the 101 is the close frame.
  const frames = await framesUntilClose(gateway.addr, `?token=${refused[1][1]}`);
  assert.deepEqual(frames.map((f) => f.opcode), [8]);
  assert.equal(new TextDecoder().decode(frames[0].payload.slice(2)), "unauthorized");

  assert.equal(gateway.metrics.connectionsRejected.get({ reason: "unauthorized" }), 10);
  assert.equal(gateway.metrics.connectionsRejected.get({ reason: "forbidden" }), 1);
  assert.equal(gateway.metrics.connectionsOpened.get(), 0);
  const logged = JSON.stringify(logger.lines);
  for (const [, token] of refused) if (token) assert.ok(!logged.includes(token));
  assert.ok(!logged.includes(keys.secret));
  assert.match(logged, /"msg":"websocket client refused","reason":"unauthorized","why":"no token"/);
});

Deno.test("jwt: GATEWAY_AUTH_REJECT=http answers 401 or 403 before the upgrade", async () => {
  await using nats = await NatsServer.start();
  const keys = await keySet();
  await using _files = keys.files;
  await using gateway = await startGateway(
    testConfig(nats.url, jwtEnv(keys, { GATEWAY_AUTH_REJECT: "http" })),
    { logger: recordingLogger() },
  );
  const upgrade = (query: string) =>
    `GET /ws/stream${query} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n` +
    `Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n` +
    `Sec-WebSocket-Version: 13\r\n\r\n`;
  const forbidden = await signToken(keys.es, { ...CLAIMS, routes: ["/ws/levels/*"] });
  for (
    const [query, status] of [
      ["", 401],
      [`?token=${await signToken(keys.es, CLAIMS, { expiresInS: -120 })}`, 401],
      [`?token=${forbidden}`, 403],
      [`?token=${await signToken(keys.es, CLAIMS)}`, 101],
    ] as const
  ) {
    await using peer = await RawPeer.connect(gateway.addr, upgrade(query));
    assert.equal(peer.response.status, status, query);
  }
  assert.equal(gateway.metrics.connectionsRejected.get({ reason: "unauthorized" }), 2);
  assert.equal(gateway.metrics.connectionsRejected.get({ reason: "forbidden" }), 1);
});

Deno.test("jwt: a token that expires during the connection closes it with 4001", async () => {
  await using nats = await NatsServer.start();
  const keys = await keySet();
  await using _files = keys.files;
  await using gateway = await startGateway(
    testConfig(nats.url, jwtEnv(keys, { GATEWAY_JWT_CLOCK_SKEW_S: "0" })),
    { logger: recordingLogger() },
  );
  await using publisher = await Publisher.connect(nats.url);
  await publisher.publish(signal(1));
  const client = connect(gateway.addr, {
    query: `?token=${await signToken(keys.ed, CLAIMS, { expiresInS: 2 })}`,
  });
  assert.deepEqual(await client.waitFor(1), [signal(1)]);
  const close = await within(client.closed, 10_000, "close at exp");
  assert.deepEqual([close.code, close.reason], [4001, "token expired"]);
  await eventually(
    () => gateway.metrics.connectionsClosed.get({ reason: "token_expired" }) === 1,
    "the expiry counted",
  );
});

Deno.test("jwt: the JWKS is read at startup; a restarted gateway follows a rotation", async () => {
  await using nats = await NatsServer.start();
  const [old, current, next] = await Promise.all(
    ["k-1", "k-2", "k-3"].map((kid) => generateTestKey("ES256", kid)),
  );
  await using files = await tempFiles({ "jwks.json": jwksOf(old, current) });
  const env = { GATEWAY_JWT_JWKS: files.path("jwks.json") };
  await using before = await startGateway(testConfig(nats.url, env), { logger: recordingLogger() });
  await Deno.writeTextFile(files.path("jwks.json"), jwksOf(current, next));
  await using after = await startGateway(testConfig(nats.url, env), { logger: recordingLogger() });
  await using publisher = await Publisher.connect(nats.url);
  await publisher.publish(signal(1));
  /** "open" once the snapshot arrives, else the close code. */
  const outcome = async (addr: Deno.NetAddr, key: TestKey) => {
    await using client = connect(addr, { query: `?token=${await signToken(key)}` });
    return await client.waitFor(1).then(
      () => "open",
      () => client.closed.then((e) => e.code),
    );
  };
  assert.equal(await outcome(before.addr, old), "open", "the running gateway keeps its keys");
  assert.equal(await outcome(after.addr, old), 1008, "the retired key is refused");
  assert.equal(await outcome(after.addr, current), "open");
  assert.equal(await outcome(after.addr, next), "open");
});

Deno.test("origins: an allowed Origin connects, another gets 403 before the upgrade, none is unaffected", async () => {
  await using nats = await NatsServer.start();
  await using gateway = await startGateway(
    testConfig(nats.url, { GATEWAY_ALLOWED_ORIGINS: "https://app.example.com" }),
    { logger: recordingLogger() },
  );
  await using publisher = await Publisher.connect(nats.url);
  await publisher.publish(signal(1));
  const allowed = connect(gateway.addr, { headers: { origin: "https://app.example.com" } });
  const noOrigin = connect(gateway.addr);
  for (const client of [allowed, noOrigin]) assert.deepEqual(await client.waitFor(1), [signal(1)]);
  const upgrade = (origin: string) =>
    `GET /ws/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: ${origin}\r\nUpgrade: websocket\r\n` +
    `Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n` +
    `Sec-WebSocket-Version: 13\r\n\r\n`;
  await using refused = await RawPeer.connect(gateway.addr, upgrade("https://evil.example"));
  assert.equal(refused.response.status, 403);
  assert.equal(gateway.metrics.connectionsRejected.get({ reason: "origin" }), 1);
  const base = `http://127.0.0.1:${gateway.addr.port}/health`;
  for (
    const [origin, reflected] of [["https://app.example.com", true], [
      "https://evil.example",
      false,
    ]] as const
  ) {
    const response = await fetch(base, { headers: { origin } });
    await response.body?.cancel();
    assert.equal(response.headers.get("access-control-allow-origin"), reflected ? origin : null);
    assert.equal(response.headers.get("vary"), "Origin");
  }
  await Promise.all([allowed.close(), noOrigin.close()]);
});

Deno.test("main: a bad key file exits 2 naming the variable, never the key", async () => {
  const { privateKey } = await crypto.subtle.generateKey("Ed25519", true, [
    "sign",
    "verify",
  ]) as CryptoKeyPair;
  const pkcs8 = btoa(
    String.fromCharCode(...new Uint8Array(await crypto.subtle.exportKey("pkcs8", privateKey))),
  );
  await using files = await tempFiles({
    "key.pem": `-----BEGIN PRIVATE KEY-----\n${pkcs8}\n-----END PRIVATE KEY-----\n`,
  });
  await using gateway = await GatewayProcess.spawn({
    GATEWAY_JWT_PUBLIC_KEY: files.path("key.pem"),
    NATS_URL: "nats://127.0.0.1:1",
  });
  assert.equal((await gateway.status).code, 2, gateway.output);
  assert.match(
    gateway.output,
    /"msg":"invalid configuration".*GATEWAY_JWT_PUBLIC_KEY must name a public key/,
  );
  assert.ok(!gateway.output.includes(pkcs8.slice(0, 24)), gateway.output);
});

const CHROMIUM = Deno.env.get("CHROMIUM_BIN") ?? "/usr/bin/chromium";
const chromiumMissing = await Deno.stat(CHROMIUM).then(() => false, () => true);

/** In the page: opens a socket, resolves with what a browser can see of its fate. */
const browserProbe = (
  [url, protocols]: [string, string[]],
): Promise<{ opened: boolean; messages: number; code: number; reason: string }> =>
  new Promise((resolve) => {
    const socket = new WebSocket(url, protocols);
    let opened = false, messages = 0;
    socket.onopen = () => (opened = true);
    socket.onmessage = () => messages++;
    socket.onclose = (e) => resolve({ opened, messages, code: e.code, reason: e.reason });
  });

Deno.test({
  name:
    "browser: a bearer. subprotocol works beside a second one; close reasons are readable, an HTTP refusal is not",
  ignore: chromiumMissing,
  async fn() {
    await using nats = await NatsServer.start();
    const keys = await keySet();
    await using _files = keys.files;
    await using gateway = await startGateway(
      testConfig(nats.url, jwtEnv(keys, { GATEWAY_JWT_CLOCK_SKEW_S: "0" })),
      { logger: recordingLogger() },
    );
    await using httpMode = await startGateway(
      testConfig(nats.url, jwtEnv(keys, { GATEWAY_AUTH_REJECT: "http" })),
      { logger: recordingLogger() },
    );
    await using publisher = await Publisher.connect(nats.url);
    await publisher.publish(signal(1));
    const url = (addr: Deno.NetAddr) => `ws://127.0.0.1:${addr.port}/ws/stream`;
    const elsewhere = await signToken(keys.es, { ...CLAIMS, routes: ["/ws/levels/*"] });
    const { chromium } = await import("playwright-core");
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    });
    try {
      const page = await browser.newPage();
      // Signed once the browser is up: exp is in whole seconds and the skew is 0 here.
      const good = await signToken(keys.es, CLAIMS, { expiresInS: 3 });
      const probe = (addr: Deno.NetAddr, protocols: string[]) =>
        page.evaluate(browserProbe, [url(addr), protocols] as [string, string[]]);
      const [expiring, forbidden, tokenOnly, refusedByHttp] = await Promise.all([
        probe(gateway.addr, ["gateway", `bearer.${good}`]),
        probe(gateway.addr, ["gateway", `bearer.${elsewhere}`]),
        probe(gateway.addr, [`bearer.${good}`]),
        probe(httpMode.addr, ["gateway", `bearer.${elsewhere}`]),
      ]);
      assert.deepEqual(expiring, {
        opened: true,
        messages: 1,
        code: 4001,
        reason: "token expired",
      });
      assert.deepEqual(forbidden, { opened: true, messages: 0, code: 1008, reason: "forbidden" });
      // Chromium fails a handshake that selects none of the protocols it offered.
      assert.deepEqual(tokenOnly, { opened: false, messages: 0, code: 1006, reason: "" });
      // All a page learns of a 403 before the upgrade: 1006, nothing else.
      assert.deepEqual(refusedByHttp, { opened: false, messages: 0, code: 1006, reason: "" });
    } finally {
      await browser.close();
    }
  },
});
