import assert from "node:assert/strict";
import { ConfigError } from "../../lib/config/config_error.ts";
import {
  DEFAULT_ROUTES,
  MAX_VALUE_LENGTH,
  parseRoutes,
  RESERVED_PATHS,
  routeReceives,
  RouteTable,
  valueProblem,
} from "../../lib/relay/route_table.ts";

const LEVELS = "/ws/levels/{symbol}=levels.{symbol}.signals";

Deno.test("parseRoutes reads the default, fixed, templated and @STREAM entries", () => {
  assert.deepEqual(parseRoutes(DEFAULT_ROUTES), [{
    path: "/ws/stream",
    subject: "levels.signals",
    stream: null,
    param: null,
    filterSubject: "levels.signals",
  }]);
  const routes = parseRoutes(` /ws/flow = market.flow@MARKET-1 ,${LEVELS}`);
  assert.deepEqual(routes, [
    {
      path: "/ws/flow",
      subject: "market.flow",
      stream: "MARKET-1",
      param: null,
      filterSubject: "market.flow",
    },
    {
      path: "/ws/levels/{symbol}",
      subject: "levels.{symbol}.signals",
      stream: null,
      param: "symbol",
      filterSubject: "levels.*.signals",
    },
  ]);
  assert.ok(routes.every((route) => Object.isFrozen(route)));
  assert.equal(parseRoutes("/{x}/a={x}")[0].filterSubject, "*");
});

/** Asserts parseRoutes(raw) throws a ConfigError whose message starts with `start` and matches `why`. */
function assertRefused(raw: string, start: string, why: RegExp, variable?: string): void {
  assert.throws(() => parseRoutes(raw, variable), (err) => {
    assert.ok(err instanceof ConfigError, String(err));
    assert.ok(err.message.startsWith(start), `"${err.message}" should start with ${start}`);
    assert.match(err.message, why);
    return true;
  });
}

