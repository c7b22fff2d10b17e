/**
 * Reconnect storms: connects that arrive while the gateway is busy wait in the kernel's accept
 * queue (Deno.serve's `tcpBacklog`, as deep as the kernel allows: lib/http/listener.ts) instead of
 * having their SYN dropped and retried seconds later; and a port is still the gateway's alone.
 */
import assert from "node:assert/strict";
import { NatsServer } from "../../tools/nats_server.ts";
import { Publisher, signal } from "../helpers/fixtures.ts";
import { GatewayProcess } from "../../tools/gateway_process.ts";
import { upgradeRequest } from "../helpers/raw_ws.ts";

/** More than Deno's default queue holds (511 + 1), fewer than the kernel's cap (somaxconn). */
const STORM = 1500;

/** Reads until the 101 and a frame holding `marker` came (a server frame's payload is plain). */
async function readUntil(conn: Deno.Conn, marker: string): Promise<string> {
  const decoder = new TextDecoder();
  const buffer = new Uint8Array(16 * 1024);
  let text = "";
  while (!(text.startsWith("HTTP/1.1 101") && text.includes(marker))) {
    const n = await conn.read(buffer);
    if (n === null) throw new Error(`closed before the snapshot: ${text.slice(0, 200)}`);
    text += decoder.decode(buffer.subarray(0, n), { stream: true });
    if (/^HTTP\/1\.1 (?!101)\d{3}/.test(text)) throw new Error(`refused: ${text.slice(0, 200)}`);
  }
  return text;
}

/** The kernel's cap on a listener's accept queue (4096 on the kernels we ship to). */
function somaxconn(): number {
  try {
    return Number(Deno.readTextFileSync("/proc/sys/net/core/somaxconn").trim());
  } catch {
    return 0;
  }
}

/** The command line of a process (the test must stop main.ts, not its launcher). */
function cmdline(pid: number): string {
  return Deno.readTextFileSync(`/proc/${pid}/cmdline`).replaceAll("\0", " ");
}

Deno.test({
  name:
    "storm: connects past Deno's default queue wait in the kernel while the gateway cannot accept, then all get the snapshot",
  ignore: Deno.build.os !== "linux" || somaxconn() <= STORM,
  fn: async () => {
    await using nats = await NatsServer.start();
    await using publisher = await Publisher.connect(nats.url);
    // As the start task runs it: /proc/sys is out of its read scope, so the log names the cap.
    await using gw = await GatewayProcess.spawn({ NATS_URL: nats.url });
    const addr = await gw.listening;
    assert.match(gw.output, /"msg":"gateway listening".*"listen_backlog":"65535 \(capped by/);
    await publisher.publish(signal(1));
    // Cached before the storm: a client that opens now gets it.
    const probe = new WebSocket(`ws://${addr.hostname}:${addr.port}/ws/stream`);
    await new Promise((resolve) => probe.addEventListener("message", resolve, { once: true }));
    probe.close();
    await new Promise((resolve) => probe.addEventListener("close", resolve, { once: true }));

    const pid = await gw.gatewayPid();
    assert.match(cmdline(pid), /main\.ts/, "the process stopped below is the gateway itself");
    const conns: Deno.TcpConn[] = [];
    const pending = new Set<Promise<unknown>>();
    let resumed = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    // Stopped, the gateway accepts nothing: every connect must wait in the accept queue. Deno's
    // default holds 512; a connect past that has its SYN dropped and cannot complete until the
    // gateway runs again, however long this waits.
    Deno.kill(pid, "SIGSTOP");
    try {
      try {
        for (let i = 0; i < STORM; i++) {
          const connect: Promise<unknown> = Deno.connect({
            hostname: addr.hostname,
            port: addr.port,
          })
            .then((conn) => (resumed ? conn.close() : conns.push(conn)))
            .finally(() => pending.delete(connect));
          pending.add(connect);
        }
        await Promise.race([
          Promise.all(pending),
          new Promise((resolve) => (timer = setTimeout(resolve, 5_000))),
        ]).finally(() => clearTimeout(timer));
        assert.equal(conns.length, STORM, `connects that completed while the gateway was stopped`);
        // The request goes out at once too: the kernel holds it for the gateway.
        await Promise.all(
          conns.map((conn) => conn.write(new TextEncoder().encode(upgradeRequest(addr)))),
        );
      } finally {
        resumed = true;
        Deno.kill(pid, "SIGCONT");
      }
      // Resumed: every queued connect is accepted, upgraded and given the cached snapshot. A
      // hang would be a failure: the connections are closed after 30 s, which ends the reads.
      timer = setTimeout(() => conns.forEach((conn) => conn.close()), 30_000);
      const texts = await Promise.all(conns.map((conn) => readUntil(conn, '"seq":1')));
      assert.equal(texts.length, STORM);
    } finally {
      clearTimeout(timer);
      for (const conn of conns) {
        try {
          conn.close();
        } catch {
          // closed by the 30 s bound already
        }
      }
      await Promise.allSettled(pending);
    }
  },
});

for (const workers of ["1", "2"]) {
  Deno.test(`storm: a gateway's port is refused to a second gateway (GATEWAY_WORKERS=${workers})`, async () => {
    await using nats = await NatsServer.start();
    await using first = await GatewayProcess.spawn({ NATS_URL: nats.url });
    const { port } = await first.listening;
    await using second = await GatewayProcess.spawn({
      // Nothing listens there: the port is checked before NATS is contacted.
      NATS_URL: "nats://127.0.0.1:1",
      GATEWAY_NATS_CONNECT_TIMEOUT_MS: "20000",
      GATEWAY_PORT: String(port),
      GATEWAY_WORKERS: workers,
    });
    const status = await second.status;
    assert.equal(status.code, 1);
    assert.match(
      second.output,
      new RegExp(`127\\.0\\.0\\.1:${port} \\(GATEWAY_HOST/GATEWAY_PORT\\) is already in use`),
    );
  });
}
