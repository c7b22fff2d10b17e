/**
 * Stream provisioning (the platform's streams, optional: GATEWAY_CREATE_STREAMS), the startup
 * check of the relayed stream, and lookups on a stream. Every JetStream request here fails with
 * an error that says what was asked (`stream info LEVEL_SIGNALS failed: timeout`).
 */
import {
  DiscardPolicy,
  type JetStreamManager,
  RetentionPolicy,
  StorageType,
  type StreamConfig,
} from "@nats-io/jetstream";
import type { Config } from "../config/config.ts";
import type { Logger } from "../observe/log.ts";
import { errorMessage } from "../util.ts";
import { subjectMatches } from "../wildcard.ts";
import { ask, isNotFound } from "./requests.ts";
import { clusterKnown, type ReplicaChoice, wantedReplicas } from "./replicas.ts";

const DAY_NS = 24 * 60 * 60 * 1_000_000_000;

/** The streams every service of the platform expects (spec: "JetStream Streams"). */
export const PLATFORM_STREAMS: readonly Pick<
  StreamConfig,
  "name" | "subjects" | "retention" | "max_age" | "storage"
>[] = [
  {
    name: "MARKET_DATA",
    subjects: ["market.*"],
    retention: RetentionPolicy.Limits,
    max_age: DAY_NS,
    storage: StorageType.File,
  },
  {
    name: "LEVEL_SIGNALS",
    subjects: ["levels.*"],
    retention: RetentionPolicy.Limits,
    max_age: DAY_NS,
    storage: StorageType.File,
  },
];

type PlatformStream = (typeof PLATFORM_STREAMS)[number];

/** What stream setup reads from the configuration. */
export type StreamSettings =
  & Pick<Config, "createStreams" | "streamReplicas">
  & {
    /** The stream a route reads, and the subject (or wildcard filter) it must capture. */
    readonly stream: string;
    readonly subject: string;
    /** The route's path, for messages that say which GATEWAY_ROUTES entry to change. */
    readonly route?: string;
  };

/** The streams on NATS cannot serve this configuration; the message says what to change. */
export class StreamSetupError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "StreamSetupError";
  }
}

/**
 * Startup. With GATEWAY_CREATE_STREAMS (default) the platform streams are created when missing
 * and an existing one is left alone, each differing field logged once. Then, in either mode,
 * the relayed stream must exist and capture the subject (and a configured durable consumer must
 * exist when nothing may be created), or startup fails saying what to change.
 */
export async function setUpStreams(
  jsm: JetStreamManager,
  config: StreamSettings & Partial<Pick<Config, "durableName">>,
  logger: Logger,
): Promise<void> {
  if (config.createStreams) {
    const replicas = wantedReplicas(jsm, config);
    for (const wanted of PLATFORM_STREAMS) {
      try {
        await ensurePlatformStream(jsm, wanted, replicas, logger, { reportDifferences: true });
      } catch (err) {
        // A stream the gateway does not read (its nodes down, no rights) must not stop it.
        if (wanted.name === config.stream) throw err;
        logger.warn("stream setup failed; going on, the gateway does not read this stream", {
          stream: wanted.name,
          error: errorMessage(err),
        });
      }
    }
  }
  await checkRelayedStream(jsm, config);
  if (!config.createStreams && config.durableName) {
    await checkDurableExists(jsm, config.stream, config.durableName);
  }
}

/**
 * Before a consumer is recreated: recreates the relayed stream if it was deleted, and only that
 * one (never MARKET_DATA or any other stream, whose nodes may be down). Does nothing when
 * GATEWAY_CREATE_STREAMS=false or the stream is not one of the platform's.
 */
export async function ensureRelayedStream(
  jsm: JetStreamManager,
  config: StreamSettings,
  logger: Logger,
): Promise<void> {
  if (!config.createStreams) return;
  const wanted = PLATFORM_STREAMS.find((s) => s.name === config.stream);
  if (wanted === undefined) return;
  await ensurePlatformStream(jsm, wanted, wantedReplicas(jsm, config), logger, {
    reportDifferences: false,
  });
}

/**
 * Creates each platform stream that is missing with the automatic replica count. Kept for
 * callers outside the gateway (bench/run.ts); the gateway uses setUpStreams.
 */
export async function ensureStreams(
  jsm: JetStreamManager,
  logger: Logger,
  streams: readonly PlatformStream[] = PLATFORM_STREAMS,
): Promise<void> {
  const replicas = wantedReplicas(jsm, { streamReplicas: 0 });
  for (const wanted of streams) {
    await ensurePlatformStream(jsm, wanted, replicas, logger, { reportDifferences: true });
  }
}

async function ensurePlatformStream(
  jsm: JetStreamManager,
  wanted: PlatformStream,
  choice: ReplicaChoice,
  logger: Logger,
  options: { reportDifferences: boolean },
): Promise<void> {
  const existing = (await streamConfig(jsm, wanted.name)) ??
    (await createStream(jsm, wanted, choice, logger));
  if (existing === undefined || !options.reportDifferences) return;
  const expected: Partial<StreamConfig> = choice.explicit || clusterKnown(jsm)
    ? { ...wanted, num_replicas: choice.replicas }
    : wanted;
  const differences = Object.entries(expected)
    .filter(([key, value]) =>
      JSON.stringify(value) !== JSON.stringify(existing[key as keyof StreamConfig])
    )
    .map(([key, value]) => ({
      field: key,
      expected: value,
      actual: existing[key as keyof StreamConfig],
    }));
  if (differences.length > 0) {
    logger.warn("stream exists with a different config; left unchanged", {
      stream: wanted.name,
      differences,
    });
  }
}

