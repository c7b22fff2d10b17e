/**
 * A 3-node JetStream cluster on loopback: free ports, a temp store per node, a node can be
 * killed (SIGKILL) and restarted on the same ports and store.
 */
import { connect } from "../../lib/nats/transport.ts";
import type { NatsConnection } from "@nats-io/nats-core";
import {
  type JetStreamManager,
  jetstreamManager,
  type StreamConfig,
  type StreamInfo,
} from "@nats-io/jetstream";
import { NatsServer } from "../../tools/nats_server.ts";

/** Ports nobody listens on now: held open together so they differ, then released. */
function freePorts(count: number): number[] {
  const listeners = Array.from(
    { length: count },
    () => Deno.listen({ hostname: "127.0.0.1", port: 0 }),
  );
  const ports = listeners.map((l) => (l.addr as Deno.NetAddr).port);
  for (const listener of listeners) listener.close();
  return ports;
}

export class NatsCluster implements AsyncDisposable {
  private constructor(readonly nodes: readonly NatsServer[], readonly names: readonly string[]) {}

  /** Starts `size` nodes (default 3) routed to each other; resolves once JetStream answers. */
  static async start(size = 3): Promise<NatsCluster> {
    const clusterPorts = freePorts(size);
    const names = clusterPorts.map((_, i) => `n${i + 1}`);
    const routes = clusterPorts.map((p) => `nats://127.0.0.1:${p}`).join(",");
    const started = await Promise.allSettled(clusterPorts.map((port, i) =>
      NatsServer.start({
        args: [
          "--server_name",
          names[i],
          "--cluster_name",
          "gateway-test",
          "--cluster",
          `nats://127.0.0.1:${port}`,
          "--routes",
          routes,
        ],
      })
    ));
    const nodes = started.flatMap((r) => r.status === "fulfilled" ? [r.value] : []);
    const cluster = new NatsCluster(nodes, names);
    const failure = started.find((r) => r.status === "rejected");
    if (failure) {
      await cluster[Symbol.asyncDispose]();
      throw (failure as PromiseRejectedResult).reason;
    }
    return cluster;
  }

  /** Every node's client URL, comma-separated (what NATS_URL takes). */
  get urls(): string {
    return this.nodes.map((n) => n.url).join(",");
  }

  /** The node whose client address is `hostPort` (`127.0.0.1:PORT`, as nc.getServer() says). */
  nodeAt(hostPort: string): NatsServer {
    const node = this.nodes.find((n) => hostPort.endsWith(`:${n.port}`));
    if (!node) throw new Error(`no node listens at ${hostPort}`);
    return node;
  }

  /** The node named `name` (a stream's `cluster.leader`). */
  nodeNamed(name: string): NatsServer {
    const index = this.names.indexOf(name);
    if (index < 0) throw new Error(`no node named ${name}`);
    return this.nodes[index];
  }

  /** An admin connection to every node, once JetStream (a meta leader) answers. */
  async admin(timeoutMs = 20_000): Promise<{ nc: NatsConnection; jsm: JetStreamManager }> {
    const nc = await connect({
      servers: this.nodes.map((n) => n.url),
      maxReconnectAttempts: -1,
      reconnectTimeWait: 100,
    });
    const deadline = Date.now() + timeoutMs;
    while (true) {
      try {
        const jsm = await jetstreamManager(nc, { timeout: 2_000 });
        await jsm.getAccountInfo();
        return { nc, jsm };
      } catch (err) {
        if (Date.now() > deadline) {
          await nc.close();
          throw new Error(`JetStream cluster not ready in ${timeoutMs} ms`, { cause: err });
        }
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    }
  }

  /**
   * Adds a replicated stream. A meta leader can answer before it knows every peer is current:
   * it then refuses the placement ("no suitable peers for placement"), which this retries.
   */
  async addStream(
    jsm: JetStreamManager,
    config: Partial<StreamConfig> & { name: string },
    timeoutMs = 20_000,
  ): Promise<StreamInfo> {
    const deadline = Date.now() + timeoutMs;
    while (true) {
      try {
        return await jsm.streams.add(config);
      } catch (err) {
        const placement = /no suitable peers for placement/i.test(String(err));
        if (!placement || Date.now() > deadline) throw err;
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await Promise.all(this.nodes.map((n) => n[Symbol.asyncDispose]()));
  }
}
