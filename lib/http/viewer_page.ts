/**
 * The live viewer served at `GET /`: one self-contained HTML page (no external assets) built on
 * the browser client at `/client.js`. It shows what the relay sends and computes nothing: the
 * routes, the connection state, the message rate, the bytes received per second (compressed
 * frames where the browser inflates them, as the client asks by default), how old the last
 * snapshot is, and for
 * `levels.signals.v1` payloads the SPY quote and the levels table; other payloads as JSON.
 *
 * Page URL parameters: `?route=PATH` (a configured path, default the first), `?value=SPY` (for a
 * templated route), `?token=…` (handed to the client, which sends it as the gateway expects).
 */

/** A configured route as the viewer lists it; `templated`: the path has one `{name}` segment. */
export interface ViewerRoute {
  readonly path: string;
  readonly subject: string;
  readonly templated: boolean;
}

export interface ViewerOptions {
  /**
   * The gateway's origin, e.g. `http://127.0.0.1:8000`, when the page is served from another one.
   * Default: the page's own origin (the gateway serving its own viewer).
   */
  readonly baseUrl?: string;
}

/** The whole page; `routes` and `options` are embedded as JSON, never as markup. */
export function viewerHtml(routes: readonly ViewerRoute[], options: ViewerOptions = {}): string {
  const config = { routes, baseUrl: options.baseUrl ?? null };
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>gateway viewer</title>
<style>${STYLE}</style>
</head>
<body data-state="connecting">
${BODY}
<script type="application/json" id="viewer-config">${jsonForScript(config)}</script>
<script type="module">${SCRIPT}</script>
</body>
</html>
`;
}

/** JSON that cannot end its `<script>` element or open a comment, whatever the strings hold. */
function jsonForScript(value: unknown): string {
  return JSON.stringify(value).replaceAll("<", "\\u003c").replaceAll("\u2028", "\\u2028")
    .replaceAll("\u2029", "\\u2029");
}

const STYLE = `
:root { color-scheme: light dark; font: 14px/1.4 system-ui, sans-serif; }
body { margin: 0 auto; padding: 1rem; max-width: 64rem; }
h1 { font-size: 1.3rem; margin: 0 0 .5rem; }
h2 { font-size: 1.05rem; margin: 1rem 0 .4rem; }
fieldset { border: 1px solid #8886; border-radius: 6px; }
fieldset label { display: block; margin: .2rem 0; }
code, pre, td.num, #stats dd { font-family: ui-monospace, monospace; }
#state { padding: .1rem .5rem; border-radius: 4px; background: #8883; font-weight: 600; }
[data-state=open] #state { background: #2a7; color: #fff; }
[data-state=stale] #state { background: #d90; color: #000; }
[data-state=connecting] #state { background: #57c; color: #fff; }
[data-state=closed] #state { background: #c33; color: #fff; }
#stats { display: grid; grid-template-columns: max-content 1fr; gap: .15rem 1rem; margin: .5rem 0; }
#stats dt { color: #888; } #stats dd { margin: 0; }
#quote { font-size: 1.2rem; } #spot { font-weight: 700; }
table { border-collapse: collapse; width: 100%; }
th, td { padding: .2rem .5rem; border-bottom: 1px solid #8884; text-align: left; }
td.num { text-align: right; }
.BREAK { color: #d33; } .BOUNCE { color: #2a7; }
pre { background: #8881; padding: .5rem; overflow: auto; max-height: 30rem; }
[data-state=stale] #snapshot { opacity: .6; }
`;

const BODY = `<header>
<h1>gateway viewer</h1>
<p>State: <span id="state" role="status" aria-live="polite">connecting</span>
<span id="why" aria-live="polite"></span></p>
</header>
<form id="pick">
<fieldset><legend>Routes</legend><div id="routes"></div>
<label>Token <input id="token" type="password" autocomplete="off"></label>
<button type="submit">Connect</button></fieldset>
</form>
<dl id="stats">
<dt>Route</dt><dd id="route">–</dd>
<dt>Messages/s (last 5 s)</dt><dd id="rate">0.0</dd>
<dt>Bytes/s received (last 5 s)</dt><dd id="bytes-rate">0</dd>
<dt>Frames</dt><dd id="encoding">–</dd>
<dt>Snapshot age (now − ts)</dt><dd id="age">–</dd>
<dt>Last received</dt><dd id="received">–</dd>
<dt>Delivered / older dropped / disconnects</dt><dd id="counts">0 / 0 / 0</dd>
</dl>
<section id="snapshot" aria-label="Latest snapshot">
<div id="levels" hidden>
<h2>SPY</h2>
<p id="quote">spot <span id="spot">–</span> · bid <span id="bid">–</span> · ask <span id="ask">–</span></p>
<table>
<caption>Levels (<span id="level-count">0</span>)</caption>
<thead><tr><th scope="col">Price</th><th scope="col">Kind</th><th scope="col">Direction</th>
<th scope="col">Distance</th><th scope="col">Break score (raw)</th><th scope="col">Break score (smooth)</th>
<th scope="col">Signal</th><th scope="col">Confidence</th></tr></thead>
<tbody id="level-rows"></tbody>
</table>
</div>
<details id="raw"><summary>Payload as JSON</summary><pre id="json">no snapshot yet</pre></details>
</section>`;

/** Plain JavaScript (the browser runs it as is); only textContent is written, never markup. */
const SCRIPT = `
const config = JSON.parse(document.getElementById("viewer-config").textContent);
const base = new URL(config.baseUrl ?? location.href);
const { connectGateway } = await import(new URL("/client.js", base).href);
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const RATE_WINDOW_MS = 5000;
let client;
let receivedAt = [];
/** [time, client.stats.bytesReceived] once per tick, over the rate window. */
let byteSamples = [];
let connectedSince = Date.now();
let lastReceivedAt;
let latestTs;

function renderRoutes() {
  const wanted = params.get("route");
  const chosen = Math.max(0, config.routes.findIndex((r) => r.path === wanted));
  config.routes.forEach((route, i) => {
    const label = document.createElement("label");
    const radio = Object.assign(document.createElement("input"), {
      type: "radio", name: "route", value: String(i), checked: i === chosen,
    });
    const path = Object.assign(document.createElement("code"), { textContent: route.path });
    const subject = Object.assign(document.createElement("code"), { textContent: route.subject });
    label.append(radio, " ", path, " ← ", subject);
    if (route.templated) {
      const name = /\\{([^}]+)\\}/.exec(route.path)?.[1] ?? "value";
      const input = Object.assign(document.createElement("input"), {
        id: "value-" + i, value: (i === chosen && params.get("value")) || "SPY", size: 8,
      });
      input.setAttribute("aria-label", name + " for " + route.path);
      label.append(" ", name, " ", input);
    }
    $("routes").append(label);
  });
  $("token").value = params.get("token") ?? "";
}

function selectedPath() {
  const i = Number(new FormData($("pick")).get("route") ?? 0);
  const route = config.routes[i];
  if (!route) return undefined;
  if (!route.templated) return { path: route.path, subject: route.subject };
  const value = $("value-" + i).value.trim();
  const name = /\\{([^}]+)\\}/.exec(route.path)?.[1];
  return {
    path: route.path.replace("{" + name + "}", encodeURIComponent(value)),
    subject: route.subject.replace("{" + name + "}", value),
  };
}

async function connect() {
  if (client) await client.close();
  const target = selectedPath();
  if (!target) return;
  const url = new URL(target.path, base);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  $("route").textContent = target.path + " ← " + target.subject;
  $("why").textContent = "";
  receivedAt = [];
  byteSamples = [];
  connectedSince = Date.now();
  lastReceivedAt = latestTs = undefined;
  const token = $("token").value;
  // Compressed frames where this browser inflates them (the client's own feature test).
  client = connectGateway({ url: url.href, ...(token ? { token: () => token } : {}) });
  $("encoding").textContent = client.encoding === "deflate-raw"
    ? "deflate-raw (binary, inflated here)" : "text";
  client.addEventListener("statechange", (e) => showState(e.state));
  client.addEventListener("snapshot", (e) => showSnapshot(e.snapshot));
  client.addEventListener("disconnect", (e) => showClose(e));
  showState(client.state);
}

function showState(state) {
  document.body.dataset.state = state;
  $("state").textContent = state;
  if (state === "open") $("why").textContent = "";
}

/** Says why the gateway closed, and when the client tries again. */
function showClose(e) {
  const refused = e.code === 1008 && ["unauthorized", "forbidden"].includes(e.reason);
  const what = refused ? "the gateway refused the token" : e.code === 4001 ? "token expired"
    : e.code === 1001 ? "the gateway is restarting" : "the connection closed";
  $("why").textContent = what + " (" + e.code + (e.reason ? " " + e.reason : "") +
    "); retrying in " + (e.retryInMs / 1000).toFixed(1) + " s";
}

function showSnapshot(snapshot) {
  lastReceivedAt = Date.now();
  receivedAt.push(lastReceivedAt);
  latestTs = typeof snapshot.ts === "number" ? snapshot.ts : undefined;
  $("snapshot").dataset.ts = String(latestTs ?? "");
  const isLevels = Array.isArray(snapshot.levels) && typeof snapshot.spy?.spot === "number";
  $("levels").hidden = !isLevels;
  if (isLevels) showLevels(snapshot);
  else $("raw").open = true;
  if ($("raw").open) $("json").textContent = JSON.stringify(snapshot, null, 2);
  tick();
}

const fixed = (n, digits) => (typeof n === "number" ? n.toFixed(digits) : "–");

function showLevels(snapshot) {
  $("spot").textContent = fixed(snapshot.spy.spot, 2);
  $("bid").textContent = fixed(snapshot.spy.bid, 2);
  $("ask").textContent = fixed(snapshot.spy.ask, 2);
  $("level-count").textContent = String(snapshot.levels.length);
  const rows = snapshot.levels.map((level) => {
    const row = document.createElement("tr");
    const cells = [
      [fixed(level.price, 2), "num"], [level.kind], [level.direction],
      [fixed(level.distance, 2), "num"], [String(level.break_score_raw ?? "–"), "num"],
      [String(level.break_score_smooth ?? "–"), "num"], [level.signal, String(level.signal)],
      [level.confidence],
    ];
    for (const [text, className] of cells) {
      const cell = document.createElement("td");
      cell.textContent = text ?? "–";
      if (className) cell.className = className;
      row.append(cell);
    }
    return row;
  });
  $("level-rows").replaceChildren(...rows);
}

/** Ages and the rate move with the clock, not only with frames. */
function tick() {
  const now = Date.now();
  receivedAt = receivedAt.filter((t) => now - t <= RATE_WINDOW_MS);
  // Over the window, or since connecting when that is shorter (at least 1 s).
  const spanMs = Math.max(1000, Math.min(RATE_WINDOW_MS, now - connectedSince));
  $("rate").textContent = (receivedAt.length / (spanMs / 1000)).toFixed(1);
  $("age").textContent = latestTs === undefined ? "–" : ((now - latestTs) / 1000).toFixed(1) + " s";
  $("received").textContent = lastReceivedAt === undefined ? "–"
    : ((now - lastReceivedAt) / 1000).toFixed(1) + " s ago";
  if (client) {
    const s = client.stats;
    $("counts").textContent = s.delivered + " / " + s.droppedOlder + " / " + s.disconnects;
    byteSamples.push([now, s.bytesReceived]);
    byteSamples = byteSamples.filter(([t]) => now - t <= RATE_WINDOW_MS);
    const [t0, bytes0] = byteSamples[0];
    const bytesSpanMs = Math.max(1000, now - t0);
    $("bytes-rate").textContent = String(Math.round((s.bytesReceived - bytes0) / (bytesSpanMs / 1000)));
  }
}

renderRoutes();
$("pick").addEventListener("submit", (e) => { e.preventDefault(); connect(); });
setInterval(tick, 250);
connect();
`;
