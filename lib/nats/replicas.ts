/**
 * How many replicas a stream the gateway creates gets: GATEWAY_STREAM_REPLICAS, else
 * min(3, the JetStream cluster's size as the server's INFO tells it).
 */
import type { JetStreamManager } from "@nats-io/jetstream";
import type { Config } from "../config/config.ts";

/** Replicas the gateway gives a stream it creates on a cluster of 3 or more (spec: R3). */
const MAX_AUTO_REPLICAS = 3;

/** Replicas for a new stream: GATEWAY_STREAM_REPLICAS, else min(3, JetStream cluster size). */
export interface ReplicaChoice {
  readonly replicas: number;
  /** Set by GATEWAY_STREAM_REPLICAS: a refused placement is an error, not a step down. */
  readonly explicit: boolean;
}

export function wantedReplicas(
  jsm: JetStreamManager,
  config: Pick<Config, "streamReplicas">,
): ReplicaChoice {
  if (config.streamReplicas > 0) return { replicas: config.streamReplicas, explicit: true };
  const size = clusterSizeFromInfo(serverInfoOf(jsm));
  return { replicas: Math.min(MAX_AUTO_REPLICAS, size ?? MAX_AUTO_REPLICAS), explicit: false };
}

/** The parts of a server's INFO that describe its cluster. */
export interface ClusterInfo {
  readonly cluster?: string;
  readonly connect_urls?: readonly string[];
}

/**
 * The JetStream cluster size as the connected server's INFO tells it: 1 without a `cluster`
 * (a standalone server); else the number of distinct client URLs the cluster advertises
 * (`connect_urls` lists every member, the server itself included). Undefined when the cluster
 * does not advertise (`no_advertise`): creation then starts at 3 and steps down on refusal.
 */
export function clusterSizeFromInfo(info: ClusterInfo | undefined): number | undefined {
  if (info === undefined) return undefined;
  if (!info.cluster) return 1;
  const urls = new Set(info.connect_urls ?? []);
  return urls.size > 0 ? urls.size : undefined;
}

/** The INFO of the server the manager's connection is on (the client keeps the latest). */
function serverInfoOf(jsm: JetStreamManager): ClusterInfo | undefined {
  // JetStreamManager's implementation holds its connection as `nc`; the type does not say so.
  const nc = (jsm as unknown as { nc?: { info?: ClusterInfo } }).nc;
  return nc?.info;
}

export function clusterKnown(jsm: JetStreamManager): boolean {
  return clusterSizeFromInfo(serverInfoOf(jsm)) !== undefined;
}
