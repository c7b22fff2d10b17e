/** lib/auth/ without a network: token sources, JWT verification, routes claim, origins, config. */
import assert from "node:assert/strict";
import { Authenticator, type AuthOutcome } from "../../lib/auth/authenticator.ts";
import { findToken, routesCover, selectProtocol } from "../../lib/auth/tokens.ts";
import { JwtVerifier } from "../../lib/auth/jwt.ts";
import { OriginPolicy, parseAllowedOrigins } from "../../lib/auth/origins.ts";
import {
  type PublicJwk,
  readJwksFile,
  readJwtKeys,
  readPublicKeyFile,
} from "../../lib/auth/keys.ts";
import { pathMatches } from "../../lib/wildcard.ts";
import { Broadcaster } from "../../lib/relay/broadcaster.ts";
import { parseConfig } from "../../lib/config/config.ts";
import { ConfigError } from "../../lib/config/config_error.ts";
import { checkConfigFiles } from "../../lib/config/config_files.ts";
import { GatewayMetrics } from "../../lib/observe/metrics.ts";
import { createHandler, type Upgrade } from "../../lib/http/router.ts";
import type { HealthReport } from "../../lib/observe/health.ts";
import { Sessions } from "../../lib/http/session.ts";
import { FakeSocket } from "../helpers/fake_socket.ts";
import { recordingLogger } from "../helpers/fixtures.ts";
import {
  generateTestKey,
  jwksOf,
  randomSecret,
  signToken,
  tempFiles,
  type TestKey,
  unsecuredToken,
} from "../helpers/jwt.ts";

const PATH = "/ws/stream";

function upgradeRequest(
  { query = "", headers = {} }: { query?: string; headers?: Record<string, string> } = {},
): Request {
  return new Request(`http://gw${PATH}${query}`, {
    headers: { upgrade: "websocket", connection: "Upgrade", ...headers },
  });
}

const withToken = (token: string) => upgradeRequest({ query: `?token=${token}` });

async function authenticator(
  options: { secret?: string; keys?: TestKey[]; tokens?: string[]; skew?: number } & {
    audience?: string;
    issuer?: string;
  },
): Promise<Authenticator> {
  const jwt = await JwtVerifier.create({
    secret: options.secret ?? "",
    keys: (options.keys ?? []).map((k) => k.publicJwk as PublicJwk),
    audience: options.audience ?? "",
    issuer: options.issuer ?? "",
    clockSkewSeconds: options.skew ?? 30,
  });
  return new Authenticator({ tokens: options.tokens ?? [], jwt });
}

async function decide(auth: Authenticator, request: Request, path = PATH): Promise<AuthOutcome> {
  return await auth.authenticate(request, path);
}

function assertRefused(outcome: AuthOutcome, reason: string, why?: string | RegExp): void {
  assert.equal(outcome.admitted, false, "expected a refusal");
  if (outcome.admitted) return;
  assert.equal(outcome.reason, reason);
  if (typeof why === "string") assert.equal(outcome.detail.why, why);
  else if (why) assert.match(outcome.detail.why, why);
}

Deno.test("auth: valid HS256, RS256, PS256, ES256, ES384 and EdDSA tokens are admitted until exp", async () => {
  const secret = randomSecret();
  const hs = await authenticator({ secret });
  const token = await signToken({ secret }, {}, { expiresInS: 60 });
  const outcome = await decide(hs, withToken(token));
  assert.ok(outcome.admitted);
  const expected = (Math.floor(Date.now() / 1000) + 60 + 30) * 1000;
  assert.ok(Math.abs(outcome.expiresAtMs! - expected) <= 2000, "exp plus the clock skew");
  for (const alg of ["RS256", "PS256", "ES256", "ES384", "EdDSA"]) {
    const key = await generateTestKey(alg);
    const auth = await authenticator({ keys: [key] });
    assert.ok((await decide(auth, withToken(await signToken(key)))).admitted, alg);
  }
});

