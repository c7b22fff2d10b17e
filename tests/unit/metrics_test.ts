/**
 * The metrics registry (lib/observe/metrics.ts): counters, gauges, histograms and info metrics, label
 * escaping, the text exposition (format 0.0.4) read back with a real parser, how isolates
 * combine, and the gateway's catalogue (every metric rendered once with HELP and TYPE).
 */
import assert from "node:assert/strict";
import parsePrometheusTextFormat from "parse-prometheus-text-format";
import { GatewayMetrics } from "../../lib/observe/metrics.ts";
import {
  Counter,
  Gauge,
  Histogram,
  Info,
  type MetricSnapshot,
  renderMetrics,
} from "../../lib/observe/registry.ts";
import { OpenFdCounter } from "../../lib/observe/process_metrics.ts";
import type { Family } from "../helpers/metrics.ts";

/** The text exposition parsed by parse-prometheus-text-format, by family name. */
function parse(text: string): Map<string, Family> {
  const families = parsePrometheusTextFormat(text) as Family[];
  const byName = new Map(families.map((f) => [f.name, f]));
  assert.equal(byName.size, families.length, `a family appears twice:\n${text}`);
  return byName;
}

function render(...metrics: { snapshot(): MetricSnapshot }[]): string {
  return renderMetrics([metrics.map((m) => m.snapshot())]);
}

/** The sample lines of `text` (no comments), as written. */
function sampleLines(text: string): string[] {
  return text.split("\n").filter((line) => line !== "" && !line.startsWith("#"));
}

/**
 * A sample line as format 0.0.4 defines it: a metric name, optional `{name="value",…}` with
 * `\\`, `\"` and `\n` the only escapes, one space, a float (or NaN, +Inf, -Inf).
 */
const SAMPLE_LINE =
  /^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*")*\})? (?:NaN|[+-]Inf|-?\d+(?:\.\d+)?(?:e[+-]?\d+)?)$/;

Deno.test("a counter starts at 0 for its initial labels, adds up and keeps label sets apart", () => {
  const c = new Counter("test_events_total", "Events.", [{ kind: "a" }, { kind: "b" }]);
  assert.equal(c.get({ kind: "a" }), 0);
  c.inc({ kind: "a" });
  c.inc({ kind: "a" }, 4);
  c.inc({ kind: "c" }); // a label set not declared up front is created on first use
  assert.equal(c.get({ kind: "a" }), 5);
  assert.equal(c.get({ kind: "b" }), 0);
  assert.equal(c.get({ kind: "c" }), 1);
  assert.equal(c.get(), 6, "no labels: the sum over every series");
  const family = parse(render(c)).get("test_events_total")!;
  assert.equal(family.type, "COUNTER");
  assert.equal(family.help, "Events.");
  assert.deepEqual(
    family.metrics.map((m) => [m.labels?.kind, Number(m.value)]),
    [["a", 5], ["b", 0], ["c", 1]],
  );
});

Deno.test("get() with some labels sums every series that has them", () => {
  const c = new Counter("test_closed_total", "Closes.", []);
  c.inc({ route: "/a", reason: "x" }, 2);
  c.inc({ route: "/b", reason: "x" }, 3);
  c.inc({ route: "/a", reason: "y" }, 7);
  assert.equal(c.get({ reason: "x" }), 5);
  assert.equal(c.get({ route: "/a" }), 9);
  assert.equal(c.get({ route: "/a", reason: "x" }), 2);
  assert.equal(c.get({ reason: "z" }), 0);
  // Label order does not make a new series: the key is sorted.
  c.inc({ reason: "x", route: "/a" });
  assert.equal(c.get({ route: "/a", reason: "x" }), 3);
  assert.equal(sampleLines(render(c)).length, 3);
});

Deno.test("an unlabelled counter renders a bare sample", () => {
  const c = new Counter("test_plain_total", "Plain.");
  c.inc();
  c.inc(undefined, 2.5);
  assert.deepEqual(sampleLines(render(c)), ["test_plain_total 3.5"]);
});

