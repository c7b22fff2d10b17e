/**
 * CPU cost of /health and /metrics with GATEWAY_WORKERS=N, against the real main.ts process.
 * Usage: deno run -A bench/health_cost.ts [workers=2] [requests=2000] [--flood]
 */
import { NatsServer } from "../tools/nats_server.ts";
import { Publisher, signal } from "../tests/helpers/fixtures.ts";
import { GatewayProcess } from "../tools/gateway_process.ts";

const workers = Deno.args[0] ?? "2";
const requests = Number(Deno.args[1] ?? 2000);
const flood = Deno.args.includes("--flood");
const TICK = 100; // clock ticks per second (getconf CLK_TCK)

function cpuMs(pid: number): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 1000 / TICK;
}
function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+)/.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
  return Number(m?.[1] ?? 0) / 1024;
}

async function costPer(pid: number, url: string, n: number): Promise<number> {
  for (let i = 0; i < 200; i++) await (await fetch(url)).arrayBuffer();
  const before = cpuMs(pid);
  for (let i = 0; i < n; i++) await (await fetch(url)).arrayBuffer();
  return (cpuMs(pid) - before) / n;
}

await using nats = await NatsServer.start();
await using gateway = await GatewayProcess.spawn({ NATS_URL: nats.url, GATEWAY_WORKERS: workers });
const addr = await gateway.listening;
const pid = gateway.child.pid;
const base = `http://${addr.hostname}:${addr.port}`;
await using publisher = await Publisher.connect(nats.url);
await publisher.publish(signal(1));
await new Promise((r) => setTimeout(r, 1000));

const idleBefore = cpuMs(pid);
await new Promise((r) => setTimeout(r, 5000));
const idlePct = (cpuMs(pid) - idleBefore) / 5000 * 100;
const health = await costPer(pid, `${base}/health`, requests);
const metrics = await costPer(pid, `${base}/metrics`, Math.ceil(requests / 4));
console.log(JSON.stringify({
  workers: Number(workers),
  requests,
  health_cpu_ms_per_request: +health.toFixed(4),
  metrics_cpu_ms_per_request: +metrics.toFixed(4),
  idle_cpu_percent: +idlePct.toFixed(2),
  rss_mb: +rssMb(pid).toFixed(1),
}));

if (flood) {
  // Clients' delivery latency (publish -> receive) at 20 messages/s, without and with a flood.
  const clients = await Promise.all(Array.from({ length: 50 }, async () => {
    const ws = new WebSocket(`ws://${addr.hostname}:${addr.port}/ws/stream`);
    const latencies: number[] = [];
    ws.onmessage = (e) => {
      const sent = JSON.parse(e.data).sent;
      if (sent) latencies.push(Date.now() - sent);
    };
    await new Promise((r) => (ws.onopen = r));
    return { ws, latencies };
  }));
  const run = async (label: string, withFlood: boolean) => {
    for (const c of clients) c.latencies.length = 0;
    let stop = false;
    const loops = withFlood
      ? Array.from({ length: 16 }, async () => {
        while (!stop) await (await fetch(`${base}/health`)).arrayBuffer();
      })
      : [];
    for (let seq = 2; seq < 100; seq++) {
      await publisher.publish(signal(seq, { sent: Date.now() }));
      await new Promise((r) => setTimeout(r, 50));
    }
    await new Promise((r) => setTimeout(r, 500));
    stop = true;
    await Promise.all(loops);
    const all = clients.flatMap((c) => c.latencies).sort((a, b) => a - b);
    const p = (q: number) => all[Math.min(all.length - 1, Math.floor(all.length * q))];
    console.log(
      JSON.stringify({
        label,
        samples: all.length,
        p50_ms: p(0.5),
        p99_ms: p(0.99),
        rss_mb: +rssMb(pid).toFixed(1),
      }),
    );
  };
  await run("no flood", false);
  await run("health flood (16 concurrent loops)", true);
  for (const c of clients) c.ws.close();
}
gateway.kill("SIGTERM");
await gateway.status;