Deno.test("auth: the algorithms follow from the key type", async () => {
  const rsa = await generateTestKey("RS256");
  const ec = await generateTestKey("ES256");
  const ed = await generateTestKey("EdDSA");
  const verifier = await JwtVerifier.create({
    secret: "",
    keys: [rsa.publicJwk, ec.publicJwk, ed.publicJwk] as PublicJwk[],
    audience: "",
    issuer: "",
    clockSkewSeconds: 0,
  });
  const algorithms = [...verifier.algorithms].sort();
  assert.deepEqual(algorithms, [
    "ES256",
    "Ed25519",
    "EdDSA",
    "PS256",
    "PS384",
    "PS512",
    "RS256",
    "RS384",
    "RS512",
  ]);
  assert.ok(!algorithms.some((alg) => alg.startsWith("HS") || alg === "none"));
});

Deno.test("auth: a JWKS picks the key by kid, and a rotated set drops the old key", async () => {
  const [old, current, next] = await Promise.all(
    ["k-old", "k-current", "k-next"].map((kid) => generateTestKey("ES256", kid)),
  );
  await using files = await tempFiles({
    "before.json": jwksOf(old, current),
    "after.json": jwksOf(current, next),
  });
  const verifierFor = async (file: string) =>
    new Authenticator({
      tokens: [],
      jwt: await JwtVerifier.create({
        secret: "",
        keys: readJwksFile(files.path(file)),
        audience: "",
        issuer: "",
        clockSkewSeconds: 0,
      }),
    });
  const before = await verifierFor("before.json");
  const after = await verifierFor("after.json");
  const [byOld, byCurrent, byNext] = await Promise.all(
    [old, current, next].map((k) => signToken(k)),
  );
  assert.ok((await decide(before, withToken(byOld))).admitted);
  assert.ok((await decide(before, withToken(byCurrent))).admitted);
  assertRefused(
    await decide(before, withToken(byNext)),
    "unauthorized",
    "ERR_JWKS_NO_MATCHING_KEY",
  );
  assertRefused(await decide(after, withToken(byOld)), "unauthorized", "ERR_JWKS_NO_MATCHING_KEY");
  assert.ok((await decide(after, withToken(byNext))).admitted);
  // A kid naming one key while another signed: the signature fails.
  const lying = await signToken(old, {}, { kid: "k-current" });
  assertRefused(
    await decide(before, withToken(lying)),
    "unauthorized",
    "ERR_JWS_SIGNATURE_VERIFICATION_FAILED",
  );
});

Deno.test("auth: expired, not yet valid, wrong signature, audience, issuer: unauthorized", async () => {
  const key = await generateTestKey("RS256");
  const other = await generateTestKey("RS256");
  const auth = await authenticator({ keys: [key], skew: 5, audience: "dash", issuer: "login" });
  const ok = { aud: "dash", iss: "login" };
  const cases: [string, Promise<string>, string][] = [
    ["valid", signToken(key, ok), ""],
    ["expired", signToken(key, ok, { expiresInS: -60 }), "ERR_JWT_EXPIRED"],
    ["not yet valid", signToken(key, ok, { notBeforeInS: 60 }), "ERR_JWT_CLAIM_VALIDATION_FAILED"],
    ["other key", signToken(other, ok), "ERR_JWS_SIGNATURE_VERIFICATION_FAILED"],
    ["audience", signToken(key, { ...ok, aud: "x" }), "ERR_JWT_CLAIM_VALIDATION_FAILED"],
    ["issuer", signToken(key, { ...ok, iss: "x" }), "ERR_JWT_CLAIM_VALIDATION_FAILED"],
  ];
  for (const [name, token, why] of cases) {
    const outcome = await decide(auth, withToken(await token));
    if (why === "") assert.ok(outcome.admitted, name);
    else assertRefused(outcome, "unauthorized", why);
  }
  // Within the clock skew both ways.
  assert.ok((await decide(auth, withToken(await signToken(key, ok, { expiresInS: -3 })))).admitted);
  assert.ok(
    (await decide(auth, withToken(await signToken(key, ok, { notBeforeInS: 3 })))).admitted,
  );
});

