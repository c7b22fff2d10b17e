/**
 * Process metrics as deployed: under `deno task start`'s scoped permissions, with two workers
 * in one process (the figures are the process's, never a sum over workers).
 */
import assert from "node:assert/strict";
import { VERSION } from "../../lib/version.ts";
import { scrape, value } from "../helpers/metrics.ts";
import { NatsServer } from "../../tools/nats_server.ts";
import { GatewayProcess } from "../../tools/gateway_process.ts";

/** VmRSS and utime + stime of `pid`, as the kernel counts them. */
async function procFigures(pid: number): Promise<{ rss: number; cpu: number }> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  const rssKb = Number(/^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1]);
  const stat = (await Deno.readTextFile(`/proc/${pid}/stat`)).split(") ")[1].split(" ");
  // Fields 14 and 15 of stat(5), in clock ticks (100 per second on Linux).
  return { rss: rssKb * 1024, cpu: (Number(stat[11]) + Number(stat[12])) / 100 };
}

Deno.test({
  name: "metrics: memory, CPU and build info of the whole process under the start task's scope",
  ignore: Deno.build.os !== "linux",
  async fn() {
    await using nats = await NatsServer.start();
    await using gateway = await GatewayProcess.spawn({ NATS_URL: nats.url, GATEWAY_WORKERS: "2" });
    const addr = await gateway.listening;
    const pid = await gateway.gatewayPid();
    const before = await procFigures(pid);
    const families = await scrape(addr);
    const after = await procFigures(pid);

    assert.equal(value(families, "gateway_build_info", { version: VERSION }), 1);
    // One process's RSS; a sum over the two workers would be about twice the kernel's figure.
    const rss = value(families, "process_resident_memory_bytes");
    const [low, high] = [Math.min(before.rss, after.rss), Math.max(before.rss, after.rss)];
    assert.ok(rss > low * 0.7 && rss < high * 1.3, `rss ${rss}, kernel ${low}..${high}`);
    const cpu = value(families, "process_cpu_seconds_total");
    assert.ok(cpu > 0 && cpu <= after.cpu + 0.5, `cpu ${cpu}, kernel ${after.cpu}`);
    assert.equal(families.get("process_cpu_seconds_total")?.type, "COUNTER");
    const started = value(families, "process_start_time_seconds");
    assert.ok(Math.abs(Date.now() / 1000 - started) < 120, `started ${started}`);
    // Deno lists /proc/self/fd only under --allow-all, which the start task never grants.
    assert.equal(families.has("process_open_fds"), false);
  },
});

Deno.test({
  name: "metrics: process_open_fds where the process may list /proc/self/fd (--allow-all)",
  ignore: Deno.build.os !== "linux",
  async fn() {
    await using nats = await NatsServer.start();
    const main = new URL("../../main.ts", import.meta.url).pathname;
    await using gateway = await GatewayProcess.spawn({ NATS_URL: nats.url }, [
      "run",
      "--quiet",
      "--allow-all",
      main,
    ]);
    const addr = await gateway.listening;
    const pid = await gateway.gatewayPid();
    const baseline = value(await scrape(addr), "process_open_fds");
    assert.ok(baseline > 5, `${baseline}`);
    const sockets = await Promise.all(
      Array.from({ length: 20 }, () => Deno.connect({ hostname: addr.hostname, port: addr.port })),
    );
    try {
      // The count is cached for a second: wait until it includes the new connections.
      const deadline = Date.now() + 10_000;
      let fds = baseline;
      while (fds < baseline + 20) {
        assert.ok(Date.now() < deadline, `stuck at ${fds} (baseline ${baseline})`);
        await new Promise((resolve) => setTimeout(resolve, 200));
        fds = value(await scrape(addr), "process_open_fds");
      }
      const listed = [...Deno.readDirSync(`/proc/${pid}/fd`)].length;
      assert.ok(Math.abs(fds - listed) <= 10, `metric ${fds}, /proc/${pid}/fd lists ${listed}`);
    } finally {
      for (const socket of sockets) socket.close();
    }
  },
});
