import assert from "node:assert/strict";
import {
  combineHealth,
  type HealthReport,
  type LocalState,
  ReceivedState,
  WorkerStates,
} from "../../lib/observe/health.ts";
import { GatewayMetrics } from "../../lib/observe/metrics.ts";

const base: HealthReport = {
  service: "gateway",
  status: "healthy",
  version: "test",
  nats_url: "nats://localhost:4222",
  nats_connected: true,
  connections: 5,
  last_message_ts: 2_000,
  messages_relayed: 9,
  consumer_lag: 0,
  uptime_s: 60,
};

/** A clock the test moves by hand. */
function manualClock(): { now: () => number; advance: (ms: number) => void } {
  let t = 0;
  return { now: () => t, advance: (ms) => (t += ms) };
}

function report(health: HealthReport, connections = health.connections) {
  const metrics = new GatewayMetrics(() => connections);
  return { health: { ...health, connections }, metrics: metrics.snapshot() };
}

Deno.test("combineHealth: healthy only when every worker is; one report passes through", () => {
  assert.equal(combineHealth([base]), base);
  const behind = { ...base, connections: 2, last_message_ts: 1_000, messages_relayed: 8 };
  const both = combineHealth([base, behind]);
  assert.equal(both.status, "healthy");
  assert.equal(both.connections, 7);
  assert.equal(both.last_message_ts, 1_000, "the stalest worker's");
  assert.equal(both.messages_relayed, 9);
  assert.equal(both.workers?.length, 2);
  const down = combineHealth([base, { ...behind, status: "unhealthy", nats_connected: false }]);
  assert.equal(down.status, "unhealthy");
  assert.equal(down.nats_connected, false);
});

Deno.test("combineHealth: no reports at all is unhealthy, never healthy", () => {
  const none = combineHealth([]);
  assert.equal(none.status, "unhealthy");
  assert.equal(none.nats_connected, false);
  assert.deepEqual(none.workers, []);
});

Deno.test("WorkerStates: unhealthy until every worker has published", () => {
  const clock = manualClock();
  const states = new WorkerStates(2, 1_000, clock.now);
  assert.equal(states.combined().health.status, "unhealthy", "nothing published yet");
  states.update(0, report(base));
  const one = states.combined().health;
  assert.equal(one.status, "unhealthy");
  assert.deepEqual(one.workers?.map((w) => w.status), ["healthy", "unhealthy"]);
  states.update(1, report(base, 3));
  const both = states.combined();
  assert.equal(both.health.status, "healthy");
  assert.equal(both.health.connections, 8);
  assert.match(both.metricsText, /^gateway_ws_connections 8$/m);
});

Deno.test("WorkerStates: a worker silent past the bound turns unhealthy; publishing again heals", () => {
  const clock = manualClock();
  const states = new WorkerStates(2, 1_000, clock.now);
  states.update(0, report(base));
  states.update(1, report(base));
  clock.advance(600);
  states.update(0, report(base));
  clock.advance(600);
  // Worker 1 last published 1,200 ms ago, worker 0 600 ms ago.
  const stale = states.combined();
  assert.equal(stale.health.status, "unhealthy");
  assert.deepEqual(stale.health.workers?.map((w) => w.status), ["healthy", "unhealthy"]);
  // Its last figures still count in the metrics, so counters never seem to go backwards.
  assert.match(stale.metricsText, /^gateway_ws_connections 10$/m);
  states.update(1, report(base));
  assert.equal(states.combined().health.status, "healthy");
});

Deno.test("WorkerStates: update says when a worker's status changed; a crashed one is missing", () => {
  const states = new WorkerStates(2, 1_000, manualClock().now);
  assert.equal(states.update(0, report(base)), true, "first report");
  assert.equal(states.update(0, report(base, 7)), false, "same status, other figures");
  assert.equal(states.update(0, report({ ...base, nats_connected: false })), true);
  assert.equal(states.update(0, report({ ...base, status: "unhealthy" })), true);
  states.update(1, report(base));
  states.remove(0);
  const health = states.combined().health;
  assert.equal(health.status, "unhealthy");
  assert.equal(health.workers?.[0].connections, 0);
});

Deno.test("ReceivedState: answers from the latest copy; unhealthy if it is stale or this worker is", () => {
  const clock = manualClock();
  let own: HealthReport = base;
  const local: LocalState = {
    health: () => own,
    metrics: () => new GatewayMetrics(() => 0).snapshot(),
  };
  const view = new ReceivedState(local, 1_000, clock.now);
  assert.equal(view.health().status, "unhealthy", "no copy received yet");
  assert.match(view.metricsText(), /^gateway_ws_connections 0$/m, "own metrics until then");

  const states = new WorkerStates(2, 1_000, clock.now);
  states.update(0, report(base));
  states.update(1, report(base));
  view.receive(states.combined());
  assert.equal(view.health().status, "healthy");
  assert.equal(view.health().connections, 10);
  assert.match(view.metricsText(), /^gateway_ws_connections 10$/m);

  own = { ...base, status: "unhealthy", nats_connected: false };
  assert.equal(view.health().status, "unhealthy", "own fault shows before the next copy");
  own = base;
  clock.advance(1_001);
  assert.equal(view.health().status, "unhealthy", "the supervisor stopped sending");
  view.receive(states.combined());
  // The copy is fresh again but says both workers went silent (same clock).
  assert.equal(view.health().status, "unhealthy");
});

Deno.test("ReceivedState: its handlers survive being spread into the handler's deps", () => {
  const local: LocalState = { health: () => base, metrics: () => [] };
  const { health, metricsText } = { ...new ReceivedState(local, 1_000) };
  assert.equal(typeof health, "function");
  assert.equal(typeof metricsText, "function");
  assert.equal(health().status, "unhealthy");
});