/**
 * Creates the stream; returns the config of a stream another gateway created meanwhile, or
 * undefined when this call created it. Without GATEWAY_STREAM_REPLICAS a refused placement
 * (fewer JetStream servers up than replicas) is retried with one replica fewer.
 */
async function createStream(
  jsm: JetStreamManager,
  wanted: PlatformStream,
  choice: ReplicaChoice,
  logger: Logger,
): Promise<StreamConfig | undefined> {
  let replicas = choice.replicas;
  while (true) {
    try {
      await ask(
        `stream create ${wanted.name} (${replicas} replica${replicas === 1 ? "" : "s"})`,
        () => jsm.streams.add({ ...wanted, num_replicas: replicas, discard: DiscardPolicy.Old }),
      );
      logger.info("stream created", {
        stream: wanted.name,
        subjects: wanted.subjects,
        replicas,
      });
      return undefined;
    } catch (err) {
      const message = errorMessage(err);
      // Another gateway may have created it between our info and add.
      if (/already in use|already exists/i.test(message)) {
        return await streamConfig(jsm, wanted.name);
      }
      if (choice.explicit || replicas <= 1 || !isPlacementRefusal(message)) {
        throw choice.explicit
          ? new StreamSetupError(
            `${message} (GATEWAY_STREAM_REPLICAS=${choice.replicas}: set it to at most the number of JetStream servers, or 0 for automatic)`,
            { cause: err },
          )
          : err;
      }
      const fewer = /non-clustered/i.test(message) ? 1 : replicas - 1;
      logger.warn("stream placement refused; creating it with fewer replicas", {
        stream: wanted.name,
        replicas: fewer,
        refused: replicas,
        error: message,
      });
      replicas = fewer;
    }
  }
}

function isPlacementRefusal(message: string): boolean {
  return /no suitable peers|insufficient resources|replicas > 1 not supported/i.test(message);
}

/** The stream's config, or undefined when it does not exist. */
async function streamConfig(
  jsm: JetStreamManager,
  stream: string,
): Promise<StreamConfig | undefined> {
  try {
    return (await ask(`stream info ${stream}`, () => jsm.streams.info(stream))).config;
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

/** The relayed stream must exist and capture the subject; nothing here creates anything. */
async function checkRelayedStream(jsm: JetStreamManager, config: StreamSettings): Promise<void> {
  const { stream, subject } = config;
  const found = await streamConfig(jsm, stream);
  if (found === undefined) {
    const isPlatform = PLATFORM_STREAMS.some((s) => s.name === stream);
    throw new StreamSetupError(
      config.createStreams
        ? `Stream ${stream}${
          config.route ? ` (route ${config.route})` : " (GATEWAY_STREAM)"
        } does not exist and is not one of the platform streams the gateway creates (${
          PLATFORM_STREAMS.map((s) => s.name).join(", ")
        }): create ${stream} capturing ${subject}, or ${streamHint(config)}`
        : `Stream ${stream}${
          config.route ? ` (route ${config.route})` : ""
        } does not exist and GATEWAY_CREATE_STREAMS=false forbids creating it: create ${stream} capturing ${subject} with a NATS user allowed to${
          isPlatform ? ", or set GATEWAY_CREATE_STREAMS=true" : ""
        }, or ${streamHint(config)}`,
    );
  }
  // A mirror or a stream of sources has no subjects of its own; it holds what it copies.
  const subjects = found.subjects ?? [];
  if (subjects.length === 0 && (found.mirror || (found.sources?.length ?? 0) > 0)) return;
  if (!subjects.some((pattern) => subjectMatches(pattern, subject))) {
    throw new StreamSetupError(
      `Stream ${stream}${
        config.route ? ` (route ${config.route})` : ""
      } does not capture ${subject} (its subjects: ${subjects.join(", ") || "none"}): ${
        config.route
          ? `name the stream that holds it in GATEWAY_ROUTES (${config.route}=${subject}@STREAM)`
          : `name the stream that holds ${subject} in GATEWAY_ROUTES (PATH=${subject}@STREAM)`
      }`,
    );
  }
}

function streamHint(config: StreamSettings): string {
  return config.route
    ? `name the stream that holds ${config.subject} in GATEWAY_ROUTES (${config.route}=${config.subject}@STREAM)`
    : `set GATEWAY_STREAM to the stream that holds ${config.subject}`;
}

/** With GATEWAY_CREATE_STREAMS=false a missing durable is a startup error, not created. */
async function checkDurableExists(
  jsm: JetStreamManager,
  stream: string,
  durable: string,
): Promise<void> {
  try {
    await ask(`consumer info ${stream} ${durable}`, () => jsm.consumers.info(stream, durable));
  } catch (err) {
    if (!isNotFound(err)) throw err;
    throw new StreamSetupError(
      `Durable consumer ${durable} (GATEWAY_DURABLE) does not exist on stream ${stream} and GATEWAY_CREATE_STREAMS=false forbids creating it: create it with a NATS user allowed to, set GATEWAY_CREATE_STREAMS=true, or unset GATEWAY_DURABLE for an ordered consumer`,
      { cause: err },
    );
  }
}
