/**
 * Metric names in PromQL expressions, and the names the gateway exports (from GatewayMetrics
 * itself, rendered as /metrics renders it), so deploy/ files cannot name a metric that is not.
 */
import { GatewayMetrics } from "../../lib/observe/metrics.ts";

const KEYWORDS = new Set([
  "by",
  "without",
  "on",
  "ignoring",
  "group_left",
  "group_right",
  "bool",
  "and",
  "or",
  "unless",
  "offset",
  "inf",
  "nan",
]);

/**
 * The metric names an expression selects: label matchers, range/subquery brackets, strings,
 * grouping lists and function calls are removed first; Grafana's `$variables` are ignored.
 */
export function metricNames(expr: string): Set<string> {
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/g, '""')
    .replace(/\{[^}]*\}/g, " ")
    .replace(/\[[^\]]*\]/g, " ")
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, " ");
  const names = new Set<string>();
  for (const match of stripped.matchAll(/(?<![\w$:.])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()/g)) {
    const name = match[1];
    if (!KEYWORDS.has(name.toLowerCase())) names.add(name);
  }
  return names;
}

/**
 * Every series name the gateway's /metrics shows: each metric, and a histogram's `_bucket`,
 * `_sum` and `_count`. Built from a fresh GatewayMetrics, as one gateway process renders it.
 */
export function exportedMetricNames(): Set<string> {
  const text = new GatewayMetrics(() => 0).render();
  const names = new Set<string>();
  for (const line of text.split("\n")) {
    const name = /^([A-Za-z_:][\w:]*)[\s{]/.exec(line)?.[1];
    if (name && !line.startsWith("#")) names.add(name);
  }
  return names;
}
