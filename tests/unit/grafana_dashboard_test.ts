/** deploy/grafana/gateway.json: every query names metrics the gateway exports. */
import assert from "node:assert/strict";
import { exportedMetricNames, metricNames } from "../helpers/promql.ts";

interface Panel {
  readonly title: string;
  readonly type: string;
  readonly targets?: readonly { readonly expr: string }[];
  readonly panels?: readonly Panel[];
}

const dashboard = JSON.parse(
  await Deno.readTextFile(new URL("../../deploy/grafana/gateway.json", import.meta.url)),
);

/** Every panel, rows' nested panels included. */
function allPanels(panels: readonly Panel[]): Panel[] {
  return panels.flatMap((panel) => [panel, ...allPanels(panel.panels ?? [])]);
}

const panels = allPanels(dashboard.panels);

Deno.test("metricNames finds selected metrics, not functions, labels, ranges or keywords", () => {
  assert.deepEqual(
    [...metricNames(
      'histogram_quantile(0.99, sum by (route, le) (rate(a_bucket{job="$job", le="0.5"}[$__rate_interval]))) / on (instance) group_left b_total offset 5m or vector(1)',
    )].sort(),
    ["a_bucket", "b_total"],
  );
  assert.deepEqual([...metricNames("time() - (c_seconds > 0) and d:e:f")].sort(), [
    "c_seconds",
    "d:e:f",
  ]);
});

Deno.test("exportedMetricNames comes from GatewayMetrics: histograms' series included", () => {
  const exported = exportedMetricNames();
  for (const name of ["gateway_ws_connections", "gateway_relay_delay_seconds_bucket"]) {
    assert.ok(exported.has(name), name);
  }
  assert.ok(!exported.has("gateway_relay_delay_seconds"));
});

Deno.test("grafana dashboard: every query names only metrics the gateway exports", () => {
  const exported = exportedMetricNames();
  const queries = panels.flatMap((panel) =>
    (panel.targets ?? []).map((target) => ({ panel: panel.title, expr: target.expr }))
  );
  assert.ok(queries.length >= 10, `${queries.length} queries`);
  for (const { panel, expr } of queries) {
    const names = metricNames(expr);
    assert.ok(names.size > 0, `panel "${panel}" selects no metric: ${expr}`);
    for (const name of names) {
      assert.ok(exported.has(name), `panel "${panel}": ${name} is not exported (${expr})`);
    }
  }
});

Deno.test("grafana dashboard: shows what operators look at first", () => {
  const selected = new Set(
    panels.flatMap((panel) => (panel.targets ?? []).flatMap((t) => [...metricNames(t.expr)])),
  );
  for (
    const name of [
      "gateway_route_connections",
      "gateway_ws_messages_sent_total",
      "gateway_relay_delay_seconds_bucket",
      "gateway_last_message_timestamp_seconds",
      "gateway_load_shedding",
      "gateway_nats_connected",
      "process_resident_memory_bytes",
      "process_cpu_seconds_total",
    ]
  ) {
    assert.ok(selected.has(name), `no panel shows ${name}`);
  }
  const ids = panels.map((panel) => (panel as unknown as { id: number }).id);
  assert.equal(new Set(ids).size, ids.length, "panel ids are unique");
});
