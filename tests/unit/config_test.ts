import assert from "node:assert/strict";
import { ConfigError, parseConfig, parseEnvFile } from "../../lib/config.ts";

Deno.test("parseConfig gives the documented defaults for an empty environment", () => {
  const config = parseConfig({});
  assert.equal(config.natsUrl, "nats://localhost:4222");
  assert.deepEqual(config.natsServers, ["nats://localhost:4222"]);
  assert.equal(config.host, "0.0.0.0");
  assert.equal(config.port, 8000);
  assert.equal(config.subject, "levels.signals");
  assert.equal(config.stream, "LEVEL_SIGNALS");
  assert.equal(config.durableName, "");
  assert.equal(config.logLevel, "info");
  assert.equal(config.workers, 1);
  assert.deepEqual(config.authTokens, []);
  assert.equal(config.deadLetterSubject, "");
  assert.ok(Object.isFrozen(config));
});

Deno.test("parseConfig takes GATEWAY_WORKERS as a count or auto (one per CPU)", () => {
  assert.equal(parseConfig({ GATEWAY_WORKERS: "3" }).workers, 3);
  assert.equal(parseConfig({ GATEWAY_WORKERS: "auto" }, 16).workers, 16);
  assert.equal(parseConfig({ GATEWAY_WORKERS: " AUTO " }, 2).workers, 2);
});

Deno.test("parseConfig accepts a comma-separated NATS server list", () => {
  const config = parseConfig({ NATS_URL: "nats://a:4222, b:4223,tls://c:4224" });
  assert.deepEqual(config.natsServers, ["nats://a:4222", "b:4223", "tls://c:4224"]);
  assert.equal(config.natsUrl, "nats://a:4222, b:4223,tls://c:4224");
});

Deno.test("parseConfig takes PORT when GATEWAY_PORT is unset, GATEWAY_PORT first", () => {
  assert.equal(parseConfig({ PORT: "9000" }).port, 9000);
  assert.equal(parseConfig({ PORT: "9000", GATEWAY_PORT: "9100" }).port, 9100);
  assert.equal(parseConfig({ GATEWAY_PORT: "0" }).port, 0);
});

Deno.test("parseConfig reads GATEWAY_AUTH_TOKENS and never echoes a token in an error", () => {
  const good = "a".repeat(16);
  assert.deepEqual(parseConfig({ GATEWAY_AUTH_TOKENS: ` ${good} , ${good}b` }).authTokens, [
    good,
    `${good}b`,
  ]);
  for (const bad of ["short-secret", `${good},`, `${good},with space in it!!`]) {
    assert.throws(() => parseConfig({ GATEWAY_AUTH_TOKENS: bad }), (err) => {
      assert.ok(err instanceof ConfigError);
      assert.match(err.message, /^GATEWAY_AUTH_TOKENS must be .* entry \d of \d is not/);
      assert.ok(!err.message.includes("short-secret") && !err.message.includes("in it!!"));
      return true;
    });
  }
});

Deno.test("parseConfig names the variable and its value in every error", () => {
  const cases: [Record<string, string>, string][] = [
    [{ GATEWAY_PORT: "abc" }, 'Cannot parse GATEWAY_PORT as an integer: current value is "abc"'],
    [{ PORT: "70000" }, 'PORT must be between 0 and 65535: current value is "70000"'],
    [{ GATEWAY_PORT: "-1" }, 'GATEWAY_PORT must be between 0 and 65535: current value is "-1"'],
    [{ NATS_URL: "http://x:1" }, 'current value is "http://x:1"'],
    [{ NATS_URL: "a:4222,,b" }, "NATS_URL"],
    [
      { GATEWAY_HOST: "not a host" },
      'GATEWAY_HOST must be a host name or IP address: current value is "not a host"',
    ],
    [
      { GATEWAY_SUBJECT: "levels.*" },
      'GATEWAY_SUBJECT must be a NATS subject without wildcards: current value is "levels.*"',
    ],
    [{ GATEWAY_DURABLE: "a.b" }, "GATEWAY_DURABLE must be a consumer name"],
    [
      { GATEWAY_LOG_LEVEL: "loud" },
      'GATEWAY_LOG_LEVEL must be one of debug, info, warn, error: current value is "loud"',
    ],
    [{ GATEWAY_CLIENT_BUFFER_BYTES: "0" }, "GATEWAY_CLIENT_BUFFER_BYTES must be between 1"],
    [
      { GATEWAY_DEAD_LETTER_SUBJECT: "levels.signals" },
      'GATEWAY_DEAD_LETTER_SUBJECT must differ from GATEWAY_SUBJECT, or invalid payloads would be relayed again: current value is "levels.signals"',
    ],
    [
      { GATEWAY_DEAD_LETTER_SUBJECT: "dead.>" },
      'GATEWAY_DEAD_LETTER_SUBJECT must be a NATS subject without wildcards: current value is "dead.>"',
    ],
    [{ GATEWAY_WORKERS: "0" }, 'GATEWAY_WORKERS must be between 1 and 256: current value is "0"'],
    [
      { GATEWAY_WORKERS: "many" },
      'GATEWAY_WORKERS must be a number of workers or "auto": current value is "many"',
    ],
    [
      { GATEWAY_MAX_PAYLOAD_BYTES: "1.5" },
      'Cannot parse GATEWAY_MAX_PAYLOAD_BYTES as an integer: current value is "1.5"',
    ],
  ];
  for (const [env, message] of cases) {
    assert.throws(() => parseConfig(env), (err) => {
      assert.ok(err instanceof ConfigError);
      assert.ok(err.message.includes(message), `${err.message} should include ${message}`);
      return true;
    });
  }
});

Deno.test("parseEnvFile reads KEY=value lines, comments, quotes and export", () => {
  const parsed = parseEnvFile(
    '# comment\nNATS_URL=nats://x:4222\nexport GATEWAY_PORT=9000 # trailing\nGATEWAY_SUBJECT="a.b"\n\n',
    ".env",
  );
  assert.deepEqual(parsed, {
    NATS_URL: "nats://x:4222",
    GATEWAY_PORT: "9000",
    GATEWAY_SUBJECT: "a.b",
  });
  assert.throws(() => parseEnvFile("good=1\nnot a line\n", "/etc/gateway/gateway.env"), {
    message:
      'Cannot parse line 2 of env file /etc/gateway/gateway.env: current value is "not a line"',
  });
});
