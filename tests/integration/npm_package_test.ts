/**
 * The npm package (scripts/build_npm.ts) as a frontend project gets it: built and `npm pack`ed,
 * the tarball installed into a scratch TypeScript project, a usage file type-checked with
 * `tsc --strict` and its emitted JavaScript run (on Deno's WebSocket: Node 20 has none) against
 * a live gateway: the snapshot arrives, and the client reconnects by itself after a restart.
 * Skipped, saying why, when npm is missing.
 */
import assert from "node:assert/strict";
import { startGateway } from "../../lib/gateway.ts";
import { CLIENT_JS } from "../../lib/http/client_bundle.ts";
import { NatsServer } from "../../tools/nats_server.ts";
import { Publisher, recordingLogger, signal, testConfig } from "../helpers/fixtures.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const denoJson = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`));
/** The TypeScript the build emits declarations with (e.g. typescript@5.9.3); the scratch project checks with the same. */
const TYPESCRIPT = (denoJson.imports.typescript as string).replace(/^npm:/, "");

async function npmVersion(): Promise<string | undefined> {
  try {
    const { success, stdout } = await new Deno.Command("npm", { args: ["--version"] }).output();
    return success ? new TextDecoder().decode(stdout).trim() : undefined;
  } catch {
    return undefined;
  }
}
const npm = await npmVersion();
if (!npm) console.log("npm_package_test skipped: npm not found on PATH");

async function run(command: string, args: string[], cwd: string): Promise<string> {
  const { code, stdout, stderr } = await new Deno.Command(command, { args, cwd }).output();
  const output = new TextDecoder().decode(stdout) + new TextDecoder().decode(stderr);
  if (code !== 0) throw new Error(`${command} ${args.join(" ")} exited ${code}:\n${output}`);
  return output;
}

/** A temp dir removed on dispose. */
async function tempDir(prefix: string): Promise<AsyncDisposable & { path: string }> {
  const path = await Deno.makeTempDir({ prefix });
  return { path, [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }) };
}

const USAGE = `import {
  connectGateway,
  type GatewayClient,
  type GatewayState,
  type LevelsSignalsV1,
} from "@gateway/client";

const url: string = Deno.env.get("GATEWAY_URL") ?? "";
const client: GatewayClient<LevelsSignalsV1> = connectGateway<LevelsSignalsV1>({
  url,
  backoffBaseMs: 50,
  backoffCapMs: 500,
});
const print = (line: Record<string, unknown>): void => console.log(JSON.stringify(line));
client.addEventListener("snapshot", (e) => {
  const snapshot: LevelsSignalsV1 = e.snapshot;
  print({ event: "snapshot", ts: snapshot.ts, spot: snapshot.spy.spot });
});
client.addEventListener("statechange", (e) => {
  const state: GatewayState = e.state;
  print({ event: "state", state });
});
client.addEventListener("disconnect", (e) => print({ event: "disconnect", code: e.code }));
`;

/** Deno's globals for tsc; the usage itself only uses Deno.env. */
const DENO_SHIM = `declare const Deno: { env: { get(name: string): string | undefined } };\n`;

/** A wrong use tsc must refuse: proves the declarations are real types, not `any`. */
const MISUSE = `import { connectGateway, type GatewayState } from "@gateway/client";
const state: GatewayState = "bogus";
connectGateway({ url: 42 });
export { state };
`;

/** The usage program's stdout as JSON lines, with a way to await the next matching one. */
class Lines {
  readonly seen: Record<string, unknown>[] = [];
  #waiters: (() => void)[] = [];
  constructor(stream: ReadableStream<Uint8Array>) {
    (async () => {
      let buffer = "";
      for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
        buffer += chunk;
        const parts = buffer.split("\n");
        buffer = parts.pop()!;
        for (const part of parts) this.seen.push(JSON.parse(part));
        for (const wake of this.#waiters.splice(0)) wake();
      }
    })();
  }

  async until(
    what: string,
    matches: (line: Record<string, unknown>) => boolean,
    from = 0,
    timeoutMs = 15_000,
  ): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    while (true) {
      const index = this.seen.findIndex((line, i) => i >= from && matches(line));
      if (index >= 0) return index;
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(`timed out waiting for ${what}; got ${JSON.stringify(this.seen)}`);
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.#waiters.push(resolve);
        timer = setTimeout(resolve, left);
      });
      clearTimeout(timer);
    }
  }
}