Deno.test("auth: alg none, HS256 keyed with the public key, malformed and huge tokens are refused", async () => {
  const key = await generateTestKey("RS256");
  const auth = await authenticator({ keys: [key] });
  const confused = await signToken({ secret: key.publicPem }, {}, { alg: "HS256" });
  assertRefused(
    await decide(auth, withToken(confused)),
    "unauthorized",
    "ERR_JOSE_ALG_NOT_ALLOWED",
  );
  assertRefused(
    await decide(auth, withToken(unsecuredToken())),
    "unauthorized",
    /ERR_JOSE_ALG_NOT_ALLOWED|ERR_JWS_INVALID/,
  );
  for (const bad of ["abc", "a.b.c", "eyJhbGciOiJIUzI1NiJ9..", "x".repeat(100)]) {
    assertRefused(await decide(auth, withToken(bad)), "unauthorized");
  }
  assertRefused(await decide(auth, withToken("x".repeat(9000))), "unauthorized", "token too long");
  assertRefused(await decide(auth, upgradeRequest()), "unauthorized", "no token");
  // With a secret only, an RS256 token is not even tried.
  const hsOnly = await authenticator({ secret: randomSecret() });
  assertRefused(
    await decide(hsOnly, withToken(await signToken(key))),
    "unauthorized",
    "ERR_JOSE_ALG_NOT_ALLOWED",
  );
});

Deno.test("auth: the token comes from the header, a bearer. protocol, or ?token=", async () => {
  const secret = randomSecret();
  const auth = await authenticator({ secret });
  const token = await signToken({ secret });
  const requests = {
    header: upgradeRequest({ headers: { authorization: `Bearer ${token}` } }),
    protocol: upgradeRequest({ headers: { "sec-websocket-protocol": `gateway, bearer.${token}` } }),
    query: withToken(token),
  };
  for (const [source, request] of Object.entries(requests)) {
    assert.equal(findToken(request)?.source, source);
    assert.equal(findToken(request)?.token, token);
    assert.ok((await decide(auth, request)).admitted, source);
  }
  assert.equal(selectProtocol(requests.protocol), "gateway", "a non-token protocol is echoed");
  const tokenOnly = upgradeRequest({ headers: { "sec-websocket-protocol": `bearer.${token}` } });
  assert.equal(selectProtocol(tokenOnly), undefined, "the token is never echoed");
  const unspaced = upgradeRequest({
    headers: { "sec-websocket-protocol": `gateway,bearer.${token}` },
  });
  assert.equal(findToken(unspaced)?.token, token);
  assert.equal(selectProtocol(unspaced), undefined, "not an entry Deno can echo alone");
});

Deno.test("auth: static tokens keep working beside JWTs; a JWT alone is not a static token", async () => {
  const secret = randomSecret();
  const both = await authenticator({ secret, tokens: ["static-token-0123456789"] });
  assert.ok((await decide(both, withToken("static-token-0123456789"))).admitted);
  assert.ok((await decide(both, withToken(await signToken({ secret })))).admitted);
  const staticOnly = new Authenticator({ tokens: ["static-token-0123456789"] });
  const outcome = staticOnly.authenticate(withToken(await signToken({ secret })), PATH);
  assert.ok(!(outcome instanceof Promise), "no JWT configured: decided synchronously");
  assertRefused(outcome, "unauthorized", "unknown token");
  assert.ok(new Authenticator({ tokens: [] }).authenticate(upgradeRequest(), PATH));
});

Deno.test("auth: the routes claim: * is one segment; a token for another route is forbidden", async () => {
  assert.ok(pathMatches("/ws/levels/*", "/ws/levels/SPY"));
  assert.ok(!pathMatches("/ws/levels/*", "/ws/levels/SPY/x"));
  assert.ok(!pathMatches("/ws/levels/*", "/ws/levels/"));
  assert.ok(!pathMatches("/ws/levels/*", "/ws/stream"));
  assert.ok(pathMatches("/ws/stream", "/ws/stream"));
  assert.ok(routesCover(undefined, "/anything"));
  assert.ok(!routesCover("/ws/stream", "/ws/stream"), "a string is not an array of patterns");
  assert.ok(!routesCover([], "/ws/stream"));

  const key = await generateTestKey("ES256", "k1");
  const auth = await authenticator({ keys: [key] });
  const levels = await signToken(key, { sub: "alice", routes: ["/ws/levels/*"] });
  const outcome = await decide(auth, withToken(levels));
  assertRefused(outcome, "forbidden", "route not in claim");
  if (!outcome.admitted) {
    assert.deepEqual(outcome.detail, {
      why: "route not in claim",
      source: "query",
      sub: "alice",
      kid: "k1",
    });
  }
  assert.ok((await decide(auth, withToken(levels), "/ws/levels/SPY")).admitted);
  const both = await signToken(key, { routes: ["/ws/stream", "/ws/levels/*"] });
  assert.ok((await decide(auth, withToken(both))).admitted);
});

