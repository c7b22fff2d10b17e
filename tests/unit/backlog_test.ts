import assert from "node:assert/strict";
import {
  DENO_LISTEN_BACKLOG,
  listenersPerIsolate,
  MAX_LISTENERS,
  reusePortAllowed,
} from "../../lib/backlog.ts";

Deno.test("listenersPerIsolate: enough of Deno's 511-deep queues for the backlog, split across workers", () => {
  assert.equal(DENO_LISTEN_BACKLOG, 511);
  assert.equal(listenersPerIsolate(1, 1, "linux"), 1);
  assert.equal(listenersPerIsolate(511, 1, "linux"), 1);
  assert.equal(listenersPerIsolate(512, 1, "linux"), 2);
  assert.equal(listenersPerIsolate(2048, 1, "linux"), 5);
  assert.equal(listenersPerIsolate(8192, 1, "linux"), 17);
  // Workers share the port: together they hold the backlog.
  assert.equal(listenersPerIsolate(8192, 4, "linux"), 5);
  assert.equal(listenersPerIsolate(8192, 64, "linux"), 1);
  assert.equal(listenersPerIsolate(65_535, 1, "linux"), MAX_LISTENERS);
  // Elsewhere SO_REUSEPORT does not spread connects across listeners.
  assert.equal(listenersPerIsolate(8192, 1, "darwin"), 1);
  assert.equal(listenersPerIsolate(8192, 1, "windows"), 1);
  // Without --unstable-net Deno would exit on the first shared listen: one listener.
  assert.equal(listenersPerIsolate(8192, 1, "linux", false), 1);
  // The tests run with deno.json's `unstable: ["net"]`, as the start task and the binary do.
  assert.equal(reusePortAllowed(), true);
});