Deno.test("a gauge is set, not added to, and may go down", () => {
  const g = new Gauge("test_level", "Level.", "max");
  g.set(10);
  g.set(3);
  assert.equal(g.get(), 3);
  g.set(-1.5, { side: "left" });
  assert.equal(g.get({ side: "left" }), -1.5);
  const family = parse(render(g)).get("test_level")!;
  assert.equal(family.type, "GAUGE");
  assert.deepEqual(
    family.metrics.map((m) => [m.labels ?? {}, Number(m.value)]),
    [[{}, 3], [{ side: "left" }, -1.5]],
  );
});

Deno.test("a collected gauge reads its source at each snapshot, never twice beside labels", () => {
  let source = 7;
  const collected = new Gauge("test_collected", "Collected.", "sum", () => source);
  assert.equal(collected.get(), 7);
  assert.deepEqual(sampleLines(render(collected)), ["test_collected 7"]);
  source = 9;
  assert.deepEqual(sampleLines(render(collected)), ["test_collected 9"], "read again");
  // Labelled series only: the collected total would count them twice, so it stays out.
  const labelled = new Gauge("test_split", "Split.", "sum", () => 100, [{ route: "/a" }]);
  labelled.set(4, { route: "/a" });
  assert.deepEqual(sampleLines(render(labelled)), ['test_split{route="/a"} 4']);
});

Deno.test("an info metric is a constant 1 carrying its labels", () => {
  const info = new Info("test_build_info", "Build.", { version: "1.2.3" });
  const family = parse(render(info)).get("test_build_info")!;
  assert.equal(family.type, "GAUGE");
  assert.deepEqual(family.metrics, [{ value: "1", labels: { version: "1.2.3" } }]);
});

Deno.test("a histogram counts each observation in every bucket at or above it, plus sum and count", () => {
  const h = new Histogram("test_delay_seconds", "Delay.", [{ route: "/a" }], "max", [0.1, 1, 10]);
  // Declared series exist before any observation, all zero.
  assert.deepEqual(sampleLines(render(h)), [
    'test_delay_seconds_bucket{le="0.1",route="/a"} 0',
    'test_delay_seconds_bucket{le="1",route="/a"} 0',
    'test_delay_seconds_bucket{le="10",route="/a"} 0',
    'test_delay_seconds_bucket{le="+Inf",route="/a"} 0',
    'test_delay_seconds_sum{route="/a"} 0',
    'test_delay_seconds_count{route="/a"} 0',
  ]);
  for (const v of [0.05, 0.1, 0.5, 1, 20]) h.observe(v, { route: "/a" }); // 0.1 and 1: le is ≤
  h.observe(3, { route: "/b" });
  assert.equal(h.count({ route: "/a" }), 5);
  assert.equal(h.count({ route: "/b" }), 1);
  assert.equal(h.count({ route: "/c" }), 0);
  const text = render(h);
  for (const line of sampleLines(text)) assert.match(line, SAMPLE_LINE);
  const sample = (series: string) =>
    Number(
      new RegExp(`^test_delay_seconds${series.replace(/[{}+.]/g, "\\$&")} (\\S+)$`, "m")
        .exec(text)?.[1],
    );
  assert.equal(sample('_bucket{le="0.1",route="/a"}'), 2);
  assert.equal(sample('_bucket{le="1",route="/a"}'), 4);
  assert.equal(sample('_bucket{le="10",route="/a"}'), 4);
  assert.equal(sample('_bucket{le="+Inf",route="/a"}'), 5);
  assert.equal(sample('_sum{route="/a"}'), 0.05 + 0.1 + 0.5 + 1 + 20);
  assert.equal(sample('_count{route="/a"}'), 5);
  assert.equal(sample('_bucket{le="1",route="/b"}'), 0);
  assert.equal(sample('_bucket{le="10",route="/b"}'), 1);
  assert.equal(sample('_count{route="/b"}'), 1);
  // The parser reads the family's type; it merges a labelled histogram's series (and drops
  // their sum and count), hence the line checks above and an unlabelled one below.
  assert.equal(parse(text).get("test_delay_seconds")!.type, "HISTOGRAM");
  const plain = new Histogram("test_plain_seconds", "Plain.", [{}], "max", [0.1, 1]);
  for (const v of [0.01, 0.5, 2]) plain.observe(v);
  assert.deepEqual(parse(render(plain)).get("test_plain_seconds")!.metrics, [
    { buckets: { "0.1": "1", "1": "2", "+Inf": "3" }, count: "3", sum: String(0.01 + 0.5 + 2) },
  ]);
});