Deno.test("parseRoutes names the entry in every error, with why", () => {
  const cases: [string, string, RegExp][] = [
    ["/ws/a=a,,/ws/b=b", 'GATEWAY_ROUTES entry 2 "": ', /the entry is empty/],
    ["/ws/a=a,", 'GATEWAY_ROUTES entry 2 "": ', /trailing comma/],
    ["/ws/flow", 'GATEWAY_ROUTES entry 1 "/ws/flow": ', /no "=": write PATH=SUBJECT\[@STREAM\]/],
    ["=a.b", 'GATEWAY_ROUTES entry 1 "=a.b": ', /the path before "=" is empty/],
    ["ws/flow=a", 'GATEWAY_ROUTES entry 1 "ws/flow=a": ', /must start with "\/"/],
    ["/ws/a=a,/ws/a=b", 'GATEWAY_ROUTES entry 2 "/ws/a=b": ', /duplicates .* entry 1/],
    ["/ws/a/{x}=a.{x},/ws/a/{y}=b.{y}", "GATEWAY_ROUTES entry 2", /same requests as entry 1/],
    ["/ws/a/{x}=a.{x},/ws/a/SPY=b", "GATEWAY_ROUTES entry 2", /same requests as entry 1/],
    ["/ws/a/SPY=b,/ws/{x}/SPY=a.{x}", "GATEWAY_ROUTES entry 2", /same requests as entry 1/],
    ["/health=a", 'GATEWAY_ROUTES entry 1 "/health=a": ', /served by the gateway itself/],
    ["/=a", "GATEWAY_ROUTES entry 1", /reserved: \/, \/health/],
    ["/{name}=a.{name}", "GATEWAY_ROUTES entry 1", /served by the gateway itself/],
    ["/ws/a=levels.*", "GATEWAY_ROUTES entry 1", /holds a wildcard \(\* or >\)/],
    ["/ws/a=levels.>", "GATEWAY_ROUTES entry 1", /wildcard/],
    ["/ws/a/{x}=a.{x}.*", "GATEWAY_ROUTES entry 1", /wildcard/],
    ["/ws/a=lev els", "GATEWAY_ROUTES entry 1", /holds whitespace/],
    ["/ws/a=a\tb", "GATEWAY_ROUTES entry 1", /holds whitespace/],
    ["/ws/a=", "GATEWAY_ROUTES entry 1", /the subject after "=" is empty/],
    ["/ws/a=a..b", "GATEWAY_ROUTES entry 1", /"a\.\.b" has an empty token/],
    ["/ws/a=.a", "GATEWAY_ROUTES entry 1", /empty token/],
    ["/ws/a=a.", "GATEWAY_ROUTES entry 1", /empty token/],
    ["/ws/a/x{s}=a.{s}", "GATEWAY_ROUTES entry 1", /"x\{s\}": a \{name\} must be a whole path seg/],
    ["/ws/a/{s}=a.x{s}", "GATEWAY_ROUTES entry 1", /must be a whole subject token/],
    ["/ws/a/{s=a.{s}", "GATEWAY_ROUTES entry 1", /whole path segment/],
    ["/ws/{a}/{b}=x.{a}.{b}", "GATEWAY_ROUTES entry 1", /the path has more than one \{…\}/],
    ["/ws/{a}=x.{a}.{a}", "GATEWAY_ROUTES entry 1", /the subject has more than one \{…\}/],
    ["/ws/{a}=x.a", "GATEWAY_ROUTES entry 1", /the path has \{a\} but the subject has no/],
    ["/ws/a=x.{a}", "GATEWAY_ROUTES entry 1", /the subject has \{a\} but the path has no/],
    ["/ws/{a}=x.{b}", "GATEWAY_ROUTES entry 1", /names \{a\} but the subject \{b\}/],
    ["/ws/{1a}=x.{1a}", "GATEWAY_ROUTES entry 1", /"\{1a\}": a name is a letter or _/],
    ["/ws/{}=x.{}", "GATEWAY_ROUTES entry 1", /"\{\}": a name/],
    ["/ws/a=x@", "GATEWAY_ROUTES entry 1", /the stream "" after "@" must be a stream name/],
    ["/ws/a=x@A.B", "GATEWAY_ROUTES entry 1", /the stream "A\.B"/],
    ["/ws//a=x", "GATEWAY_ROUTES entry 1", /empty segment/],
    ["/ws/a/=x", "GATEWAY_ROUTES entry 1", /trailing "\/"/],
    ["/ws/../a=x", "GATEWAY_ROUTES entry 1", /the path segment "\.\."/],
    ["/ws/a%20b=x", "GATEWAY_ROUTES entry 1", /the path segment "a%20b"/],
    ["/ws/a?b=x", "GATEWAY_ROUTES entry 1", /the path segment "a\?b"/],
  ];
  for (const [raw, start, why] of cases) assertRefused(raw, start, why);
  assertRefused(
    "",
    'GATEWAY_ROUTES must list at least one route PATH=SUBJECT[@STREAM], e.g. /ws/stream=levels.signals: current value is ""',
    /./,
  );
  assertRefused(" ", "GATEWAY_ROUTES must list at least one route", /./);
  assertRefused("x=y", 'OTHER entry 1 "x=y"', /./, "OTHER");
});

Deno.test("parseRoutes refuses every reserved path and allows paths beside them", () => {
  for (const path of RESERVED_PATHS) {
    assertRefused(`${path}=a`, "GATEWAY_ROUTES entry 1", /reserved/);
  }
  assert.equal(parseRoutes("/health/x=a,/metricsz=b,/{x}/y=c.{x}").length, 3);
  // `/{x}` cannot match /client.js: "client.js" is not a valid value (it holds a dot).
  assertRefused("/{x}=c.{x}", "GATEWAY_ROUTES entry 1", /reserved/);
});

Deno.test("RouteTable.match: fixed routes exactly, templated routes by one whole segment", () => {
  const table = new RouteTable(parseRoutes(`/ws/stream=levels.signals,${LEVELS}`));
  const [stream, levels] = table.routes;
  assert.deepEqual(table.match("/ws/stream"), {
    kind: "route",
    route: stream,
    value: null,
    subject: "levels.signals",
  });
  assert.deepEqual(table.match("/ws/levels/SPY"), {
    kind: "route",
    route: levels,
    value: "SPY",
    subject: "levels.SPY.signals",
  });
  assert.deepEqual(table.match("/ws/levels/BRK-B_1"), {
    kind: "route",
    route: levels,
    value: "BRK-B_1",
    subject: "levels.BRK-B_1.signals",
  });
  // A trailing slash, more or fewer segments, other literals: no route (404).
  for (
    const path of [
      "/ws/stream/",
      "/ws/streams",
      "/ws/levels",
      "/ws/levels/SPY/",
      "/ws/levels/SPY/x",
      "/ws/other/SPY",
      "/",
      "/health",
      "/WS/stream",
    ]
  ) {
    assert.deepEqual(table.match(path), { kind: "none" }, path);
  }
});

