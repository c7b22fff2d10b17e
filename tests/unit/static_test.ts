/**
 * The version the gateway reports matches the package's. fmt, lint and the type check are not
 * tests: `deno task ok` runs them as their own CI step, so the suite does not load the machine
 * with a whole-tree `deno check` while timing-sensitive tests run.
 */
import assert from "node:assert/strict";

const root = new URL("../..", import.meta.url).pathname;

Deno.test("the version in /health matches deno.json", async () => {
  const { VERSION } = await import("../../lib/version.ts");
  const config = JSON.parse(await Deno.readTextFile(`${root}deno.json`));
  assert.equal(VERSION, config.version);
});