Deno.test("the default buckets span milliseconds to seconds, ascending", () => {
  const h = new Histogram("test_default_seconds", "Default.", [{}], "max");
  assert.ok(h.buckets.length > 5);
  for (let i = 1; i < h.buckets.length; i++) assert.ok(h.buckets[i] > h.buckets[i - 1]);
  assert.ok(h.buckets[0] <= 0.001 && h.buckets.at(-1)! >= 10, `${h.buckets}`);
});

Deno.test("label values with a backslash, a quote or a newline are escaped and read back", () => {
  const tricky = 'a\\b "quoted"\nnext line';
  const c = new Counter("test_escaped_total", "Escaped.", [{ path: tricky }]);
  c.inc({ path: tricky });
  const text = render(c);
  const [line] = sampleLines(text);
  assert.equal(line, 'test_escaped_total{path="a\\\\b \\"quoted\\"\\nnext line"} 1');
  assert.match(line, SAMPLE_LINE);
  assert.deepEqual(parse(text).get("test_escaped_total")!.metrics, [
    { value: "1", labels: { path: tricky } },
  ]);
  assert.equal(c.get({ path: tricky }), 1);
});

Deno.test("NaN and infinities render as the format spells them", () => {
  const g = new Gauge("test_special", "Special.", "max");
  g.set(NaN, { v: "nan" });
  g.set(Infinity, { v: "inf" });
  g.set(-Infinity, { v: "minf" });
  const lines = sampleLines(render(g));
  assert.deepEqual(lines.slice(1), [
    'test_special{v="nan"} NaN',
    'test_special{v="inf"} +Inf',
    'test_special{v="minf"} -Inf',
  ]);
  for (const line of lines) assert.match(line, SAMPLE_LINE);
  const values = parse(render(g)).get("test_special")!.metrics.map((m) => m.value);
  assert.deepEqual(values.slice(1), ["NaN", "+Inf", "-Inf"]);
});

Deno.test("renderMetrics combines isolates series by series: sum, min or max", () => {
  const metrics = (n: number) =>
    [
      new Counter("test_sum_total", "Sum.", [{ r: "a" }]),
      new Gauge("test_min", "Min.", "min"),
      new Gauge("test_max", "Max.", "max"),
    ].map((m, i) => {
      if (m instanceof Counter) m.inc({ r: "a" }, n);
      if (m instanceof Gauge) m.set(n * (i + 1));
      return m.snapshot();
    });
  const only = new Counter("test_one_isolate_total", "Only in the first.");
  only.inc();
  const text = renderMetrics([[...metrics(2), only.snapshot()], metrics(5)]);
  assert.deepEqual(sampleLines(text), [
    'test_sum_total{r="a"} 7',
    "test_min 4",
    "test_max 15",
    "test_one_isolate_total 1",
  ]);
  const families = parse(text);
  assert.deepEqual([...families.keys()], [
    "test_sum_total",
    "test_min",
    "test_max",
    "test_one_isolate_total",
  ]);
});

