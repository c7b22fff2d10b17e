/**
 * Writes docs/configuration.md from lib/config/settings.ts: `deno task docs:config`. The committed page
 * must equal what this renders (tests/unit/config_test.ts), so the table is never edited by hand.
 */
import {
  ENV_VARIABLES,
  REMOVED_VARIABLES,
  type Setting,
  type SettingName,
  SETTINGS,
} from "../lib/config/settings.ts";

export const DOC_PATH = new URL("../docs/configuration.md", import.meta.url);

function cell(text: string): string {
  return text.replaceAll("|", "\\|");
}

function rows(level: "basic" | "tuning"): string[] {
  return ENV_VARIABLES
    .filter((name) => SETTINGS[name].level === level)
    .map((name: SettingName) => {
      const setting: Setting<unknown> = SETTINGS[name];
      const fallback = setting.default === "" ? "—" : `\`${setting.default}\``;
      const notes = [setting.secret ? "A secret: shown as `[REDACTED]`." : ""].filter(Boolean);
      return `| \`${name}\` | ${fallback} | ${setting.group} | ${cell(setting.help)}.${
        notes.length > 0 ? ` ${notes.join(" ")}` : ""
      } |`;
    });
}

/** The page, as committed. */
export function renderConfigurationDoc(): string {
  const header = ["| Variable | Default | Group | What it does |", "| --- | --- | --- | --- |"];
  return [
    "# Configuration",
    "",
    "<!-- Generated from lib/config/settings.ts by `deno task docs:config`; do not edit by hand. -->",
    "",
    "The gateway reads environment variables, then an env file (`GATEWAY_ENV_FILE`, else `.env`",
    "when present) for those the environment leaves unset. An empty value counts as unset.",
    "`gateway --check-config` (or `deno task start --check-config`) checks a configuration as a",
    "start would, without contacting NATS or opening a port, and prints the effective settings as",
    "one JSON object (secrets `[REDACTED]`); it exits 0, or 2 when the configuration is bad.",
    "",
    "A `GATEWAY_*` name the gateway does not read stops it (exit 2) with the closest known name;",
    "an unknown `NATS_*` name is only warned about, since the `nats` CLI shares the prefix.",
    "",
    "## Basic",
    "",
    ...header,
    ...rows("basic"),
    "",
    "## Tuning",
    "",
    ...header,
    ...rows("tuning"),
    "",
    "## Removed names",
    "",
    "Each of these stops the gateway (exit 2) with what to write instead.",
    "",
    "| Variable | Instead |",
    "| --- | --- |",
    ...Object.entries(REMOVED_VARIABLES).map(([name, instead]) =>
      `| \`${name}\` | ${cell(instead)} |`
    ),
    "",
  ].join("\n");
}

if (import.meta.main) {
  await Deno.writeTextFile(DOC_PATH, renderConfigurationDoc());
  console.log(`wrote ${DOC_PATH.pathname}`);
}
