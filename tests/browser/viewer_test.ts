/**
 * The live viewer (lib/http/viewer_page.ts) in real headless Chromium (Debian's, driven by
 * playwright-core), fed by a real gateway, nats-server and the synthetic publisher: it shows the
 * snapshot and live updates; reconnects by itself after a gateway restart and shows fresh data,
 * never an older snapshot; goes stale when the publisher stops and fresh when it resumes; and
 * says why when the gateway refuses its token.
 *
 * The page is the gateway's own `GET /` when that answers with HTML; otherwise the test serves
 * `viewerHtml` itself from another origin, pointed at the gateway (`baseUrl`).
 * `GATEWAY_SCREENSHOT=1` saves docs/viewer.png.
 */
import assert from "node:assert/strict";
import { type Browser, chromium, type Page } from "playwright-core";
import { type Gateway, startGateway } from "../../lib/gateway.ts";
import { viewerHtml, type ViewerRoute } from "../../lib/http/viewer_page.ts";
import { type RunningPublisher, startPublisher } from "../../scripts/publisher.ts";
import { NatsServer } from "../../tools/nats_server.ts";
import { recordingLogger, testConfig } from "../helpers/fixtures.ts";

const CHROMIUM = Deno.env.get("CHROMIUM_BIN") ?? "/usr/bin/chromium";
const chromiumMissing = await Deno.stat(CHROMIUM).then(() => false, () => true);
if (chromiumMissing) {
  console.log(
    `viewer browser test skipped: no Chromium at ${CHROMIUM}; install Debian's (apt-get install chromium) or set CHROMIUM_BIN`,
  );
}

const STREAM_ROUTE = { path: "/ws/stream", subject: "levels.signals", templated: false };
const TOKEN = "viewer-test-token-0123456789";
const SCREENSHOT = new URL("../../docs/viewer.png", import.meta.url);

/** Everything one test needs, stopped in reverse order when disposed. */
class Stack implements AsyncDisposable {
  readonly #stack = new AsyncDisposableStack();
  gateway!: Gateway;
  publisher: RunningPublisher | undefined;
  site: Deno.HttpServer<Deno.NetAddr> | undefined;

  private constructor(readonly nats: NatsServer, readonly browser: Browser) {
    this.#stack.use(nats);
    this.#stack.defer(() => browser.close());
    this.#stack.defer(async () => {
      await this.publisher?.stop();
      await this.gateway?.shutdown();
      await this.site?.shutdown();
    });
  }

  static async start(env: Record<string, string> = {}): Promise<Stack> {
    const nats = await NatsServer.start();
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    }).catch(async (err) => {
      await nats[Symbol.asyncDispose]();
      throw err;
    });
    const stack = new Stack(nats, browser);
    await stack.startGateway(env);
    await stack.startPublisher();
    return stack;
  }

  /** `port` 0: a free one; a restart passes the old port, as an operator's restart would. */
  async startGateway(env: Record<string, string>, port = 0): Promise<void> {
    this.gateway = await startGateway(
      testConfig(this.nats.url, { GATEWAY_PORT: String(port), ...env }),
      { logger: recordingLogger() },
    );
  }

  async startPublisher(): Promise<void> {
    // Core's cadence, which the client's stale timer (8 × 250 ms) expects.
    this.publisher = await startPublisher({ natsUrl: this.nats.url, intervalMs: 250 });
  }

  /** Stops publishing; resolves with the last snapshot's `ts` once `page` shows it. */
  async stopPublisher(page: Page): Promise<number> {
    const publisher = this.publisher!;
    await publisher.stop();
    this.publisher = undefined;
    await page.waitForFunction(
      `Number(document.getElementById("snapshot").dataset.ts) === ${publisher.lastTs}`,
      undefined,
      { timeout: 15_000 },
    );
    return publisher.lastTs;
  }

  get gatewayOrigin(): string {
    return `http://127.0.0.1:${this.gateway.addr.port}`;
  }

  /**
   * The viewer's URL: the gateway's `/` once it serves one, else a page from our own server;
   * with `routes`, always our own page listing those.
   */
  async viewerUrl(query = "", routes?: ViewerRoute[]): Promise<string> {
    if (!routes) {
      const own = await fetch(`${this.gatewayOrigin}/`);
      const isPage = own.ok && (own.headers.get("content-type") ?? "").startsWith("text/html");
      await own.body?.cancel();
      if (isPage) return `${this.gatewayOrigin}/${query}`;
    }
    const html = viewerHtml(routes ?? [STREAM_ROUTE], { baseUrl: this.gatewayOrigin });
    this.site ??= Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      () => new Response(html, { headers: { "content-type": "text/html; charset=utf-8" } }),
    );
    return `http://127.0.0.1:${this.site.addr.port}/${query}`;
  }

  async openViewer(query = "", routes?: ViewerRoute[]): Promise<Page> {
    const page = await this.browser.newPage({ viewport: { width: 1100, height: 900 } });
    const errors: string[] = [];
    page.on("pageerror", (error) => errors.push(error.message));
    this.#stack.defer(() => assert.deepEqual(errors, [], "errors in the page"));
    await page.goto(await this.viewerUrl(query, routes));
    return page;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.#stack.disposeAsync();
  }
}

