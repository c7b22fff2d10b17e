/**
 * deploy/nginx.conf in front of the real gateway (main.ts as a child process): the hostile
 * clients of issue 10 (#6–#9) are replayed through nginx while a normal client receives every
 * message in order (or counted as shed); the gateway's fds and RSS must stay bounded. Skipped
 * without nginx.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { Client, eventually, Publisher, signal } from "../helpers/fixtures.ts";
import { NatsServer } from "../../tools/nats_server.ts";
import { makeCerts, type TestCerts } from "../helpers/certs.ts";
import { findNginx, freePort, NginxProcess, renderConfig } from "../helpers/nginx.ts";
import { GatewayProcess } from "../../tools/gateway_process.ts";
import { encodeClientFrame } from "../helpers/raw_ws.ts";
import parsePrometheusTextFormat from "parse-prometheus-text-format";

const TOKEN = "proxy-test-token-0123456789";
/**
 * proxy_read_timeout for the test: short, so a closed-but-unread socket is cut within the test.
 * The gateway's pings are off here (below), and a snapshot every 50 ms keeps healthy tunnels busy.
 */
const READ_TIMEOUT_S = 6;
const MB = 1024 * 1024;
const nginx = await findNginx();

/** A distinct loopback source address, so nginx's per-address limits see separate clients. */
function source(block: number, i: number): string {
  return `127.${block}.${Math.floor(i / 200)}.${(i % 200) + 1}`;
}

function upgradeRequest(token?: string): string {
  const key = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))));
  const query = token ? `?token=${token}` : "";
  return `GET /ws/stream${query} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n` +
    `Connection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`;
}

/** A raw TCP client from a chosen source address (node:net can bind one; Deno.connect cannot). */
class Peer {
  readonly openedAt = Date.now();
  readonly closed: Promise<number>;
  #received: Uint8Array[] = [];
  #onData: (() => void) | undefined;

  private constructor(readonly socket: net.Socket) {
    socket.on("error", () => {}); // resets are what these peers are for
    socket.on("data", (chunk: Uint8Array) => {
      this.#received.push(chunk);
      this.#onData?.();
    });
    this.closed = new Promise((resolve) => socket.once("close", () => resolve(Date.now())));
  }

  static open(addr: Deno.NetAddr, localAddress: string): Promise<Peer> {
    const socket = net.connect({ host: addr.hostname, port: addr.port, localAddress });
    return new Promise((resolve, reject) => {
      socket.once("connect", () => resolve(new Peer(socket)));
      socket.once("error", reject);
    });
  }

  write(data: string | Uint8Array): Promise<void> {
    return new Promise((resolve) => {
      if (this.socket.write(data)) resolve();
      else this.socket.once("drain", () => resolve());
    });
  }

  /** Waits until the received bytes satisfy `done`; then stops reading if `pause`. */
  async until(done: (bytes: Uint8Array) => boolean, pause = false): Promise<Uint8Array> {
    while (true) {
      const bytes = concat(this.#received);
      if (done(bytes) || this.socket.destroyed) {
        if (pause) this.socket.pause();
        return bytes;
      }
      await Promise.race([
        new Promise<void>((resolve) => this.#onData = resolve),
        this.closed,
      ]);
    }
  }

  /** Sends an upgrade and returns the HTTP status; with `pause`, reads nothing after the head. */
  async upgrade(token: string | undefined, pause = false): Promise<number> {
    await this.write(upgradeRequest(token));
    const bytes = await this.until((b) => headEnd(b) > 0, pause);
    return Number(/^HTTP\/1\.1 (\d{3})/.exec(new TextDecoder().decode(bytes))?.[1] ?? 0);
  }

  reset(): void {
    this.socket.resetAndDestroy();
  }
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

function headEnd(bytes: Uint8Array): number {
  for (let i = 3; i < bytes.length; i++) {
    if (bytes[i - 3] === 13 && bytes[i - 2] === 10 && bytes[i - 1] === 13 && bytes[i] === 10) {
      return i + 1;
    }
  }
  return -1;
}

/** The code of the first close frame after the head, or undefined when none arrived. */
function closeCode(bytes: Uint8Array): number | undefined {
  let at = headEnd(bytes);
  while (at > 0 && at + 1 < bytes.length) {
    const opcode = bytes[at] & 0x0f;
    let length = bytes[at + 1] & 0x7f;
    let header = 2;
    if (length === 126) [length, header] = [(bytes[at + 2] << 8) | bytes[at + 3], 4];
    else if (length === 127) return undefined; // the gateway never sends frames this large here
    if (opcode === 8) return (bytes[at + header] << 8) | bytes[at + header + 1];
    at += header + length;
  }
  return undefined;
}

/** `promise`, or an error naming `what` after `ms`: a hung start must fail, not stall the suite. */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

async function fdCount(pid: number): Promise<number> {
  let count = 0;
  for await (const _ of Deno.readDir(`/proc/${pid}/fd`)) count++;
  return count;
}

async function memory(pid: number): Promise<{ rss: number; peak: number }> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  const kb = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)![1]);
  return { rss: kb("VmRSS") * 1024, peak: kb("VmHWM") * 1024 };
}

