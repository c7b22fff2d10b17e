import assert from "node:assert/strict";
import { helpText, parseArgs, VARIABLE_HELP, versionText } from "../../lib/config/cli.ts";
import { ENV_VARIABLES, SETTINGS } from "../../lib/config/settings.ts";
import { VERSION } from "../../lib/version.ts";

Deno.test("parseArgs: each flag, --help before everything, unknown and conflicting ones refused", () => {
  const kind = (...args: string[]) => parseArgs(args).kind;
  assert.equal(kind(), "run");
  assert.equal(kind("--help"), "help");
  assert.equal(kind("-h"), "help");
  assert.equal(kind("--version"), "version");
  assert.equal(kind("--health-check"), "health-check");
  assert.equal(kind("--live-check"), "live-check");
  assert.equal(kind("--check-config"), "check-config");
  assert.equal(kind("--check-config", "--fd-limit=1024"), "check-config");
  assert.equal(kind("--check-config", "--live-check"), "invalid");
  assert.deepEqual(parseArgs([]), { kind: "run", fdLimit: 0 });
  assert.deepEqual(parseArgs(["--fd-limit=1024"]), { kind: "run", fdLimit: 1024 });
  assert.equal(kind("--fd-limit=x"), "invalid");
  assert.equal(kind("--live-check", "--help"), "help");
  assert.equal(kind("--bogus", "--version"), "version");
  assert.equal(kind("--health-check", "--live-check"), "invalid");
  // A name on Object.prototype is not a flag.
  assert.equal(kind("toString"), "invalid");
  const unknown = parseArgs(["--hlep"]);
  assert.ok(unknown.kind === "invalid" && unknown.message.includes('"--hlep"'));
});

Deno.test("helpText: usage, every flag, the exit codes, and every variable once", () => {
  const text = helpText();
  for (const flag of ["--help", "--version", "--check-config", "--health-check", "--live-check"]) {
    assert.match(text, new RegExp(`^  ${flag}`, "m"), flag);
  }
  for (const code of ["0", "1", "2"]) assert.match(text, new RegExp(`^  ${code}  \\S`, "m"));
  for (const name of ENV_VARIABLES) {
    assert.ok(VARIABLE_HELP[name], `${name} has no line in lib/config/cli.ts VARIABLE_HELP`);
    assert.equal(text.match(new RegExp(`^  ${name} `, "gm"))?.length, 1, name);
  }
  const listed = new Set<string>(ENV_VARIABLES);
  for (const name of Object.keys(VARIABLE_HELP)) assert.ok(listed.has(name), `${name} is not read`);
});

Deno.test("helpText: basic variables first, then tuning, each with the table's default", () => {
  const text = helpText();
  const tuning = text.indexOf("\nTuning:\n");
  for (const name of ENV_VARIABLES) {
    const at = text.search(new RegExp(`^  ${name} `, "m"));
    assert.equal(at < tuning, SETTINGS[name].level === "basic", name);
    const fallback = SETTINGS[name].default;
    if (fallback !== "") assert.ok(text.includes(`(default ${fallback})`), name);
  }
});

Deno.test("versionText: lib/version.ts's version, which deno.json states too", async () => {
  const config = JSON.parse(await Deno.readTextFile(new URL("../../deno.json", import.meta.url)));
  assert.equal(VERSION, config.version);
  assert.match(versionText(), new RegExp(`^gateway ${VERSION.replaceAll(".", "\\.")} `));
});