/** An element's text, read in the page. */
function text(page: Page, id: string): Promise<string> {
  return page.evaluate(`document.getElementById(${JSON.stringify(id)}).textContent`);
}

/** The `ts` of the snapshot on screen (0 before the first). */
async function shownTs(page: Page): Promise<number> {
  return Number(await page.evaluate(`document.getElementById("snapshot").dataset.ts || 0`));
}

async function waitForText(page: Page, id: string, expected: string | RegExp): Promise<void> {
  const pattern = typeof expected === "string" ? `^${expected}$` : expected.source;
  await page.waitForFunction(
    `new RegExp(${JSON.stringify(pattern)}).test(document.getElementById(${
      JSON.stringify(id)
    }).textContent)`,
    undefined,
    { timeout: 15_000 },
  ).catch(async (err) => {
    throw new Error(`#${id} never matched ${pattern}: it shows "${await text(page, id)}"`, {
      cause: err,
    });
  });
}

async function waitForTsAbove(page: Page, ts: number): Promise<void> {
  await page.waitForFunction(
    `Number(document.getElementById("snapshot").dataset.ts || 0) > ${ts}`,
    undefined,
    { timeout: 15_000 },
  );
}

/** Records each `ts` the page puts on screen from now on; the returned function reads them. */
async function recordShownTimestamps(page: Page): Promise<() => Promise<number[]>> {
  await page.evaluate(`{
    const target = document.getElementById("snapshot");
    window.shownTimestamps = [];
    new MutationObserver(() => window.shownTimestamps.push(Number(target.dataset.ts)))
      .observe(target, { attributes: true, attributeFilter: ["data-ts"] });
  }`);
  return () => page.evaluate("window.shownTimestamps");
}

/** Records each text an element shows from now on: a message may be replaced quickly. */
async function recordTexts(page: Page, id: string): Promise<() => Promise<string[]>> {
  await page.evaluate(`{
    const target = document.getElementById(${JSON.stringify(id)});
    (window.shownTexts ??= {})[target.id] = [];
    new MutationObserver(() => window.shownTexts[target.id].push(target.textContent))
      .observe(target, { childList: true, characterData: true, subtree: true });
  }`);
  return () => page.evaluate(`window.shownTexts[${JSON.stringify(id)}]`);
}

