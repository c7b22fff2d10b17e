/**
 * The gateway's NATS at startup: the connection (failures told apart, see ./connection.ts) and
 * each route's stream, found or named, with the platform streams set up (./streams.ts).
 */
import type { NatsConnection } from "@nats-io/nats-core";
import { type JetStreamManager, jetstreamManager } from "@nats-io/jetstream";
import type { Config } from "../config/config.ts";
import type { Logger } from "../observe/log.ts";
import { errorMessage } from "../util.ts";
import { subjectMatches } from "../wildcard.ts";
import { connectNats } from "./connection.ts";
import { NatsUnavailableError } from "./errors.ts";
import { ask, isNotFound } from "./requests.ts";
import { PLATFORM_STREAMS, setUpStreams, StreamSetupError } from "./streams.ts";

export async function connectGatewayNats(config: Config, logger: Logger): Promise<NatsConnection> {
  const nc = await connectNats({
    servers: config.natsServers,
    connectTimeoutMs: config.natsConnectTimeoutMs,
    name: "gateway",
    logger,
    credentials: config,
  }).catch((err) => {
    throw err instanceof NatsUnavailableError ? err : new NatsUnavailableError(
      `Cannot connect to NATS at ${config.natsUrlRedacted}: ${errorMessage(err)}`,
      { cause: err },
    );
  });
  logger.info("nats connected", { nats_url: config.natsUrlRedacted, server: nc.getServer() });
  return nc;
}

/**
 * Platform streams (GATEWAY_CREATE_STREAMS), then each route's stream: the one it names, or the
 * one the server says captures its subject; startup fails naming the route when none does.
 */
export async function resolveStreams(
  nc: NatsConnection,
  config: Config,
  logger: Logger,
): Promise<string[]> {
  const jsm = await jetstreamManager(nc);
  const streams: string[] = [];
  for (const spec of config.routes) {
    const stream = spec.stream ?? await findStream(jsm, spec.filterSubject) ??
      // Not there yet: a platform stream that would capture it is created below.
      (config.createStreams ? platformStreamFor(spec.filterSubject) : undefined);
    if (stream === undefined) {
      throw new StreamSetupError(
        `No stream captures ${spec.filterSubject} (GATEWAY_ROUTES entry ${spec.path}): create one, or name it as ${spec.path}=${spec.subject}@STREAM`,
      );
    }
    streams.push(stream);
  }
  for (const [index, spec] of config.routes.entries()) {
    await setUpStreams(jsm, {
      ...config,
      stream: streams[index],
      subject: spec.filterSubject,
      route: spec.path,
      // The platform streams once; each route's stream is then only checked.
      createStreams: config.createStreams && index === 0,
      durableName: index === 0 ? config.durableName : "",
    }, logger);
  }
  return streams;
}

/** The platform stream (created with GATEWAY_CREATE_STREAMS) that would capture `subject`. */
function platformStreamFor(subject: string): string | undefined {
  return PLATFORM_STREAMS.find((s) => s.subjects!.some((p) => subjectMatches(p, subject)))?.name;
}

/**
 * The stream that captures `subject` (a route's subject or wildcard filter), found by the
 * server (JetStream's stream lookup by subject); undefined when none does.
 */
async function findStream(
  jsm: JetStreamManager,
  subject: string,
): Promise<string | undefined> {
  try {
    return await ask(`stream names for subject ${subject}`, () => jsm.streams.find(subject));
  } catch (err) {
    const cause = err instanceof Error ? err.cause : undefined;
    if (cause instanceof Error && cause.name === "StreamNotFoundError") return undefined;
    if (isNotFound(err)) return undefined;
    throw err;
  }
}
