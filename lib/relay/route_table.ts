/**
 * The route table: which request path relays which NATS subject. Parses `PATH=SUBJECT[@STREAM]`
 * entries (GATEWAY_ROUTES) and matches a request's path to a route and its concrete subject.
 * Pure: no I/O, no NATS; the stream of a route without `@STREAM` is looked up at startup.
 */
import { ConfigError } from "../config/config_error.ts";
import { subjectMatches } from "../wildcard.ts";

/** One configured route: `PATH=SUBJECT[@STREAM]`. */
export interface RouteSpec {
  /** As configured, e.g. "/ws/levels/{symbol}". */
  readonly path: string;
  /** As configured, e.g. "levels.{symbol}.signals". */
  readonly subject: string;
  /** Explicit @STREAM, or null: found from the subject at startup. */
  readonly stream: string | null;
  /** "symbol" for a templated route, else null. */
  readonly param: string | null;
  /** Subject with {param} replaced by "*" (equal to subject when fixed): the consumer's filter. */
  readonly filterSubject: string;
}

/** GATEWAY_ROUTES when unset (lib/config/config.ts then adds today's explicit stream, LEVEL_SIGNALS). */
export const DEFAULT_ROUTES = "/ws/stream=levels.signals";

/**
 * Longest template value accepted, in UTF-16 code units (characters, for the symbols and names a
 * template holds): one NATS subject token, kept short so a client cannot make the gateway hold
 * long subjects or keys.
 */
export const MAX_VALUE_LENGTH = 64;

/** Paths the gateway serves itself; no route may use them (nor a template that would match one). */
export const RESERVED_PATHS: readonly string[] = [
  "/",
  "/health",
  "/livez",
  "/readyz",
  "/metrics",
  "/client.js",
];

export type RouteMatch =
  | {
    readonly kind: "route";
    readonly route: RouteSpec;
    /** The template value, or null for a fixed route. */
    readonly value: string | null;
    /** The concrete subject this request relays. */
    readonly subject: string;
  }
  /** A templated route's value is not a valid subject token: 400 before any upgrade. */
  | { readonly kind: "invalid"; readonly route: RouteSpec; readonly reason: string }
  /** No route serves this path: 404. */
  | { readonly kind: "none" };

const PARAM_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const STREAM_NAME = /^[A-Za-z0-9_-]+$/;
/** A `{name}` placeholder, the whole of a path segment or subject token. */
const PLACEHOLDER = /^\{([^{}]*)\}$/;
/**
 * Characters of a literal path segment: those a URL keeps as written (RFC 3986 pchar without
 * `%`, `,` and `=`), so a route compares equal to `new URL(request.url).pathname`.
 */
