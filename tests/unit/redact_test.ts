import assert from "node:assert/strict";
import { REDACTED, redactUrl } from "../../lib/config/redact.ts";

Deno.test("redactUrl leaves a list without credentials unchanged", () => {
  for (const list of ["nats://a:4222", "a:4222, b:4223,tls://c:4224", "nats://[::1]:4222", ""]) {
    assert.equal(redactUrl(list), list);
  }
});

Deno.test("redactUrl hides a password but shows the user", () => {
  assert.equal(redactUrl("nats://gw:s3cret@a:4222"), `nats://gw:${REDACTED}@a:4222`);
  assert.equal(redactUrl("gw:s3cret@a:4222"), `gw:${REDACTED}@a:4222`);
  assert.equal(redactUrl("tls://gw:p%40ss%3Aw%2Frd@a:4222"), `tls://gw:${REDACTED}@a:4222`);
});

Deno.test("redactUrl hides a token whole", () => {
  assert.equal(redactUrl("nats://t0ken@a:4222"), `nats://${REDACTED}@a:4222`);
});

Deno.test("redactUrl redacts every entry of a list", () => {
  assert.equal(
    redactUrl("nats://gw:one@a:4222, nats://gw:two@b:4222,c:4222,tok@d:4222"),
    `nats://gw:${REDACTED}@a:4222, nats://gw:${REDACTED}@b:4222,c:4222,${REDACTED}@d:4222`,
  );
  assert.equal(
    redactUrl("a:4222,nats://gw:one@b:4222"),
    `a:4222,nats://gw:${REDACTED}@b:4222`,
  );
});

Deno.test("redactUrl never shows part of a password holding an unencoded , @ / or ://", () => {
  // Not covered: an unencoded `@` followed later by `,` reads as a host, as config reads it.
  const secrets = ["Qx,Zy", "Qx@Zy", "Qx/Zy@Wv", "Qx://Zy", "Qx,Zy,Wv", "Qx@@Zy", ",@Qx", "Qx,,Zy"];
  for (const secret of secrets) {
    for (const list of [`nats://gw:${secret}@h:4222`, `h0:1,nats://gw:${secret}@h:4222,h2:3`]) {
      const shown = redactUrl(list);
      assert.ok(shown.includes(REDACTED), `${list} -> ${shown}`);
      for (const piece of secret.split(/[,@/:]/).filter((p) => p.length > 0)) {
        assert.ok(!shown.includes(piece), `${JSON.stringify(piece)} of ${list} shown: ${shown}`);
      }
    }
  }
});
