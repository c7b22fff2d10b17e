import assert from "node:assert/strict";
import { GatewayMetrics } from "../../lib/observe/metrics.ts";
import { cpuSeconds, oncePerTurn, OpenFdCounter } from "../../lib/observe/process_metrics.ts";
import { VERSION } from "../../lib/version.ts";

Deno.test("oncePerTurn: one reading per synchronous run, a fresh one after", async () => {
  let reads = 0;
  const read = oncePerTurn(() => ++reads);
  assert.equal(read(), 1);
  assert.equal(read(), 1);
  await Promise.resolve();
  assert.equal(read(), 2);
});

Deno.test("cpuSeconds: grows with work done on this thread", async () => {
  const before = cpuSeconds();
  await Promise.resolve();
  const end = performance.now() + 200;
  while (performance.now() < end) Math.sqrt(Math.random());
  // At least part of 200 ms of busy CPU, whatever else shares the machine.
  assert.ok(cpuSeconds() - before > 0.02, `${before} -> ${cpuSeconds()}`);
});

Deno.test("OpenFdCounter: counts /proc/self/fd where readable (here: --allow-all)", () => {
  const count = new OpenFdCounter().count();
  if (Deno.build.os !== "linux") return;
  const listed = [...Deno.readDirSync("/proc/self/fd")].length;
  assert.ok(count !== null && Math.abs(count - (listed - 1)) <= 2, `${count} vs ${listed}`);
  assert.equal(new OpenFdCounter("/nonexistent/fd").count(), null);
});

Deno.test("GatewayMetrics: build info, memory and CPU of the process; fds only where readable", () => {
  const text = new GatewayMetrics(() => 0).render();
  assert.match(text, new RegExp(`^gateway_build_info\\{version="${VERSION}"\\} 1$`, "m"));
  assert.match(text, /^# TYPE process_cpu_seconds_total counter$/m);
  const rss = Number(/^process_resident_memory_bytes (\d+)$/m.exec(text)?.[1]);
  assert.ok(rss > 10 * 1024 * 1024, `${rss}`);
  assert.ok(Number(/^process_start_time_seconds (\d+)$/m.exec(text)?.[1]) <= Date.now() / 1000);
  const unreadable = new GatewayMetrics(() => 0, new OpenFdCounter("/nonexistent/fd"));
  assert.doesNotMatch(unreadable.render(), /process_open_fds/);
  assert.match(text, /^process_open_fds \d+$/m);
});