Deno.test("renderMetrics combines workers: clients add up, NATS-side counts do not", () => {
  const a = new GatewayMetrics(() => 3);
  const b = new GatewayMetrics(() => 4);
  for (const m of [a, b]) m.messagesRelayed.inc(undefined, 10);
  a.deliveries.inc(undefined, 30);
  b.deliveries.inc(undefined, 40);
  a.connectionsClosed.inc({ reason: "slow_consumer" });
  a.natsConnected.set(1);
  b.natsConnected.set(0);
  a.consumerPending.set(2);
  b.consumerPending.set(7);
  a.relayDelay.observe(0.002, { route: "/ws/stream" });
  b.relayDelay.observe(0.002, { route: "/ws/stream" });
  b.relayDelay.observe(0.2, { route: "/ws/stream" });
  const text = renderMetrics([a.snapshot(), b.snapshot()]);
  const sample = (name: string) => new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1];
  assert.equal(sample("gateway_ws_connections"), "7");
  assert.equal(sample("gateway_ws_messages_sent_total"), "70");
  assert.equal(sample("gateway_messages_relayed_total"), "10");
  assert.equal(sample("gateway_nats_connected"), "0");
  assert.equal(sample("gateway_nats_consumer_pending_messages"), "7");
  // Every worker sees every message: the relay delay histogram takes the larger worker's.
  assert.equal(sample('gateway_relay_delay_seconds_count\\{route="/ws/stream"\\}'), "2");
  assert.match(text, /^gateway_ws_connections_closed_total\{reason="slow_consumer"\} 1$/m);
  assert.equal(text.match(/^# TYPE gateway_ws_connections gauge$/gm)?.length, 1);
  // One isolate renders exactly as before.
  assert.equal(a.render(), renderMetrics([a.snapshot()]));
});

Deno.test("the gateway catalogue renders every metric once, with HELP and TYPE, parseable", () => {
  const routes = ["/ws/stream", "/ws/levels/:symbol"];
  const metrics = new GatewayMetrics(() => 0, new OpenFdCounter(), routes);
  const snapshots = metrics.snapshot();
  const text = metrics.render();
  const families = parse(text);
  // Each metric exactly once, with one HELP and one TYPE line naming it and its type.
  assert.equal(families.size, snapshots.length);
  for (const snapshot of snapshots) {
    const { name, help, type } = snapshot;
    assert.match(name, /^(gateway|process)_[a-z0-9_]+$/, "namespace_subsystem_name");
    if (type === "counter") assert.match(name, /_total$/, `${name}: a counter ends in _total`);
    assert.ok(help.length > 0 && !/[\\\n]/.test(help), `${name}: HELP needs no escaping`);
    assert.equal(text.match(new RegExp(`^# HELP ${name} `, "gm"))?.length, 1, name);
    assert.equal(text.match(new RegExp(`^# TYPE ${name} ${type}$`, "gm"))?.length, 1, name);
    const family = families.get(name);
    assert.ok(family, `${name} missing from the parsed exposition`);
    assert.equal(family.help, help);
    assert.equal(family.type, type.toUpperCase());
    assert.ok(family.metrics.length > 0, `${name} has no sample`);
  }
  // Every sample line is well formed and belongs to a declared family.
  const declared = new Set(snapshots.map((s) => s.name));
  for (const line of sampleLines(text)) {
    assert.match(line, SAMPLE_LINE);
    const name = line.split(/[{ ]/)[0];
    const family = name.replace(/_(bucket|sum|count)$/, "");
    assert.ok(declared.has(name) || declared.has(family), `${line}: no such family`);
  }
  // Per-route series exist from the start, for every configured route.
  for (const name of ["gateway_route_connections", "gateway_messages_relayed_total"]) {
    assert.deepEqual(families.get(name)!.metrics.map((m) => m.labels?.route), routes, name);
  }
  assert.deepEqual(
    families.get("gateway_ws_connections_closed_total")!.metrics
      .map((m) => m.labels?.reason).sort(),
    [
      "client",
      "idle_timeout",
      "protocol",
      "send_error",
      "shutdown",
      "slow_consumer",
      "token_expired",
    ],
  );
});

Deno.test("onSnapshot updates run before each snapshot", () => {
  const metrics = new GatewayMetrics(() => 0);
  let calls = 0;
  metrics.onSnapshot(() => metrics.routeConnections.set(++calls, { route: "/ws/stream" }));
  const seen = () =>
    /^gateway_route_connections\{route="\/ws\/stream"\} (\d+)$/m.exec(metrics.render())?.[1];
  assert.equal(seen(), "1");
  assert.equal(seen(), "2");
});