Deno.test("auth: a refusal's detail never holds the token", async () => {
  const key = await generateTestKey("RS256");
  const auth = await authenticator({ keys: [key] });
  const token = await signToken(key, { sub: "s".repeat(500) }, { expiresInS: -120 });
  const outcome = await decide(auth, withToken(token));
  assertRefused(outcome, "unauthorized", "ERR_JWT_EXPIRED");
  const shown = JSON.stringify(outcome);
  assert.ok(!shown.includes(token.split(".")[2]));
  assert.ok(shown.length < 300, "sub is cut short");
});

Deno.test("auth: key files: PEM and JWKS read; private keys, secrets and junk refused without their content", async () => {
  const rsa = await generateTestKey("RS256");
  const { privateKey } = await crypto.subtle.generateKey("Ed25519", true, [
    "sign",
    "verify",
  ]) as CryptoKeyPair;
  const pkcs8 = btoa(
    String.fromCharCode(...new Uint8Array(await crypto.subtle.exportKey("pkcs8", privateKey))),
  );
  const privatePem = `-----BEGIN PRIVATE KEY-----\n${pkcs8}\n-----END PRIVATE KEY-----\n`;
  await using files = await tempFiles({
    "public.pem": rsa.publicPem,
    "private.pem": privatePem,
    "junk.pem": "not a key",
    "secret.json": JSON.stringify({ keys: [{ kty: "oct", k: "c2VjcmV0LXNlY3JldA" }] }),
    "private.json": JSON.stringify({ keys: [{ ...rsa.publicJwk, d: "AAAA" }] }),
    "alg.json": JSON.stringify({ keys: [{ ...rsa.publicJwk, alg: "HS256" }] }),
    "empty.json": JSON.stringify({ keys: [] }),
  });
  assert.equal(readPublicKeyFile(files.path("public.pem")).kty, "RSA");
  const env = (name: string, file: string) =>
    checkConfigFiles(parseConfig({ [name]: files.path(file) }));
  const cases: [string, string, RegExp][] = [
    ["GATEWAY_JWT_PUBLIC_KEY", "private.pem", /must name a public key.*holds a private key/],
    ["GATEWAY_JWT_PUBLIC_KEY", "junk.pem", /must name a PEM public key/],
    ["GATEWAY_JWT_PUBLIC_KEY", "missing.pem", /cannot be used.*no such file/],
    ["GATEWAY_JWT_JWKS", "secret.json", /private or secret key material/],
    ["GATEWAY_JWT_JWKS", "private.json", /private or secret key material/],
    ["GATEWAY_JWT_JWKS", "alg.json", /"alg" "HS256", which such a key cannot verify/],
    ["GATEWAY_JWT_JWKS", "empty.json", /must name a JWKS file/],
    ["GATEWAY_JWT_JWKS", "junk.pem", /must name a JWKS file/],
  ];
  for (const [name, file, message] of cases) {
    assert.throws(() => env(name, file), (err: Error) => {
      assert.ok(err instanceof ConfigError, String(err));
      assert.ok(err.message.startsWith(name), err.message);
      assert.match(err.message, message);
      assert.ok(!err.message.includes(pkcs8.slice(0, 40)) && !err.message.includes("AAAA"));
      return true;
    });
  }
  const secret = "short-secret";
  assert.throws(() => parseConfig({ GATEWAY_JWT_SECRET: secret }), (err: Error) => {
    assert.match(err.message, /^GATEWAY_JWT_SECRET must be at least 32 bytes/);
    return !err.message.includes(secret);
  });
  const config = parseConfig({
    GATEWAY_JWT_PUBLIC_KEY: files.path("public.pem"),
    GATEWAY_JWT_CLOCK_SKEW_S: "5",
    GATEWAY_AUTH_REJECT: "http",
  });
  assert.equal(readJwtKeys(config).length, 1);
  assert.equal(config.jwtClockSkewSeconds, 5);
  assert.equal(config.authReject, "http");
  assert.throws(
    () => parseConfig({ GATEWAY_AUTH_REJECT: "403" }),
    /GATEWAY_AUTH_REJECT must be one of close, http/,
  );
});