/** Upgrade requests, each reset (RST) right after it is sent or a few ms later. */
async function resetUpgrades(addr: Deno.NetAddr, addresses: string[]): Promise<void> {
  for (let i = 0; i < addresses.length; i += 50) {
    await Promise.all(
      addresses.slice(i, i + 50).map(async (address, j) => {
        const peer = await Peer.open(addr, address);
        await peer.write(upgradeRequest(TOKEN));
        if (j % 2) await new Promise((resolve) => setTimeout(resolve, j % 5));
        peer.reset();
      }),
    );
  }
}

/** A wss:// upgrade through nginx's TLS server, trusting only the test CA. */
async function upgradesOverTls(addr: Deno.NetAddr, certs: TestCerts): Promise<void> {
  const caCerts = [await Deno.readTextFile(certs.caPath)];
  const tls = await Deno.connectTls({ hostname: "127.0.0.1", port: addr.port, caCerts });
  try {
    await tls.write(new TextEncoder().encode(upgradeRequest(TOKEN)));
    const head = new Uint8Array(4096);
    const n = await tls.read(head);
    assert.match(new TextDecoder().decode(head.subarray(0, n ?? 0)), /^HTTP\/1\.1 101 /);
  } finally {
    tls.close();
  }
}

/** Publishes padded snapshots (seq 1, 2, …) every 50 ms until stopped. */
function publishContinuously(publisher: Publisher): { stop: () => Promise<number> } {
  let running = true;
  let seq = 0;
  const pad = "x".repeat(8 * 1024);
  const loop = (async () => {
    while (running) {
      await publisher.publish(signal(++seq, { pad }));
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return seq;
    },
  };
}

/** Samples the gateway's fds and RSS every 100 ms: the most fds seen, the most RSS since reset. */
function sampleGateway(pid: number) {
  const peak = { fds: 0, rss: 0 };
  const timer = setInterval(async () => {
    try {
      peak.fds = Math.max(peak.fds, await fdCount(pid));
      peak.rss = Math.max(peak.rss, (await memory(pid)).rss);
    } catch {
      // the process is gone; the test fails elsewhere
    }
  }, 100);
  return {
    peak,
    /** A reading taken elsewhere, so a burst between samples still counts. */
    saw: (fds: number) => {
      peak.fds = Math.max(peak.fds, fds);
      return fds;
    },
    resetRss: () => peak.rss = 0,
    stop: () => clearInterval(timer),
  };
}

if (!nginx.bin) console.log(`proxy_test skipped: ${nginx.reason}`);

Deno.test({
  name: "deploy/nginx.conf: every marked line is rewritten, and only those",
  fn: async () => {
    const template = await Deno.readTextFile(new URL("../../deploy/nginx.conf", import.meta.url));
    const settings = {
      dir: "/tmp/x",
      upstream: { transport: "tcp", hostname: "127.0.0.1", port: 9 } as Deno.NetAddr,
      publicPort: 1,
      tlsPort: 2,
      adminPort: 3,
      readTimeoutS: 6,
      certFile: "/c",
      keyFile: "/k",
    };
    const rendered = renderConfig(template, settings).split("\n");
    const shipped = template.split("\n");
    assert.equal(rendered.length, shipped.length);
    shipped.forEach((line, i) => {
      if (!/^\s*[^#\s].*# deploy:/.test(line)) assert.equal(rendered[i], line);
    });
  },
});

Deno.test({
  name: "nginx in front of the gateway bounds resets, idle, non-reading and large-frame clients",
  ignore: !nginx.bin,
  fn: async (t) => {
    const dir = await Deno.makeTempDir({ prefix: "gateway-nginx-" });
    await using _cleanup = { [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }) };
    await using nats = await NatsServer.start();
    // main.ts itself, not the start task's launcher: /proc/<pid> must be the gateway's.
    await using gateway = await GatewayProcess.spawn({
      NATS_URL: nats.url,
      // The gateway's own defences against non-readers (ping timeout, 4008) are off, so that
      // what ends them here is nginx: send_timeout and proxy_read_timeout.
      GATEWAY_IDLE_TIMEOUT_S: "0",
      GATEWAY_SLOW_CLIENT_TIMEOUT_MS: "60000",
      // The normal client must get every snapshot: the age bound would conflate it when a
      // loaded test machine stalls nginx or this process (not the gateway, whose own stalls it
      // discounts); it has its own tests. The byte bound (256 KiB: 32 snapshots, 1.6 s of a
      // reader not reading here) still holds; a 64 KiB one was overrun by such stalls when the
      // suite ran files side by side (a CI run lost 266-271).
      GATEWAY_CLIENT_MAX_QUEUE_MS: "0",
      GATEWAY_AUTH_TOKENS: TOKEN,
    }, ["run", "--quiet", "--allow-all", "main.ts"]);
    const upstream = await within(gateway.listening, 20_000, "the gateway to listen");
    const pid = gateway.child.pid;
    await using certs = await makeCerts().catch((err) => {
      console.log(`proxy_test: TLS server not exercised (${err.message.split("\n")[0]})`);
      return undefined;
    });
    await using proxy = await NginxProcess.start(nginx.bin!, {
      dir,
      upstream,
      publicPort: freePort(),
      tlsPort: freePort(),
      adminPort: freePort(),
      readTimeoutS: READ_TIMEOUT_S,
      certFile: certs?.serverCertPath ?? "/nonexistent",
      keyFile: certs?.serverKeyPath ?? "/nonexistent",
    });
    const edge = proxy.publicAddr;
    await using publisher = await Publisher.connect(nats.url);
    await using normal = await Client.open(edge, `/ws/stream?token=${TOKEN}`);
    const publishing = publishContinuously(publisher);
    await normal.waitFor(1);
    const base = { fds: await fdCount(pid), ...await memory(pid) };
    const sampler = sampleGateway(pid);
    /** Figures printed at the end (README "Exposing it to the internet" quotes them). */
    const figures: string[] = [];
    const settled = (what: string, timeoutMs = 30_000) =>
      eventually(async () => (await fdCount(pid)) <= base.fds + 8, what, timeoutMs);

    await t.step("(6) upgrades reset before the 101 leave no fds and lock nobody out", async () => {
      await resetUpgrades(edge, Array.from({ length: 300 }, () => source(2, 0)));
      await resetUpgrades(edge, Array.from({ length: 400 }, (_, i) => source(3, i % 40)));
      const afterResets = sampler.saw(await fdCount(pid));
      const t0 = Date.now();
      await settled("the gateway's fds to return after 700 resets");
      figures.push(
        `(6) 700 resets: fds ${afterResets} just after, back to ${await fdCount(pid)} in ` +
          `${Date.now() - t0} ms`,
      );
      await using fresh = await Client.open(edge, `/ws/stream?token=${TOKEN}`);
      await fresh.waitFor(1);
      assert.ok(/limiting requests/.test(await proxy.errorLog()), "one address was rate-limited");
    });

    await t.step("(7, 8) idle, slowloris and non-reading clients are cut by nginx", async () => {
      const idle = await Promise.all(
        Array.from({ length: 150 }, (_, i) => Peer.open(edge, source(6, i % 15))),
      );
      const slow = await Promise.all(
        Array.from({ length: 50 }, (_, i) => Peer.open(edge, source(7, i % 5))),
      );
      const dripping = slow.map(async (peer) => {
        const head = new TextEncoder().encode(upgradeRequest(TOKEN));
        for (let i = 0; i < head.length && !peer.socket.destroyed; i++) {
          await peer.write(head.subarray(i, i + 1));
          await Promise.race([peer.closed, new Promise((r) => setTimeout(r, 500))]);
        }
      });
      // Nothing of these reached the gateway: nginx holds them until client_header_timeout.
      const idleFds = await fdCount(pid);
      assert.ok(idleFds <= base.fds + 4, `idle TCP reached the gateway (${idleFds} fds)`);

      const stalled = await Promise.all(
        Array.from({ length: 20 }, (_, i) => Peer.open(edge, source(8, i))),
      );
      const unauthorized = await Promise.all(
        Array.from({ length: 20 }, (_, i) => Peer.open(edge, source(9, i))),
      );
      const statuses = await Promise.all([
        ...stalled.map((peer) => peer.upgrade(TOKEN, true)),
        ...unauthorized.map((peer) => peer.upgrade(undefined, true)),
      ]);
      assert.deepEqual(new Set(statuses), new Set([101]));
      const during = sampler.saw(await fdCount(pid));
      assert.ok(during >= base.fds + 30, `the non-readers reach the gateway (${during} fds)`);

      // client_header_timeout 10 s: one deadline for the whole head, however it drips.
      for (const peer of [...idle, ...slow]) {
        const lived = (await peer.closed) - peer.openedAt;
        assert.ok(lived < 20_000, `an idle/slowloris connection lived ${lived} ms`);
      }
      await Promise.all(dripping);
      // send_timeout (10 s) ends the stalled ones, proxy_read_timeout the closed-but-unread ones;
      // each timer starts when that peer's buffers fill, so they fire over a few seconds.
      const cut = async (reason: string, block: number) =>
        new Set(
          (await proxy.errorLog()).split("\n").filter((line) =>
            line.includes(`${reason} timed out`) && line.includes("upgraded connection") &&
            line.includes(`client: 127.${block}.`)
          ).map((line) => /client: (\S+),/.exec(line)?.[1]),
        ).size;
      const t0 = Date.now();
      // Polled every 250 ms, not eventually()'s 20 ms: each poll reads the whole error log.
      while (
        (await cut("client", 8)) < stalled.length ||
        (await cut("upstream", 9)) < unauthorized.length
      ) {
        assert.ok(Date.now() - t0 < 40_000, "nginx did not cut every non-reading client in 40 s");
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
      await settled("the gateway to release the non-readers' fds");
      figures.push(
        `(7) 200 idle/slowloris: fds +${
          idleFds - base.fds
        }; (8) 40 non-readers: fds ${during}, all cut ` +
          `${((Date.now() - t0) / 1000).toFixed(1)} s after the idle ones were`,
      );
      for (const peer of [...stalled, ...unauthorized]) peer.socket.destroy();
    });

    await t.step(
      "(9) large client frames: 1009 through nginx; memory bounded by the frames let in",
      async () => {
        const FRAMES = 3;
        const frame = encodeClientFrame(1, new Uint8Array(24 * MB).fill(0x61));
        const before = await memory(pid);
        sampler.resetRss();
        await Promise.all(Array.from({ length: FRAMES }, async (_, i) => {
          const peer = await Peer.open(edge, source(10, i));
          assert.equal(await peer.upgrade(TOKEN), 101);
          await peer.write(frame);
          const bytes = await peer.until((b) => closeCode(b) !== undefined);
          assert.equal(closeCode(bytes), 1009);
          peer.socket.destroy();
        }));
        await settled("the gateway's fds after the large frames");
        const after = await memory(pid);
        // A new high-water mark is this step's peak; else the 100 ms samples are the best we have.
        const peakRss = Math.max(sampler.peak.rss, after.peak > before.peak ? after.peak : 0);
        const peakGrowth = peakRss - before.rss;
        // Deno buffers each frame whole before the gateway sees its size; nginx cannot read
        // frames, so the bound is per connection (64 MiB) × connections nginx lets in.
        assert.ok(peakGrowth < FRAMES * 3 * 24 * MB, `peak RSS grew by ${peakGrowth / MB} MB`);
        figures.push(
          `(9) ${FRAMES} × 24 MB frames: peak RSS +${(peakGrowth / MB).toFixed(0)} MB, ` +
            `RSS ${(before.rss / MB).toFixed(0)} → ${(after.rss / MB).toFixed(0)} MB`,
        );
      },
    );

    await t.step("(9) one address gets at most 20 connections (limit_conn)", async () => {
      const peers = await Promise.all(
        Array.from({ length: 25 }, () => Peer.open(edge, source(11, 0))),
      );
      const statuses = await Promise.all(peers.map((peer) => peer.upgrade(TOKEN, true)));
      assert.equal(statuses.filter((s) => s === 101).length, 20, String(statuses));
      assert.equal(statuses.filter((s) => s === 429).length, 5, String(statuses));
      for (const peer of peers) peer.socket.destroy();
      await settled("the gateway's fds after the capped address left");
    });

    await t.step("health and metrics: admin server only; TLS server upgrades", async () => {
      const admin = proxy.adminAddr;
      const publicHealth = await fetch(`http://${edge.hostname}:${edge.port}/health`);
      assert.equal(publicHealth.status, 404);
      await publicHealth.body?.cancel();
      const metrics = await fetch(`http://${admin.hostname}:${admin.port}/metrics`);
      assert.equal(metrics.status, 200);
      assert.match(await metrics.text(), /gateway_ws_connections 1\b/);
      if (certs) await upgradesOverTls(proxy.tlsAddr, certs);
    });

    const published = await publishing.stop();
    const seqOf = (message: string): number => JSON.parse(message).seq;
    // Until the newest arrived (a conflated client gets it too, and the check below shows the gap).
    const newest = () => {
      if (normal.messages.length > 0 && seqOf(normal.messages.at(-1)!) === published) return true;
      if (normal.socket.readyState === WebSocket.CLOSED) {
        throw new Error(`closed after ${normal.messages.length} of ${published} messages`);
      }
      return false;
    };
    const received = (await eventually(newest, "the newest snapshot through nginx", 20_000)
      .then(() => normal.messages).catch(async (err) => {
        // Who ended it: nginx says why in its error log (a timeout, the upstream's reset), the
        // gateway in its warnings (behind, conflating) and counters.
        const warnings = gateway.output.split("\n").filter((l) => /"level":"(warn|error)"/.test(l));
        const admin = proxy.adminAddr;
        const metrics = await fetch(`http://${admin.hostname}:${admin.port}/metrics`)
          .then((r) => r.text()).catch((e) => String(e));
        const counters = metrics.split("\n").filter((l) =>
          /^gateway_(slow_client|load_shedding|event_loop_late|ws_connections |consumer|messages)/
            .test(l)
        );
        throw new Error(
          `${err.message}; nginx error log:\n${(await proxy.errorLog()).slice(-2000)}\n` +
            `gateway warnings:\n${warnings.slice(-20).join("\n")}\ngateway metrics:\n` +
            counters.join("\n"),
        );
      })).map(seqOf);
    // What the gateway promises a client that reads: every snapshot in order, ending on the
    // newest, except what the route counted as shed because the gateway was behind (here: busy
    // parsing 72 MB of hostile frames on a loaded machine; soak runs saw 1 and 6 shed) or the
    // client's own bounds conflated. Nothing is lost without being counted.
    const every = Array.from({ length: published }, (_, i) => i + 1);
    assert.ok(received.every((n, i) => i === 0 || n > received[i - 1]), "in order");
    assert.equal(received.at(-1), published, "ends on the newest");
    const missing = every.filter((n) => !received.includes(n));
    if (missing.length > 0) {
      const admin = proxy.adminAddr;
      const families = parsePrometheusTextFormat(
        await fetch(`http://${admin.hostname}:${admin.port}/metrics`).then((r) => r.text()),
      ) as { name: string; metrics: { value: string; labels?: Record<string, string> }[] }[];
      const count = (name: string, reason?: string) =>
        families.find((f) => f.name === name)?.metrics
          .filter((m) => reason === undefined || m.labels?.reason === reason)
          .reduce((sum, m) => sum + Number(m.value), 0) ?? 0;
      const shed = count("gateway_nats_messages_skipped_total", "behind");
      const conflated = count("gateway_slow_client_conflations_total");
      console.log(`proxy: missing ${missing}; shed as behind ${shed}, conflated ${conflated}`);
      assert.ok(
        missing.length <= shed + conflated,
        `${missing.length} missing, only ${shed} shed and ${conflated} conflated: ${missing}`,
      );
    }
    sampler.stop();
    const end = { fds: await fdCount(pid), ...await memory(pid) };
    // Control, last because it leaves the gateway fds for good: the same resets, not proxied.
    const beforeDirect = await fdCount(pid);
    await resetUpgrades(upstream, Array.from({ length: 200 }, (_, i) => source(12, i % 40)));
    await new Promise((resolve) => setTimeout(resolve, 2000)); // the window we watch, not a wait
    figures.push(
      `control, 200 resets straight to the gateway: fds ${beforeDirect} → ${await fdCount(pid)} ` +
        "2 s later",
    );

    console.log(
      `proxy: gateway fds ${base.fds} at start, ${sampler.peak.fds} at most, ${end.fds} at end; ` +
        `RSS ${(base.rss / MB).toFixed(0)} MB at start, peak ${(end.peak / MB).toFixed(0)} MB, ` +
        `${
          (end.rss / MB).toFixed(0)
        } MB at end; normal client got ${received.length} of ${published} ` +
        `in order\n  ${figures.join("\n  ")}`,
    );
  },
});
