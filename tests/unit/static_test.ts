/** The project's own checks, so the one test command covers them: fmt, lint, type check. */
import assert from "node:assert/strict";

const root = new URL("../..", import.meta.url).pathname;

async function deno(...args: string[]): Promise<void> {
  const { success, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: root,
    env: { NO_COLOR: "1" },
  }).output();
  const decoder = new TextDecoder();
  assert.ok(
    success,
    `deno ${args.join(" ")} failed:\n${decoder.decode(stdout)}${decoder.decode(stderr)}`,
  );
}

Deno.test("deno fmt --check is clean", () => deno("fmt", "--check"));
Deno.test("deno lint is clean", () => deno("lint"));
Deno.test("deno check is clean", () =>
  deno("check", "main.ts", "lib/", "tests/", "scripts/", "bench/run.ts"));
Deno.test("the version in /health matches deno.json", async () => {
  const { VERSION } = await import("../../lib/version.ts");
  const config = JSON.parse(await Deno.readTextFile(`${root}deno.json`));
  assert.equal(VERSION, config.version);
});
