import assert from "node:assert/strict";
import { helpText, parseArgs, VARIABLE_HELP, versionText } from "../../lib/cli.ts";
import { type Config, ENV_VARIABLES, parseConfig } from "../../lib/config.ts";
import { VERSION } from "../../lib/version.ts";

Deno.test("parseArgs: each flag, --help before everything, unknown and conflicting ones refused", () => {
  const kind = (...args: string[]) => parseArgs(args).kind;
  assert.equal(kind(), "run");
  assert.equal(kind("--help"), "help");
  assert.equal(kind("-h"), "help");
  assert.equal(kind("--version"), "version");
  assert.equal(kind("--health-check"), "health-check");
  assert.equal(kind("--live-check"), "live-check");
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
  for (const flag of ["--help", "--version", "--health-check", "--live-check"]) {
    assert.match(text, new RegExp(`^  ${flag}`, "m"), flag);
  }
  for (const code of ["0", "1", "2"]) assert.match(text, new RegExp(`^  ${code}  \\S`, "m"));
  for (const name of ENV_VARIABLES) {
    assert.ok(VARIABLE_HELP[name], `${name} has no line in lib/cli.ts VARIABLE_HELP`);
    assert.equal(text.match(new RegExp(`^  ${name} `, "gm"))?.length, 1, name);
  }
  const listed = new Set<string>(ENV_VARIABLES);
  for (const name of Object.keys(VARIABLE_HELP)) assert.ok(listed.has(name), `${name} is not read`);
});

/**
 * lib/config.ts names each variable at the start of its Config field's doc comment; the default
 * the help shows must be what parseConfig gives for an empty environment.
 */
Deno.test("helpText: each default shown is parseConfig's for an empty environment", async () => {
  const source = await Deno.readTextFile(new URL("../../lib/config.ts", import.meta.url));
  const defaults = parseConfig({}, 1) as unknown as Record<string, unknown>;
  const fields = /export interface Config \{([\s\S]*?)\n\}/.exec(source)?.[1] ?? "";
  let checked = 0;
  for (const [, comment, field] of fields.matchAll(/\/\*\*([\s\S]*?)\*\/\s*readonly (\w+)/g)) {
    const name = /^[\s*]*([A-Z][A-Z0-9_]+)/.exec(comment)?.[1];
    if (!name || !(name in VARIABLE_HELP) || !(field in defaults)) continue;
    const value = defaults[field as keyof Config];
    if (Array.isArray(value) || typeof value === "object") continue;
    assert.equal(VARIABLE_HELP[name][0], String(value), `${name} (Config.${field})`);
    checked++;
  }
  assert.ok(checked >= 25, `only ${checked} defaults checked`);
});

Deno.test("versionText: lib/version.ts's version, which deno.json states too", async () => {
  const config = JSON.parse(await Deno.readTextFile(new URL("../../deno.json", import.meta.url)));
  assert.equal(VERSION, config.version);
  assert.match(versionText(), new RegExp(`^gateway ${VERSION.replaceAll(".", "\\.")} `));
});