const PATH_SEGMENT = /^[A-Za-z0-9._~!$&'()*+;:@-]+$/;
// deno-lint-ignore no-control-regex
const CONTROL_OR_SPACE = /[\s\x00-\x1f\x7f]/u;

/**
 * Why `value` cannot fill a template, or undefined when it can: a NATS subject token of 1 to
 * MAX_VALUE_LENGTH characters without `.`, `*`, `>`, whitespace or control characters.
 * The reason never repeats the value (it may be sent back to the client).
 */
export function valueProblem(value: string): string | undefined {
  if (value === "") return "the value is empty";
  if (value.length > MAX_VALUE_LENGTH) {
    return `the value is longer than ${MAX_VALUE_LENGTH} characters`;
  }
  if (/[.*>]/.test(value)) return 'the value holds ".", "*" or ">" (not one subject token)';
  if (CONTROL_OR_SPACE.test(value) || /\p{Cc}/u.test(value)) {
    return "the value holds whitespace or control characters";
  }
  return undefined;
}

/** Whether a route's consumer filter takes `subject` (`*` matches any one token). */
export function routeReceives(route: RouteSpec, subject: string): boolean {
  return subjectMatches(route.filterSubject, subject);
}

/**
 * Parses a comma-separated list of `PATH=SUBJECT[@STREAM]` entries; throws ConfigError naming
 * the entry (`GATEWAY_ROUTES entry 2 "/ws/flow=…": why`). Paths must not overlap: no two routes
 * (fixed or templated) may serve the same request.
 */
export function parseRoutes(raw: string, variable = "GATEWAY_ROUTES"): RouteSpec[] {
  if (raw.trim() === "") {
    throw new ConfigError(
      `${variable} must list at least one route PATH=SUBJECT[@STREAM], e.g. ${DEFAULT_ROUTES}: current value is "${raw}"`,
    );
  }
  const routes: RouteSpec[] = [];
  raw.split(",").map((entry) => entry.trim()).forEach((entry, index) => {
    const where = `${variable} entry ${index + 1} "${entry}"`;
    const route = parseEntry(entry, where);
    const earlier = routes.findIndex((other) => pathsOverlap(other.path, route.path));
    if (earlier >= 0) {
      const what = routes[earlier].path === route.path
        ? "duplicates the path of"
        : "would serve the same requests as";
      throw new ConfigError(
        `${where}: the path ${what} entry ${earlier + 1} ("${
          routes[earlier].path
        }"); each request must have one route`,
      );
    }
    routes.push(route);
  });
  return routes;
}

type Fail = (why: string) => never;

function parseEntry(entry: string, where: string): RouteSpec {
  const fail: Fail = (why) => {
    throw new ConfigError(`${where}: ${why}`);
  };
  if (entry === "") fail("the entry is empty (two commas in a row, or a trailing comma?)");
  const equals = entry.indexOf("=");
  if (equals < 0) fail('no "=": write PATH=SUBJECT[@STREAM], e.g. /ws/flow=market.flow');
  const path = entry.slice(0, equals).trim();
  const target = entry.slice(equals + 1).trim();
  const at = target.lastIndexOf("@");
  const subject = (at < 0 ? target : target.slice(0, at)).trim();
  const stream = at < 0 ? null : target.slice(at + 1).trim();
  const pathParam = checkPath(path, fail);
  const subjectParam = checkSubject(subject, fail);
  checkParams(pathParam, subjectParam, fail);
  if (stream !== null && !STREAM_NAME.test(stream)) {
    fail(`the stream "${stream}" after "@" must be a stream name (letters, digits, _ and -)`);
  }
  return Object.freeze({
    path,
    subject,
    stream,
    param: pathParam,
    filterSubject: pathParam === null ? subject : subject.replace(`{${pathParam}}`, "*"),
  });
}

/** Validates the path side; returns the template's name, or null for a fixed path. */
function checkPath(path: string, fail: Fail): string | null {
  if (path === "") fail('the path before "=" is empty');
  if (!path.startsWith("/")) fail(`the path "${path}" must start with "/"`);
  if (RESERVED_PATHS.some((reserved) => pathsOverlap(reserved, path))) {
    fail(
      `the path "${path}" is served by the gateway itself (reserved: ${RESERVED_PATHS.join(", ")})`,
    );
  }
  const names: string[] = [];
  for (const segment of path.slice(1).split("/")) {
    if (segment.includes("{") || segment.includes("}")) {
      names.push(placeholderName(segment, "path segment", fail));
    } else if (segment === "") {
      fail(`the path "${path}" has an empty segment ("//" or a trailing "/")`);
    } else if (segment === "." || segment === ".." || !PATH_SEGMENT.test(segment)) {
      fail(
        `the path segment "${segment}" must be letters, digits and -._~!$&'()*+;:@ (no "." or ".." alone, no % or spaces)`,
      );
    }
  }
  if (names.length > 1) fail("the path has more than one {…}: a route binds one segment");
  return names[0] ?? null;
}

/** Validates the subject side; returns the template's name, or null for a fixed subject. */
function checkSubject(subject: string, fail: Fail): string | null {
  if (subject === "") fail('the subject after "=" is empty');
  if (CONTROL_OR_SPACE.test(subject)) fail(`the subject "${subject}" holds whitespace`);
  if (/[*>]/.test(subject)) {
    fail(
      `the subject "${subject}" holds a wildcard (* or >): a route relays one subject, or one per value of a {name} token`,
    );
  }
  const names: string[] = [];
  for (const token of subject.split(".")) {
    if (token === "") {
      fail(`the subject "${subject}" has an empty token (a leading, trailing or double ".")`);
    }
    if (token.includes("{") || token.includes("}")) {
      names.push(placeholderName(token, "subject token", fail));
    }
  }
  if (names.length > 1) fail("the subject has more than one {…}: a route binds one token");
  return names[0] ?? null;
}

function placeholderName(part: string, what: string, fail: Fail): string {
  const name = PLACEHOLDER.exec(part)?.[1];
  if (name === undefined) fail(`"${part}": a {name} must be a whole ${what}`);
  if (!PARAM_NAME.test(name)) {
    fail(`"{${name}}": a name is a letter or _ then letters, digits or _`);
  }
  return name;
}

function checkParams(pathParam: string | null, subjectParam: string | null, fail: Fail): void {
  if (pathParam === subjectParam) return;
  if (subjectParam === null) fail(`the path has {${pathParam}} but the subject has no {…} token`);
  if (pathParam === null) fail(`the subject has {${subjectParam}} but the path has no {…} segment`);
  fail(`the path names {${pathParam}} but the subject {${subjectParam}}: use one name on both`);
}

/**
 * Whether one request path could match both route paths: same number of segments, and each pair
 * of segments equal, or one a template the other's literal could fill (a template matches any).
 */
function pathsOverlap(a: string, b: string): boolean {
  const left = a.split("/");
  const right = b.split("/");
  return left.length === right.length && left.every((segment, i) => {
    const other = right[i];
    if (segment === other) return true;
    const leftTemplate = PLACEHOLDER.test(segment);
    const rightTemplate = PLACEHOLDER.test(other);
    if (leftTemplate && rightTemplate) return true;
    if (leftTemplate) return valueProblem(other) === undefined;
    if (rightTemplate) return valueProblem(segment) === undefined;
    return false;
  });
}

/** A templated route split for matching: its path segments and where its value sits. */
interface Template {
  readonly route: RouteSpec;
  readonly segments: readonly string[];
  readonly segmentIndex: number;
  readonly tokens: readonly string[];
  readonly tokenIndex: number;
}

function templateOf(route: RouteSpec): Template {
  const placeholder = `{${route.param}}`;
  const segments = route.path.split("/");
  const tokens = route.subject.split(".");
  return {
    route,
    segments,
    segmentIndex: segments.indexOf(placeholder),
    tokens,
    tokenIndex: tokens.indexOf(placeholder),
  };
}

/**
 * The routes, ready for matching. Give it routes from parseRoutes (which rejects overlapping
 * paths); matching then has at most one answer.
 *
 * Matching compares against `new URL(request.url).pathname`: a fixed path must be equal
 * (`/ws/stream/`, with its trailing slash, is "none"); a templated path must have as many
 * segments, equal literal segments, and a value segment that, percent-decoded, is a valid
 * subject token (else "invalid"). `/ws/levels/` (an empty value) is "invalid".
 */
export class RouteTable {
  readonly routes: readonly RouteSpec[];
  readonly #fixed = new Map<string, RouteSpec>();
  readonly #templates = new Map<RouteSpec, Template>();

  constructor(routes: readonly RouteSpec[]) {
    this.routes = Object.freeze([...routes]);
    for (const route of routes) {
      if (route.param === null) this.#fixed.set(route.path, route);
      else this.#templates.set(route, templateOf(route));
    }
  }

  match(pathname: string): RouteMatch {
    const fixed = this.#fixed.get(pathname);
    if (fixed) return { kind: "route", route: fixed, value: null, subject: fixed.subject };
    const segments = pathname.split("/");
    for (const template of this.#templates.values()) {
      if (!sameLiterals(template.segments, segments, template.segmentIndex)) continue;
      return matchValue(template, segments[template.segmentIndex]);
    }
    return { kind: "none" };
  }

  /**
   * For a message of a templated route's filter: the value its token holds ("SPY" for
   * levels.SPY.signals), or null when the subject does not fit (other literal tokens, or a token
   * no client could ask for). Always null for a fixed route, which has no value.
   */
  valueOf(route: RouteSpec, subject: string): string | null {
    if (route.param === null) return null;
    const template = this.#template(route);
    const tokens = subject.split(".");
    if (!sameLiterals(template.tokens, tokens, template.tokenIndex)) return null;
    const value = tokens[template.tokenIndex];
    return valueProblem(value) === undefined ? value : null;
  }

  /**
   * The concrete subject of a route for one value: the subject itself for a fixed route (value
   * null). Throws RangeError for a value a templated route cannot take: a caller's bug, since
   * match() and valueOf() only give valid ones.
   */
  subjectFor(route: RouteSpec, value: string | null): string {
    if (route.param === null) {
      if (value !== null) throw new RangeError(`route "${route.path}" takes no value`);
      return route.subject;
    }
    const problem = value === null ? "no value given" : valueProblem(value);
    if (problem !== undefined) {
      throw new RangeError(`route "${route.path}" cannot take that value: ${problem}`);
    }
    const template = this.#template(route);
    return template.tokens.map((token, i) => i === template.tokenIndex ? value : token).join(".");
  }

  #template(route: RouteSpec): Template {
    return this.#templates.get(route) ?? templateOf(route);
  }
}

/** Whether `actual` has as many parts as `expected` and equals it everywhere but `skip`. */
function sameLiterals(
  expected: readonly string[],
  actual: readonly string[],
  skip: number,
): boolean {
  return expected.length === actual.length &&
    expected.every((part, i) => i === skip || part === actual[i]);
}

function matchValue(template: Template, segment: string): RouteMatch {
  const route = template.route;
  let value: string;
  try {
    value = decodeURIComponent(segment);
  } catch {
    return { kind: "invalid", route, reason: "the value is not valid percent-encoding" };
  }
  const problem = valueProblem(value);
  if (problem !== undefined) return { kind: "invalid", route, reason: problem };
  const subject = template.tokens
    .map((token, i) => i === template.tokenIndex ? value : token)
    .join(".");
  return { kind: "route", route, value, subject };
}
