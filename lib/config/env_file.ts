/**
 * Where the configuration comes from: the process environment, then an env file filling what
 * the environment leaves unset. The file is parsed by dotenv's `parse()` (the npm build of the
 * card's `@std/dotenv`, which cannot be installed here); dotenv skips a line it cannot read
 * without a word, so every line is checked here first and a bad one is reported by its number,
 * never its text (it may hold a secret). Names the gateway does not read (`GATEWAY_PROT`,
 * `gateway_auth_tokens`) are found here with the closest known name; main.ts decides what to do.
 */
import { parse as parseDotenv } from "dotenv";
import { ConfigError } from "./config_error.ts";
import { ENV_VARIABLES, REMOVED_VARIABLES } from "./settings.ts";

export type Env = Record<string, string | undefined>;

/** A variable set somewhere that the gateway does not read. */
export interface UnknownVariable {
  readonly name: string;
  /** `environment`, or `env file PATH line N`. */
  readonly source: string;
  /** The known name nearest to it (fewest edits, case ignored). */
  readonly closest: string;
}

/** A variable set somewhere that the gateway no longer reads (lib/config/settings.ts REMOVED_VARIABLES). */
export interface RemovedVariable {
  readonly name: string;
  readonly source: string;
}

/** What the gateway was given, and what it was given that it does not read. */
export interface LoadedEnvironment {
  /** Every variable of ENV_VARIABLES: the environment's value, else the env file's. */
  readonly env: Env;
  /** The env file read, if any. */
  readonly envFilePath?: string;
  readonly unknown: readonly UnknownVariable[];
  /** Removed names that are set: each stops the gateway, saying what replaced it. */
  readonly removed: readonly RemovedVariable[];
  /** False when the permissions do not allow listing the environment's names (only the file was checked). */
  readonly environmentListed: boolean;
}

/** The edge to the process, so tests can give an environment and files of their own. */
export interface EnvironmentSource {
  get(name: string): string | undefined;
  /** Every name in the environment, or undefined when they cannot be listed. */
  names(): string[] | undefined;
  readTextFile(path: string): string;
}

const KNOWN: ReadonlySet<string> = new Set(ENV_VARIABLES);
/** Removed names are looked up one by one, so even a scoped --allow-env finds them. */
const REMOVED = Object.keys(REMOVED_VARIABLES);
const NAME_PATTERN = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** `NAME=rest`, with an optional `export `; NAME is checked separately for a clearer message. */
const ASSIGNMENT = /^\s*(?:export\s+)?([^\s=]+?)\s*=(.*)$/;

/**
 * The real process. Listing names needs full env permission (`Deno.env.toObject`); under the
 * start task's scoped `--allow-env` they cannot be listed (Deno also refuses
 * /proc/self/environ without --allow-all), so only the env file is checked there.
 */
export const processEnvironment: EnvironmentSource = {
  // Asked first: a variable outside a scoped --allow-env would throw, or prompt on a terminal.
  get: (name) =>
    Deno.permissions.querySync({ name: "env", variable: name }).state === "granted"
      ? Deno.env.get(name)
      : undefined,
  names: () => {
    if (Deno.permissions.querySync({ name: "env" }).state !== "granted") return undefined;
    return Object.keys(Deno.env.toObject());
  },
  readTextFile: (path) => Deno.readTextFileSync(path),
};

/** The environment, with values from the env file filling what it leaves unset. */
export function readEnvironment(source: EnvironmentSource = processEnvironment): Env {
  return loadEnvironment(source).env;
}

/**
 * Reads the environment and the env file (GATEWAY_ENV_FILE, else `.env` when present) and
 * finds the names in either that the gateway does not read. Throws ConfigError for an
 * unreadable or malformed file.
 */
export function loadEnvironment(
  source: EnvironmentSource = processEnvironment,
): LoadedEnvironment {
  const env: Env = {};
  for (const name of ENV_VARIABLES) env[name] = source.get(name);
  const environmentNames = source.names();
  const unknown = findUnknownVariables(environmentNames ?? [], () => "environment");
  const removed: RemovedVariable[] = REMOVED
    .filter((name) => source.get(name) !== undefined)
    .map((name) => ({ name, source: "environment" }));
  const file = readEnvFile(source, env.GATEWAY_ENV_FILE?.trim());
  if (file === undefined) {
    return { env, unknown, removed, environmentListed: environmentNames !== undefined };
  }
  for (const [name, value] of Object.entries(file.values)) {
    if (env[name] === undefined && KNOWN.has(name)) env[name] = value;
  }
  const fileSource = (name: string) => `env file ${file.path} line ${file.lines[name]}`;
  unknown.push(...findUnknownVariables(Object.keys(file.lines), fileSource));
  removed.push(
    ...REMOVED.filter((name) => name in file.lines).map((name) => ({
      name,
      source: fileSource(name),
    })),
  );
  return {
    env,
    envFilePath: file.path,
    unknown,
    removed,
    environmentListed: environmentNames !== undefined,
  };
}

