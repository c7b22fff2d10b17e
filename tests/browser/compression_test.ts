/**
 * The browser client (`/client.js`) in real headless Chromium (Debian's, driven by
 * playwright-core) against a real gateway: by default it asks for compressed frames, inflates
 * them with `DecompressionStream("deflate-raw")` and delivers exactly the published text, in
 * order, as a client asking for text frames does, for a fraction of the bytes.
 */
import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import { startGateway } from "../../lib/gateway.ts";
import { SyntheticMarket } from "../../scripts/publisher.ts";
import { NatsServer } from "../../tools/nats_server.ts";
import { Publisher, recordingLogger, testConfig } from "../helpers/fixtures.ts";

const CHROMIUM = Deno.env.get("CHROMIUM_BIN") ?? "/usr/bin/chromium";
const chromiumMissing = await Deno.stat(CHROMIUM).then(() => false, () => true);

/** In the page: a default client and a text one, each recording what it delivers. */
const START_CLIENTS = `(async (url) => {
  const { connectGateway } = await import("/client.js");
  window.got = {};
  window.clients = {};
  for (const encoding of [undefined, "text"]) {
    const name = encoding ?? "default";
    const client = connectGateway({ url, ...(encoding ? { encoding } : {}) });
    window.got[name] = [];
    window.clients[name] = client;
    client.addEventListener("snapshot", (e) => window.got[name].push(e.data));
    client.addEventListener("error", (e) => window.got[name].push("error: " + e.error.message));
  }
  return window.clients.default.encoding;
})`;

Deno.test({
  name: "browser client: Chromium inflates compressed frames to the exact published text, in order",
  ignore: chromiumMissing,
  async fn() {
    await using nats = await NatsServer.start();
    await using publisher = await Publisher.connect(nats.url);
    await using gateway = await startGateway(testConfig(nats.url), { logger: recordingLogger() });
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    });
    try {
      const market = new SyntheticMarket();
      const payloads = Array.from({ length: 60 }, (_, i) => JSON.stringify(market.next(1e12 + i)));
      await publisher.publish(payloads[0]);
      const page = await browser.newPage();
      const origin = `http://127.0.0.1:${gateway.addr.port}`;
      await page.goto(`${origin}/livez`); // same origin as /client.js and the route
      const url = `ws://127.0.0.1:${gateway.addr.port}/ws/stream`;
      const encoding = await page.evaluate(`${START_CLIENTS}(${JSON.stringify(url)})`);
      assert.equal(encoding, "deflate-raw");
      const delivered = (count: number) =>
        page.waitForFunction(
          `window.got.default.length >= ${count} && window.got.text.length >= ${count}`,
          undefined,
          { timeout: 15_000 },
        );
      await delivered(1); // the snapshot on connect
      for (const payload of payloads.slice(1)) await publisher.publish(payload);
      await delivered(payloads.length);
      const got = await page.evaluate(`window.got`) as Record<string, string[]>;
      assert.deepEqual(got.default, payloads);
      assert.deepEqual(got.text, payloads);
      const bytes = await page.evaluate(
        `[window.clients.default.stats.bytesReceived, window.clients.text.stats.bytesReceived]`,
      ) as [number, number];
      assert.ok(bytes[0] < 0.3 * bytes[1], `compressed ${bytes[0]} B, text ${bytes[1]} B`);
      await page.evaluate(`Promise.all(Object.values(window.clients).map((c) => c.close()))`);
    } finally {
      await browser.close();
    }
  },
});