Deno.test({
  name: "viewer: shows the snapshot, the levels table and live updates",
  ignore: chromiumMissing,
  async fn() {
    await using stack = await Stack.start();
    const page = await stack.openViewer();
    await waitForText(page, "state", "open");
    await waitForText(page, "spot", /^\d+\.\d\d$/);
    // Read together: a snapshot arriving between two reads would pair one's spot with the next's ts.
    const [firstSpot, firstTs] = await page.evaluate(`[
      document.getElementById("spot").textContent,
      Number(document.getElementById("snapshot").dataset.ts || 0),
    ]`) as [string, number];
    // The headers a screen reader announces, in the spec's field order.
    const headers = await page.evaluate(
      `[...document.querySelectorAll("thead th")].map((th) => th.textContent)`,
    );
    assert.deepEqual(headers, [
      "Price",
      "Kind",
      "Direction",
      "Distance",
      "Break score (raw)",
      "Break score (smooth)",
      "Signal",
      "Confidence",
    ]);
    const rows = Number(await page.evaluate(`document.querySelectorAll("#level-rows tr").length`));
    assert.ok(rows >= 8 && rows <= 12, `${rows} level rows`);
    assert.equal(await text(page, "level-count"), String(rows));
    assert.match(await text(page, "route"), /^\/ws\/stream ← levels\.signals$/);

    // Live: newer snapshots replace the first, and the spot (a random walk) moves.
    await waitForTsAbove(page, firstTs);
    await page.waitForFunction(
      `document.getElementById("spot").textContent !== ${JSON.stringify(firstSpot)}`,
      undefined,
      { timeout: 15_000 },
    );
    assert.ok(await shownTs(page) > firstTs);
    await waitForText(page, "rate", /^(?!0\.0$)\d+\.\d$/);
    assert.match(await text(page, "age"), /^-?\d+\.\d s$/);
    assert.match(await text(page, "received"), /^\d+\.\d s ago$/);
    // Chromium inflates deflate-raw, so the viewer asks for compressed frames and counts them.
    assert.equal(await text(page, "encoding"), "deflate-raw (binary, inflated here)");
    await waitForText(page, "bytes-rate", /^[1-9]\d*$/);
    const bytesPerSecond = Number(await text(page, "bytes-rate"));
    const messagesPerSecond = Number(await text(page, "rate"));
    // ~6.8 KB snapshots at ~4/s: compressed frames are a fraction of 27 KB/s.
    assert.ok(
      bytesPerSecond < 0.5 * 6_800 * Math.max(messagesPerSecond, 4),
      `${bytesPerSecond} B/s at ${messagesPerSecond} msg/s`,
    );
    if (Deno.env.get("GATEWAY_SCREENSHOT") === "1") {
      // A full rate window first, so the picture shows the steady state.
      await waitForText(page, "counts", /^(?:[2-9]\d|\d{3,}) \//);
      await Deno.mkdir(new URL(".", SCREENSHOT), { recursive: true });
      await page.screenshot({ path: decodeURIComponent(SCREENSHOT.pathname), fullPage: true });
    }
  },
});

Deno.test({
  name: "viewer: stale when the publisher stops, fresh again when it resumes",
  ignore: chromiumMissing,
  async fn() {
    await using stack = await Stack.start();
    const page = await stack.openViewer();
    await waitForText(page, "state", "open");
    await waitForText(page, "spot", /^\d+\.\d\d$/);
    const lastTs = await stack.stopPublisher(page);
    // The client's default: 8 × 250 ms without a snapshot.
    await waitForText(page, "state", "stale");
    assert.equal(await page.evaluate(`document.body.dataset.state`), "stale");
    await stack.startPublisher();
    await waitForText(page, "state", "open");
    await waitForTsAbove(page, lastTs);
  },
});

Deno.test({
  name: "viewer: reconnects by itself after a gateway restart, never showing an older snapshot",
  ignore: chromiumMissing,
  async fn() {
    await using stack = await Stack.start();
    const page = await stack.openViewer();
    await waitForText(page, "state", "open");
    await waitForText(page, "spot", /^\d+\.\d\d$/);
    const shown = await recordShownTimestamps(page);
    const closeReasons = await recordTexts(page, "why");
    // With the publisher stopped, the new gateway's first frame is the snapshot on screen
    // already (its cache is seeded from the stream): the page must not show it again.
    const lastTs = await stack.stopPublisher(page);
    const port = stack.gateway.addr.port;
    await stack.gateway.shutdown();
    await waitForText(page, "state", "connecting");
    await stack.startGateway({}, port);
    await waitForText(page, "state", /^(open|stale)$/);
    // delivered / older dropped / disconnects (1001, then any refused while the port was free)
    await waitForText(page, "counts", /^\d+ \/ 1 \/ [1-9]\d*$/);
    assert.equal(await shownTs(page), lastTs);
    const reasons = await closeReasons();
    assert.match(reasons[0], /^the gateway is restarting \(1001 gateway shutting down\); retrying/);

    await stack.startPublisher();
    await waitForTsAbove(page, lastTs);
    await waitForText(page, "state", "open");
    const timestamps = await shown();
    assert.ok(timestamps.length > 0);
    for (let i = 1; i < timestamps.length; i++) {
      assert.ok(timestamps[i] > timestamps[i - 1], `shown out of order: ${timestamps.join(", ")}`);
    }
  },
});

Deno.test({
  name: "viewer: a refused token is shown with the close reason; the right one connects",
  ignore: chromiumMissing,
  async fn() {
    await using stack = await Stack.start({ GATEWAY_AUTH_TOKENS: TOKEN });
    const refused = await stack.openViewer("?token=not-the-right-token-000");
    await waitForText(
      refused,
      "why",
      /^the gateway refused the token \(1008 unauthorized\); retrying in \d+\.\d s$/,
    );
    assert.equal(await text(refused, "spot"), "–");
    assert.equal(await shownTs(refused), 0);
    assert.equal(
      await refused.evaluate(`document.getElementById("token").value`),
      "not-the-right-token-000",
    );

    const admitted = await stack.openViewer(`?token=${TOKEN}`);
    await waitForText(admitted, "state", "open");
    await waitForText(admitted, "spot", /^\d+\.\d\d$/);
    assert.equal(await text(admitted, "why"), "");
  },
});

Deno.test({
  name: "viewer: a templated route takes its value from an input; another route is one click away",
  ignore: chromiumMissing,
  async fn() {
    await using stack = await Stack.start();
    const templated = {
      path: "/ws/levels/{symbol}",
      subject: "levels.{symbol}.signals",
      templated: true,
    };
    const page = await stack.openViewer(
      `?route=${encodeURIComponent(templated.path)}&value=QQQ`,
      [STREAM_ROUTE, templated],
    );
    await waitForText(page, "route", "/ws/levels/QQQ ← levels.QQQ.signals");
    const input = page.getByLabel("symbol for /ws/levels/{symbol}");
    assert.equal(await input.inputValue(), "QQQ");
    await input.fill("SPY");
    await page.getByRole("button", { name: "Connect" }).click();
    await waitForText(page, "route", "/ws/levels/SPY ← levels.SPY.signals");

    await page.getByRole("radio").first().check();
    await page.getByRole("button", { name: "Connect" }).click();
    await waitForText(page, "route", "/ws/stream ← levels.signals");
    await waitForText(page, "state", "open");
    await waitForText(page, "spot", /^\d+\.\d\d$/);
  },
});

Deno.test("viewerHtml: route text cannot end the script element it is embedded in", () => {
  const hostile = "</script><script>alert(1)</script><!--";
  const html = viewerHtml([{ path: "/ws/x", subject: hostile, templated: false }]);
  assert.equal(html.includes(hostile), false);
  assert.equal(html.match(/<\/script>/g)?.length, 2); // the config block and the module only
  assert.ok(html.includes("\\u003c/script>"));
  assert.ok(!/(?:src|href)="https?:/.test(html), "no external assets");
  assert.ok(html.length < 15_000, `${html.length} bytes`);
});
