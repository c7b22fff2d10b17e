/**
 * A dashboard in real headless Chromium (Debian's, driven by playwright-core): the page, served
 * from another origin, reads /health across origins, gets the snapshot and every later payload
 * unchanged over /ws/stream, is answered when it pings, and sees 1001 when the gateway stops.
 */
import assert from "node:assert/strict";
import { type Browser, chromium } from "playwright-core";
import { startGateway } from "../../lib/gateway.ts";
import { NatsServer } from "../../tools/nats_server.ts";
import { Publisher, recordingLogger, testConfig } from "../helpers/fixtures.ts";
import { levelsSignal } from "../../tools/signals.ts";

const CHROMIUM = Deno.env.get("CHROMIUM_BIN") ?? "/usr/bin/chromium";
const chromiumMissing = await Deno.stat(CHROMIUM).then(() => false, () => true);
if (chromiumMissing) {
  console.log(
    `browser test skipped: no Chromium at ${CHROMIUM}; install Debian's (apt-get install chromium) or set CHROMIUM_BIN (.ci/run installs it)`,
  );
}

/** What the page records; read back with page.evaluate. */
interface PageState {
  messages: { seq: number; levels: unknown[] }[];
  raw: string[];
  pong: boolean;
  closeCode: number | null;
  errors: string[];
}

const PAGE = `<!doctype html>
<title>levels dashboard</title>
<script type="module">
  const gateway = new URLSearchParams(location.search).get("gateway");
  const state = (window.state = {
    messages: [], raw: [], pong: false, closeCode: null, errors: [],
  });
  const socket = new WebSocket("ws://" + gateway + "/ws/stream");
  socket.onopen = () => socket.send(JSON.stringify({ type: "ping" }));
  socket.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "pong") state.pong = true;
    else {
      state.messages.push(message);
      state.raw.push(event.data);
    }
  };
  socket.onerror = () => state.errors.push("websocket error");
  socket.onclose = (event) => (state.closeCode = event.code);
</script>`;

Deno.test({
  name: "browser: a dashboard page gets the snapshot, every update unchanged, a pong and 1001",
  ignore: chromiumMissing,
  async fn() {
    await using nats = await NatsServer.start();
    const gateway = await startGateway(testConfig(nats.url), { logger: recordingLogger() });
    await using publisher = await Publisher.connect(nats.url);
    await publisher.publish(levelsSignal(1));
    // The page comes from another origin than the gateway, as a dashboard would.
    await using site = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      () => new Response(PAGE, { headers: { "content-type": "text/html; charset=utf-8" } }),
    );
    const browser: Browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    });
    try {
      const page = await browser.newPage();
      const state = () =>
        page.evaluate(() => (globalThis as unknown as { state: PageState }).state);
      await page.goto(
        `http://127.0.0.1:${site.addr.port}/?gateway=127.0.0.1:${gateway.addr.port}`,
      );
      await page.waitForFunction(() => {
        const s = (globalThis as unknown as { state: PageState }).state;
        return s.messages.length >= 1 && s.pong;
      });
      await publisher.publish(levelsSignal(2));
      await publisher.publish(levelsSignal(3));
      await page.waitForFunction(() =>
        (globalThis as unknown as { state: PageState }).state.messages.length >= 3
      );
      const seen = await state();
      assert.deepEqual(seen.errors, []);
      assert.deepEqual(seen.messages.map((m) => m.seq), [1, 2, 3]);
      assert.deepEqual(seen.raw, [levelsSignal(1), levelsSignal(2), levelsSignal(3)]);
      assert.equal(seen.messages[0].levels.length, 12);
      // Cross-origin, as a dashboard's status badge would read it: needs the CORS header.
      const healthUrl = `http://127.0.0.1:${gateway.addr.port}/health`;
      const health = await page.evaluate(async (url) => await (await fetch(url)).json(), healthUrl);
      assert.equal(health.status, "healthy");
      assert.equal(health.connections, 1);

      await gateway.shutdown();
      await page.waitForFunction(() =>
        (globalThis as unknown as { state: PageState }).state.closeCode !== null
      );
      assert.equal((await state()).closeCode, 1001);
    } finally {
      await browser.close();
      await gateway.shutdown();
    }
  },
});