Deno.test("origins: parsed exactly; * allows all; CORS reflects only allowed origins", () => {
  assert.deepEqual(parseAllowedOrigins(undefined), ["*"]);
  assert.deepEqual(parseAllowedOrigins(" * "), ["*"]);
  assert.deepEqual(
    parseAllowedOrigins("https://app.example.com, http://localhost:5173"),
    ["https://app.example.com", "http://localhost:5173"],
  );
  for (
    const bad of [
      "https://app.example.com/",
      "app.example.com",
      "https://App.example.com",
      "*,https://a.b",
    ]
  ) {
    assert.throws(
      () => parseConfig({ GATEWAY_ALLOWED_ORIGINS: bad }),
      /GATEWAY_ALLOWED_ORIGINS must be/,
    );
  }
  const any = new OriginPolicy();
  assert.ok(any.allows("https://evil.example"));
  assert.deepEqual(any.corsHeaders("https://evil.example"), { "access-control-allow-origin": "*" });
  const some = new OriginPolicy(["https://app.example.com"]);
  assert.ok(some.allows(null), "no Origin: not a browser page, unaffected");
  assert.ok(some.allows("https://app.example.com"));
  assert.ok(!some.allows("https://evil.example"));
  assert.deepEqual(some.corsHeaders("https://app.example.com"), {
    "access-control-allow-origin": "https://app.example.com",
    vary: "Origin",
  });
  assert.deepEqual(some.corsHeaders("https://evil.example"), { vary: "Origin" });
});

function handlerWith(
  options: { auth?: Authenticator; authReject?: "close" | "http"; origins?: string[] },
) {
  const broadcaster = new Broadcaster({ clientBufferBytes: 1000, slowClientTimeoutMs: 1000 });
  broadcaster.broadcast('{"seq":1}');
  const metrics = new GatewayMetrics(() => broadcaster.size);
  const sessions = new Sessions({ metrics, openTimeoutMs: 50 });
  const sockets: FakeSocket[] = [];
  const protocols: (string | undefined)[] = [];
  const upgrade: Upgrade = (_request, { protocol }) => {
    const socket = new FakeSocket();
    sockets.push(socket);
    protocols.push(protocol);
    return { socket, response: new Response(null, { status: 200 }) };
  };
  const health = () => ({ status: "healthy" }) as HealthReport;
  const handle = createHandler({
    broadcaster,
    metrics,
    logger: recordingLogger(),
    health,
    maxConnections: 0,
    sessions,
    ...(options.auth ? { auth: options.auth } : {}),
    ...(options.authReject ? { authReject: options.authReject } : {}),
    ...(options.origins ? { allowedOrigins: options.origins } : {}),
    idleTimeoutSeconds: 30,
    clientMaxFrameBytes: 64,
    clientMaxFramesPerSecond: 3,
    upgrade,
  });
  return { handler: async (r: Request) => await handle(r), sockets, protocols, metrics, sessions };
}

Deno.test("handler: GATEWAY_AUTH_REJECT=http answers 401 or 403 before any upgrade", async () => {
  const key = await generateTestKey("ES256");
  const { handler, sockets, metrics } = handlerWith({
    auth: await authenticator({ keys: [key] }),
    authReject: "http",
  });
  const none = await handler(upgradeRequest());
  assert.equal(none.status, 401);
  assert.match(none.headers.get("www-authenticate")!, /^Bearer/);
  const other = await handler(withToken(await signToken(key, { routes: ["/ws/levels/*"] })));
  assert.equal(other.status, 403);
  assert.equal(sockets.length, 0, "never upgraded");
  assert.equal(metrics.connectionsRejected.get({ reason: "unauthorized" }), 1);
  assert.equal(metrics.connectionsRejected.get({ reason: "forbidden" }), 1);
  assert.equal((await handler(withToken(await signToken(key)))).status, 200);
});