Deno.test("RouteTable.match: an invalid template value is 'invalid', percent-decoded first", () => {
  const table = new RouteTable(parseRoutes(LEVELS));
  const route = table.routes[0];
  const cases: [string, RegExp][] = [
    ["/ws/levels/", /empty/],
    ["/ws/levels/a.b", /"\."/],
    ["/ws/levels/*", /"\*"/],
    ["/ws/levels/>", /">"/],
    ["/ws/levels/%2A", /"\*"/],
    ["/ws/levels/%3E", /">"/],
    ["/ws/levels/a%2Eb", /"\."/],
    ["/ws/levels/a%20b", /whitespace/],
    ["/ws/levels/a%09b", /whitespace/],
    ["/ws/levels/a%00b", /control/],
    ["/ws/levels/%C2%85", /whitespace or control/],
    ["/ws/levels/%E0%A4%A", /percent-encoding/],
    ["/ws/levels/%ZZ", /percent-encoding/],
    [`/ws/levels/${"A".repeat(MAX_VALUE_LENGTH + 1)}`, /longer than 64 characters/],
  ];
  for (const [path, reason] of cases) {
    const match = table.match(path);
    assert.equal(match.kind, "invalid", path);
    assert.equal(match.kind === "invalid" && match.route, route);
    assert.match(match.kind === "invalid" ? match.reason : "", reason, path);
  }
  assert.deepEqual(table.match(`/ws/levels/${"A".repeat(MAX_VALUE_LENGTH)}`).kind, "route");
  // A decoded value that is a valid token is accepted as decoded.
  assert.deepEqual(table.match("/ws/levels/S%50Y"), {
    kind: "route",
    route,
    value: "SPY",
    subject: "levels.SPY.signals",
  });
  assert.equal(valueProblem("é"), undefined, "non-ASCII tokens are valid NATS tokens");
});

Deno.test("RouteTable.match: the value may sit in any segment", () => {
  const table = new RouteTable(parseRoutes("/ws/{venue}/book=book.{venue}"));
  assert.deepEqual(table.match("/ws/XNAS/book"), {
    kind: "route",
    route: table.routes[0],
    value: "XNAS",
    subject: "book.XNAS",
  });
  assert.equal(table.match("/ws/XNAS/trades").kind, "none");
});

Deno.test("RouteTable.valueOf gives a message subject's value, or null when it does not fit", () => {
  const table = new RouteTable(parseRoutes(`/ws/stream=levels.signals,${LEVELS}`));
  const [stream, levels] = table.routes;
  assert.equal(table.valueOf(levels, "levels.SPY.signals"), "SPY");
  assert.equal(table.valueOf(levels, "levels.QQQ.signals"), "QQQ");
  for (
    const subject of ["levels.SPY.flow", "levels.signals", "levels.SPY.signals.x", "x.SPY.signals"]
  ) {
    assert.equal(table.valueOf(levels, subject), null, subject);
  }
  // In the filter, but no client could ask for it: not held.
  assert.equal(table.valueOf(levels, `levels.${"A".repeat(MAX_VALUE_LENGTH + 1)}.signals`), null);
  assert.equal(table.valueOf(stream, "levels.signals"), null, "a fixed route has no value");
});

Deno.test("RouteTable.subjectFor gives a value's subject and refuses what match never gives", () => {
  const table = new RouteTable(parseRoutes(`/ws/stream=levels.signals,${LEVELS}`));
  const [stream, levels] = table.routes;
  assert.equal(table.subjectFor(levels, "SPY"), "levels.SPY.signals");
  assert.equal(table.subjectFor(stream, null), "levels.signals");
  assert.throws(() => table.subjectFor(levels, "a.b"), RangeError);
  assert.throws(() => table.subjectFor(levels, null), RangeError);
  assert.throws(() => table.subjectFor(stream, "SPY"), RangeError);
  // A route from elsewhere (not given to this table) still works.
  const other = parseRoutes("/ws/x/{v}=x.{v}")[0];
  assert.equal(table.subjectFor(other, "1"), "x.1");
  assert.equal(table.valueOf(other, "x.1"), "1");
});

Deno.test("routeReceives: whether a route's consumer filter takes a subject", () => {
  const [stream, levels] = parseRoutes(`/ws/stream=levels.signals,${LEVELS}`);
  assert.ok(routeReceives(stream, "levels.signals"));
  assert.ok(!routeReceives(stream, "levels.signals.x"));
  assert.ok(routeReceives(levels, "levels.anything.signals"));
  assert.ok(!routeReceives(levels, "levels.signals"));
});