interface EnvFile {
  readonly path: string;
  readonly values: Readonly<Record<string, string>>;
  /** The line where each name is (last) set. */
  readonly lines: Readonly<Record<string, number>>;
}

function readEnvFile(source: EnvironmentSource, explicitPath: string | undefined) {
  const path = explicitPath || ".env";
  let text: string;
  try {
    text = source.readTextFile(path);
  } catch (err) {
    if (!explicitPath && err instanceof Deno.errors.NotFound) return undefined;
    throw new ConfigError(
      `Cannot read GATEWAY_ENV_FILE: current value is "${path}" (${
        err instanceof Error ? err.message : String(err)
      })`,
      { cause: err },
    );
  }
  return parseEnvFile(text, path);
}

/**
 * Parses a dotenv file: `NAME=value` lines, `#` comments, optional `export `, values in single,
 * double or back quotes (which may span lines; `\n` in double quotes is a newline), and a
 * `# comment` after a value. Throws ConfigError naming the first bad line by number.
 */
export function parseEnvFile(text: string, path: string): EnvFile {
  const normalised = text.replace(/^\uFEFF/, "").replace(/\r\n?/g, "\n");
  const lines = checkEnvFileSyntax(normalised, path);
  const values: Record<string, string> = parseDotenv(normalised);
  for (const [name, line] of Object.entries(lines)) {
    // A line both readers should agree on; if dotenv disagrees, refuse rather than guess.
    if (values[name] === undefined) throw envFileError(path, line, "the line cannot be read");
  }
  const known = Object.fromEntries(Object.keys(lines).map((name) => [name, values[name]]));
  return { path, values: known, lines };
}

/** Checks every line, returning where each name is set; dotenv itself would skip a bad line. */
function checkEnvFileSyntax(text: string, path: string): Record<string, number> {
  const lines = text.split("\n");
  const found: Record<string, number> = {};
  for (let index = 0; index < lines.length; index++) {
    const line = lines[index];
    const trimmed = line.trim();
    if (trimmed === "" || trimmed.startsWith("#")) continue;
    const match = ASSIGNMENT.exec(line);
    if (!match) throw envFileError(path, index + 1, describeLineWithoutAssignment(trimmed));
    if (!NAME_PATTERN.test(match[1])) {
      throw envFileError(
        path,
        index + 1,
        "a variable name is letters, digits and _, and does not start with a digit",
      );
    }
    found[match[1]] = index + 1;
    index = checkValue(lines, index, match[2], path);
  }
  return found;
}

