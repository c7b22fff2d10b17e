/** Scrapes a gateway's /metrics with a real Prometheus text-format parser. */
import assert from "node:assert/strict";
import parsePrometheusTextFormat from "parse-prometheus-text-format";

export interface Family {
  name: string;
  help: string;
  type: string;
  metrics: { value: string; labels?: Record<string, string> }[];
}

export async function scrape(addr: Deno.NetAddr): Promise<Map<string, Family>> {
  const response = await fetch(`http://${addr.hostname}:${addr.port}/metrics`);
  assert.equal(response.status, 200);
  const families = parsePrometheusTextFormat(await response.text()) as Family[];
  return new Map(families.map((f) => [f.name, f]));
}

export function value(
  families: Map<string, Family>,
  name: string,
  labels: Record<string, string> = {},
): number {
  const family = families.get(name);
  assert.ok(family, `metric ${name} missing`);
  const sample = family.metrics.find((m) =>
    Object.entries(labels).every(([k, v]) => m.labels?.[k] === v)
  );
  assert.ok(sample, `${name}${JSON.stringify(labels)} missing`);
  return Number(sample.value);
}
