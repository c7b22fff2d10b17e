/**
 * `deno task demo` end to end: it prints the viewer's URL with the real port, the gateway there
 * relays schema-valid `levels.signals.v1` snapshots from the synthetic publisher, and SIGINT stops
 * every process it started (nats-server, the gateway's launcher and main.ts) and exits 0.
 */
import assert from "node:assert/strict";
import { Ajv2020 } from "ajv/dist/2020.js";
import { Client } from "../helpers/fixtures.ts";
import { SyntheticMarket } from "../../scripts/publisher.ts";

const ROOT = new URL("../..", import.meta.url);
const VIEWER_LINE = /^viewer: (http:\/\/[^\s]+)$/m;

async function schemaValidator() {
  const schema = JSON.parse(
    await Deno.readTextFile(new URL("client/levels_signals_v1.schema.json", ROOT)),
  );
  return new Ajv2020({ strict: true }).compile(schema);
}

/** The `demo` task's deno arguments, so the test runs what `deno task demo` runs. */
async function demoTaskArgs(): Promise<string[]> {
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", ROOT)));
  const [deno, ...args] = (config.tasks.demo as string).split(/\s+/);
  assert.equal(deno, "deno");
  return args;
}

/** What a deno and nats-server need to run, and `extra`. */
function passedThrough(extra: Record<string, string>): Record<string, string> {
  const names = ["PATH", "HOME", "DENO_DIR", "NATS_SERVER_BIN", "TMPDIR"];
  const env: Record<string, string> = {};
  for (const name of names) {
    const value = Deno.env.get(name);
    if (value !== undefined) env[name] = value;
  }
  return { ...env, ...extra };
}

/** Every live descendant of `pid`, from /proc (children of each of its threads). */
async function descendants(pid: number): Promise<number[]> {
  const found: number[] = [];
  const tasks = `/proc/${pid}/task`;
  for await (const task of Deno.readDir(tasks)) {
    const text = await Deno.readTextFile(`${tasks}/${task.name}/children`).catch(() => "");
    for (const child of text.trim().split(/\s+/).filter((p) => p !== "").map(Number)) {
      found.push(child, ...await descendants(child));
    }
  }
  return found;
}

/** Alive and not a zombie. */
async function alive(pid: number): Promise<boolean> {
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`).catch(() => undefined);
  return stat !== undefined && !/^\d+ \(.*\) Z /.test(stat);
}

async function processName(pid: number): Promise<string> {
  return (await Deno.readTextFile(`/proc/${pid}/comm`).catch(() => "?")).trim();
}

/** Reads stdout until the viewer line; keeps everything for failure messages. */
async function waitForViewerUrl(
  lines: ReadableStreamDefaultReader<string>,
  seen: string[],
): Promise<string> {
  const deadline = setTimeout(() => lines.cancel("timed out waiting for the viewer URL"), 30_000);
  try {
    while (true) {
      const { value, done } = await lines.read();
      if (done) throw new Error(`demo ended before printing the viewer URL:\n${seen.join("")}`);
      seen.push(value);
      const match = VIEWER_LINE.exec(seen.join(""));
      if (match) return match[1];
    }
  } finally {
    clearTimeout(deadline);
  }
}

Deno.test("synthetic market: 8-12 levels per snapshot, schema-valid, ts increasing, spot moving", async () => {
  const validate = await schemaValidator();
  const market = new SyntheticMarket();
  const snapshots = Array.from({ length: 200 }, () => market.next(1_700_000_000_000));
  for (const snapshot of snapshots) {
    assert.ok(validate(snapshot), JSON.stringify(validate.errors));
    assert.ok(snapshot.levels.length >= 8 && snapshot.levels.length <= 12);
    for (const level of snapshot.levels) {
      assert.equal(level.distance, Number(Math.abs(level.price - snapshot.spy.spot).toFixed(2)));
      assert.equal(level.direction, level.price < snapshot.spy.spot ? "SUPPORT" : "RESISTANCE");
    }
  }
  // The same clock reading each time: ts must still increase, or the client would drop frames.
  for (let i = 1; i < snapshots.length; i++) assert.ok(snapshots[i].ts > snapshots[i - 1].ts);
  assert.ok(new Set(snapshots.map((s) => s.spy.spot)).size > 10, "the spot moves");
});

Deno.test("deno task demo: prints the viewer URL, relays valid snapshots, SIGINT stops everything", async () => {
  const validate = await schemaValidator();
  const demo = new Deno.Command(Deno.execPath(), {
    args: await demoTaskArgs(),
    cwd: ROOT.pathname,
    // Nothing inherited: a NATS_URL in the test's environment must not send the demo elsewhere.
    env: passedThrough({ GATEWAY_PORT: "0", NO_COLOR: "1" }),
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = demo.stderr.pipeThrough(new TextDecoderStream());
  const stderrText = (async () => {
    let text = "";
    for await (const chunk of stderr) text += chunk;
    return text;
  })();
  const stdout = demo.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const seen: string[] = [];
  let started: number[] = [];
  try {
    const url = new URL(await waitForViewerUrl(stdout, seen));
    assert.notEqual(url.port, "0");
    assert.notEqual(url.port, "");
    started = await descendants(demo.pid);
    const names = await Promise.all(started.map(processName));
    assert.ok(names.includes("nats-server"), `children: ${names.join(", ")}`);
    // The printed URL is the viewer itself.
    const page = await fetch(url);
    assert.equal(page.status, 200);
    assert.match(page.headers.get("content-type") ?? "", /^text\/html/);
    assert.match(await page.text(), /<html/);

    await using client = await Client.open({
      transport: "tcp",
      hostname: url.hostname,
      port: Number(url.port),
    });
    const frames = await client.waitFor(3);
    const snapshots = frames.map((frame) => JSON.parse(frame));
    for (const snapshot of snapshots) {
      assert.ok(validate(snapshot), JSON.stringify(validate.errors));
    }
    assert.ok(snapshots[2].ts > snapshots[1].ts && snapshots[1].ts > snapshots[0].ts);
    await client.close();

    const stoppedAt = Date.now();
    demo.kill("SIGINT");
    const status = await demo.status;
    const tookMs = Date.now() - stoppedAt;
    for (let r = await stdout.read(); !r.done; r = await stdout.read()) seen.push(r.value);
    assert.equal(status.code, 0, `${seen.join("")}\n${await stderrText}`);
    assert.ok(tookMs < 15_000, `stopping took ${tookMs} ms`);
    const left = [];
    for (const pid of started) if (await alive(pid)) left.push(pid);
    assert.deepEqual(left, [], "processes the demo started are still running");
    const store = /store (\S+)\)/.exec(seen.join(""))?.[1];
    assert.ok(store, "the demo names its temporary store");
    assert.equal(await Deno.stat(store).then(() => true, () => false), false, "store removed");
  } finally {
    // On failure: leave nothing behind.
    for (const pid of started) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch {
        // Gone already.
      }
    }
    try {
      demo.kill("SIGKILL");
    } catch {
      // Exited.
    }
    await demo.status;
    await stdout.cancel().catch(() => {});
    await stderrText;
  }
});