Deno.test("handler: by default a refusal is a 1008 close with its reason, before any data", async () => {
  const key = await generateTestKey("ES256");
  const { handler, sockets, protocols, metrics, sessions } = handlerWith({
    auth: await authenticator({ keys: [key] }),
  });
  const forbidden = await signToken(key, { routes: ["/ws/levels/*"] });
  await handler(withToken(forbidden));
  await handler(upgradeRequest({ headers: { "sec-websocket-protocol": "gateway, bearer.nope" } }));
  const token = await signToken(key);
  await handler(
    upgradeRequest({ headers: { "sec-websocket-protocol": `gateway, bearer.${token}` } }),
  );
  for (const socket of sockets) socket.dispatchEvent(new Event("open"));
  assert.deepEqual(sockets[0].closedWith, { code: 1008, reason: "forbidden" });
  assert.deepEqual(sockets[1].closedWith, { code: 1008, reason: "unauthorized" });
  assert.deepEqual(sockets[0].sent, []);
  assert.deepEqual(sockets[1].sent, []);
  assert.deepEqual(sockets[2].sent, ['{"seq":1}']);
  assert.deepEqual(protocols, ["", "gateway", "gateway"].map((p) => p || undefined));
  assert.equal(metrics.connectionsRejected.get({ reason: "forbidden" }), 1);
  assert.equal(metrics.connectionsRejected.get({ reason: "unauthorized" }), 1);
  for (const socket of sockets) socket.dispatchEvent(new CloseEvent("close"));
  await sessions.idle();
});

Deno.test("handler: a disallowed Origin gets 403 before the upgrade; CORS reflects allowed ones", async () => {
  const { handler, sockets, metrics, sessions } = handlerWith({
    origins: ["https://app.example.com"],
  });
  const refused = await handler(upgradeRequest({ headers: { origin: "https://evil.example" } }));
  assert.equal(refused.status, 403);
  assert.equal(sockets.length, 0);
  assert.equal(metrics.connectionsRejected.get({ reason: "origin" }), 1);
  assert.equal(
    (await handler(upgradeRequest({ headers: { origin: "https://app.example.com" } }))).status,
    200,
  );
  assert.equal((await handler(upgradeRequest())).status, 200, "no Origin: not a browser, admitted");
  const allowed = await handler(
    new Request("http://gw/livez", { headers: { origin: "https://app.example.com" } }),
  );
  assert.equal(allowed.headers.get("access-control-allow-origin"), "https://app.example.com");
  assert.equal(allowed.headers.get("vary"), "Origin");
  const other = await handler(
    new Request("http://gw/livez", { headers: { origin: "https://evil.example" } }),
  );
  assert.equal(other.status, 200, "served; the browser just may not read it");
  assert.equal(other.headers.get("access-control-allow-origin"), null);
  for (const socket of sockets) socket.dispatchEvent(new CloseEvent("close"));
  await sessions.idle();
});

Deno.test("session: a token that expires while connected closes with 4001, counted", async () => {
  const secret = randomSecret();
  const auth = await authenticator({ secret, skew: 0 });
  const { handler, sockets, metrics, sessions } = handlerWith({ auth });
  // exp is in whole seconds: 2 s from now is at least 1 s away.
  await handler(withToken(await signToken({ secret }, {}, { expiresInS: 2 })));
  const [socket] = sockets;
  const closed = Promise.withResolvers<void>();
  const close = socket.close.bind(socket);
  socket.close = (code, reason) => (close(code, reason), closed.resolve());
  socket.dispatchEvent(new Event("open"));
  assert.deepEqual(socket.sent, ['{"seq":1}']);
  const openedAt = Date.now();
  await closed.promise;
  assert.deepEqual(socket.closedWith, { code: 4001, reason: "token expired" });
  assert.ok(Date.now() - openedAt < 3500);
  sockets[0].dispatchEvent(new CloseEvent("close", { code: 4001 }));
  assert.equal(metrics.connectionsClosed.get({ reason: "token_expired" }), 1);
  await sessions.idle();
});
