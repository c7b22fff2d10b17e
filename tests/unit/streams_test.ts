/** Pure parts of stream setup: cluster size from INFO, subject matching, not-found errors. */
import assert from "node:assert/strict";
import { clusterSizeFromInfo } from "../../lib/nats/replicas.ts";
import { isNotFound, NatsRequestError } from "../../lib/nats/requests.ts";
import { subjectMatches } from "../../lib/wildcard.ts";

Deno.test("clusterSizeFromInfo: a standalone server is 1, a cluster counts its advertised members", () => {
  assert.equal(clusterSizeFromInfo({}), 1);
  assert.equal(clusterSizeFromInfo({ connect_urls: ["127.0.0.1:4222"] }), 1);
  assert.equal(
    clusterSizeFromInfo({
      cluster: "c1",
      connect_urls: ["10.0.0.1:4222", "10.0.0.2:4222", "10.0.0.3:4222", "10.0.0.1:4222"],
    }),
    3,
  );
  assert.equal(clusterSizeFromInfo({ cluster: "c1", connect_urls: ["10.0.0.1:4222"] }), 1);
  // no_advertise: unknown, so creation starts at 3 and steps down if refused.
  assert.equal(clusterSizeFromInfo({ cluster: "c1" }), undefined);
  assert.equal(clusterSizeFromInfo(undefined), undefined);
});

Deno.test("subjectMatches: * is one token, > the rest", () => {
  assert.ok(subjectMatches("levels.*", "levels.signals"));
  assert.ok(subjectMatches("levels.>", "levels.signals.v1"));
  assert.ok(subjectMatches(">", "levels"));
  assert.ok(subjectMatches("levels.signals", "levels.signals"));
  assert.ok(!subjectMatches("levels.*", "levels.signals.v1"));
  assert.ok(!subjectMatches("levels.*", "levels"));
  assert.ok(!subjectMatches("levels.>", "levels"));
  assert.ok(!subjectMatches("market.*", "levels.signals"));
  assert.ok(!subjectMatches("levels.signals", "levels.signals2"));
});

Deno.test("NatsRequestError names the request; isNotFound sees through it", () => {
  const timeout = new NatsRequestError("stream info LEVEL_SIGNALS", new Error("timeout"));
  assert.equal(timeout.message, "stream info LEVEL_SIGNALS failed: timeout");
  assert.ok(!isNotFound(timeout));
  const apiError = Object.assign(new Error("stream missing"), { code: 10059 });
  assert.ok(isNotFound(new NatsRequestError("stream info X", apiError)));
  assert.ok(isNotFound(new Error("consumer not found")));
});
