/** The `/client.js` the gateway embeds: built from client/gateway_client.ts, never stale. */
import assert from "node:assert/strict";
import { CLIENT_JS } from "../../lib/http/client_bundle.ts";

Deno.test("client bundle: lib/http/client_bundle.ts is what a fresh build writes", async () => {
  // A subprocess, because Deno.bundle needs --unstable-bundle, which `deno test` does not pass.
  const { success, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--unstable-bundle", "--allow-read", "scripts/build_client.ts", "--print"],
    cwd: new URL("../../", import.meta.url),
  }).output();
  const decoder = new TextDecoder();
  assert.ok(success, decoder.decode(stderr));
  const committed = await Deno.readTextFile(
    new URL("../../lib/http/client_bundle.ts", import.meta.url),
  );
  assert.ok(
    decoder.decode(stdout) === committed,
    "lib/http/client_bundle.ts is stale: run `deno task build:client`",
  );
});

Deno.test("client bundle: plain JavaScript that imports nothing and stays small", async () => {
  assert.doesNotMatch(CLIENT_JS, /^\s*import[\s{*"']/m, "no static import");
  assert.doesNotMatch(CLIENT_JS, /\bimport\s*\(|\brequire\s*\(/, "no dynamic import or require");
  assert.ok(CLIENT_JS.length < 16_384, `${CLIENT_JS.length} bytes`);
  // It loads on its own as an ES module (a type annotation left behind would not parse).
  const url = `data:text/javascript;base64,${
    btoa(String.fromCharCode(...new TextEncoder().encode(CLIENT_JS)))
  }`;
  const module = await import(url);
  assert.equal(typeof module.connectGateway, "function");
  assert.equal(typeof module.GatewayClient, "function");
  assert.throws(() => new module.GatewayClient({ url: "/relative" }), TypeError);
});