/** Checks the value that starts on line `index`; returns the index of the line where it ends. */
function checkValue(lines: string[], index: number, rest: string, path: string): number {
  const value = rest.trimStart();
  const quote = value[0];
  if (quote !== '"' && quote !== "'" && quote !== "`") {
    const hash = rest.indexOf("#");
    if (hash >= 0 && (hash === 0 || !/\s/.test(rest[hash - 1]))) {
      throw envFileError(
        path,
        index + 1,
        "an unquoted value holds '#', which starts a comment there; put the value in quotes",
      );
    }
    return index;
  }
  // The closing quote is the first one not escaped by a backslash, perhaps lines later.
  let text = value.slice(1);
  for (let end = index; end < lines.length; end++) {
    const close = findUnescaped(text, quote);
    if (close >= 0) {
      if (!/^\s*(?:#.*)?$/.test(text.slice(close + 1))) {
        throw envFileError(
          path,
          end + 1,
          "text follows the closing quote; only a # comment may follow it",
        );
      }
      return end;
    }
    text = lines[end + 1] ?? "";
  }
  throw envFileError(path, index + 1, `the value opened with ${quote} here is never closed`);
}

function findUnescaped(text: string, quote: string): number {
  for (let i = 0; i < text.length; i++) {
    if (text[i] === "\\") i++;
    else if (text[i] === quote) return i;
  }
  return -1;
}

/** Why a line without `=` is wrong; names it only when it is plainly a variable name. */
function describeLineWithoutAssignment(trimmed: string): string {
  const colon = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*:/.exec(trimmed);
  if (colon) {
    const name = colon[1];
    const shown = isVariableLike(name) ? name : "NAME";
    return `expected NAME=value, found "${shown}:"; write ${shown}=value`;
  }
  return "expected NAME=value";
}

function envFileError(path: string, line: number, why: string): ConfigError {
  return new ConfigError(
    `Cannot parse env file ${path}, line ${line}: ${why} (the line is not shown: it may hold a secret)`,
  );
}

/** Names that look meant for the gateway: its prefixes, or a known name in another case. */
function isVariableLike(name: string): boolean {
  const upper = name.toUpperCase();
  return KNOWN.has(upper) || upper.startsWith("GATEWAY_") || upper.startsWith("NATS_");
}

/**
 * Read by `deno task compile` (scripts/compile.ts), not by the gateway: an operator may well keep
 * them in the environment the gateway later runs in, so they are not reported as misspellings.
 */
const BUILD_TIME: ReadonlySet<string> = new Set([
  "GATEWAY_NATS_HOSTS",
  "GATEWAY_LISTEN_HOSTS",
  "GATEWAY_READ_PATHS",
  "GATEWAY_COMPILE_OUTPUT",
  "GATEWAY_COMPILE_TARGET",
]);

/** Unprefixed names the gateway reads (PORT): their near misses are checked too. */
const UNPREFIXED = ENV_VARIABLES.filter((n) => !n.startsWith("GATEWAY_") && !n.startsWith("NATS_"));

/**
 * Names meant for the gateway that it does not read: any GATEWAY_* or NATS_* (in any case) not
 * in ENV_VARIABLES, and PORT in another case or one typo away. Removed names are not here: they
 * are reported with their replacement (RemovedVariable).
 */
export function findUnknownVariables(
  names: Iterable<string>,
  sourceOf: (name: string) => string,
): UnknownVariable[] {
  const unknown: UnknownVariable[] = [];
  for (const name of names) {
    if (KNOWN.has(name) || BUILD_TIME.has(name) || name in REMOVED_VARIABLES) continue;
    const upper = name.toUpperCase();
    const meant = isVariableLike(name) || UNPREFIXED.some((k) => editDistance(upper, k) <= 1);
    if (meant) unknown.push({ name, source: sourceOf(name), closest: closestKnownName(name) });
  }
  return unknown;
}

/** The known variable nearest to `name`, case ignored; a cut-short name gets its whole one. */
export function closestKnownName(name: string): string {
  const upper = name.toUpperCase();
  const completions = ENV_VARIABLES.filter((known) => upper !== "" && known.startsWith(upper));
  if (completions.length > 0) {
    return completions.reduce((a, b) => (b.length < a.length ? b : a));
  }
  let best: string = ENV_VARIABLES[0];
  let bestDistance = Infinity;
  for (const known of ENV_VARIABLES) {
    const distance = editDistance(upper, known);
    if (distance < bestDistance) [best, bestDistance] = [known, distance];
  }
  return best;
}

/** Edits (insert, delete, replace, swap two neighbours) turning `a` into `b`. */
export function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array(b.length).fill(0)]);
  for (let j = 0; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.length][b.length];
}

/** One line for the log: what is wrong with `variable` and what to write instead; no value. */
export function describeUnknown(variable: UnknownVariable): string {
  const caseOnly = variable.name.toUpperCase() === variable.closest;
  return caseOnly
    ? `${variable.name} is not read: names are case-sensitive; write ${variable.closest}`
    : `${variable.name} is not a variable the gateway reads; did you mean ${variable.closest}?`;
}

/**
 * Whether an unknown name stops the gateway. GATEWAY_* is the gateway's own prefix: a name there
 * that it does not read is a misspelling whose setting would silently not apply (an auth token,
 * a limit), so it is an error, as nats-server's `unknown field` is. NATS_* is shared with the
 * `nats` CLI (NATS_CONTEXT, NATS_TIMEOUT, ...) and PORT with everything: those are warnings.
 */
export function isFatal(variable: UnknownVariable): boolean {
  return variable.name.toUpperCase().startsWith("GATEWAY_");
}

/**
 * Why the gateway must not start with these names, or undefined: every removed name, saying what
 * replaced it, and every unknown GATEWAY_* name, saying the closest known one.
 */
export function refuseUnknown(
  unknown: readonly UnknownVariable[],
  removed: readonly RemovedVariable[] = [],
): string | undefined {
  const reasons = [
    ...removed.map((v) =>
      `${v.name} (${v.source}) is no longer read: ${REMOVED_VARIABLES[v.name]}`
    ),
    ...unknown.filter(isFatal).map((v) => `${describeUnknown(v)} (${v.source})`),
  ];
  return reasons.length === 0 ? undefined : `${reasons.join("; ")} (values are not shown)`;
}