Deno.test({
  name:
    "npm package: packed, installed, type-checked with tsc --strict, run against a live gateway",
  ignore: !npm,
  async fn() {
    await using build = await tempDir("gateway-npm-build-");
    await using project = await tempDir("gateway-npm-project-");
    const packageDir = `${build.path}/package`;

    // The task's own command line, writing elsewhere than dist/npm/.
    const [deno, ...taskArgs] = (denoJson.tasks["build:npm"] as string).split(/\s+/);
    assert.equal(deno, "deno");
    const built = await run(
      Deno.execPath(),
      [...taskArgs, `--out=${packageDir}`, "--pack"],
      ROOT,
    );
    const tarball = /packed (\S+\.tgz)/.exec(built)?.[1];
    assert.ok(tarball, built);

    const manifest = JSON.parse(await Deno.readTextFile(`${packageDir}/package.json`));
    assert.equal(manifest.version, denoJson.version);
    assert.equal(manifest.type, "module");
    assert.equal(manifest.dependencies, undefined);
    // The same code a running gateway serves at /client.js.
    assert.equal(await Deno.readTextFile(`${packageDir}/gateway_client.js`), CLIENT_JS);

    await Deno.writeTextFile(
      `${project.path}/package.json`,
      JSON.stringify({ name: "scratch", private: true, type: "module" }),
    );
    await run("npm", ["install", "--no-audit", "--no-fund", tarball, TYPESCRIPT], project.path);
    const installed = JSON.parse(
      await Deno.readTextFile(`${project.path}/node_modules/@gateway/client/package.json`),
    );
    assert.equal(installed.version, denoJson.version);

    const tsc = `${project.path}/node_modules/.bin/tsc`;
    const flags = [
      "--strict",
      "--target",
      "es2022",
      "--module",
      "nodenext",
      "--moduleResolution",
      "nodenext",
      "--lib",
      "es2022,dom",
      "--skipLibCheck",
      "false",
    ];
    await Deno.writeTextFile(`${project.path}/usage.ts`, USAGE);
    await Deno.writeTextFile(`${project.path}/deno_shim.d.ts`, DENO_SHIM);
    await run(tsc, [...flags, "--outDir", "out", "usage.ts", "deno_shim.d.ts"], project.path);
    await Deno.writeTextFile(`${project.path}/misuse.ts`, MISUSE);
    const refused = await run(tsc, [...flags, "--noEmit", "misuse.ts"], project.path).then(
      () => "",
      (err: Error) => err.message,
    );
    assert.match(refused, /"bogus"/);
    assert.match(refused, /number.*string|not assignable to type 'string'/);

    // A live gateway; the emitted JavaScript connects with the installed package.
    await using nats = await NatsServer.start();
    await using publisher = await Publisher.connect(nats.url);
    await using first = await startGateway(testConfig(nats.url), { logger: recordingLogger() });
    await publisher.publish(signal(1));
    const { hostname, port } = first.addr;
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-net", "--allow-env=GATEWAY_URL", "--allow-read", "out/usage.js"],
      cwd: project.path,
      env: { GATEWAY_URL: `ws://${hostname}:${port}/ws/stream`, NO_COLOR: "1" },
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    await using _child = {
      [Symbol.asyncDispose]: async () => {
        child.kill("SIGKILL");
        await child.status;
      },
    };
    const lines = new Lines(child.stdout);
    const ts = (seq: number) => JSON.parse(signal(seq)).ts;

    await lines.until("snapshot 1", (l) => l.event === "snapshot" && l.ts === ts(1));
    assert.ok(lines.seen.some((l) => l.event === "state" && l.state === "open"));

    // A restart: the gateway says 1001, the client reconnects to the new one by itself.
    const before = lines.seen.length;
    await first.shutdown();
    await lines.until("1001", (l) => l.event === "disconnect" && l.code === 1001, before);
    await using second = await startGateway(
      testConfig(nats.url, { GATEWAY_PORT: String(port) }),
      { logger: recordingLogger() },
    );
    await lines.until("open again", (l) => l.event === "state" && l.state === "open", before);
    await publisher.publish(signal(2));
    await lines.until("snapshot 2", (l) => l.event === "snapshot" && l.ts === ts(2), before);
    // Snapshot 1 (the new gateway's cache) was not delivered twice.
    assert.equal(lines.seen.filter((l) => l.event === "snapshot").length, 2);
    await second.shutdown();
  },
});
