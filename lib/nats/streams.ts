/** Stream provisioning (the platform's streams) and lookups on a stream. */
import {
  DiscardPolicy,
  type JetStreamManager,
  RetentionPolicy,
  StorageType,
  type StreamConfig,
} from "@nats-io/jetstream";
import type { Logger } from "../log.ts";
import { errorMessage } from "../util.ts";

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

/**
 * Creates each platform stream that is missing; an existing stream is left as it is and each
 * field that differs from the platform's config is logged. Safe to run any number of times.
 */
export async function ensureStreams(
  jsm: JetStreamManager,
  logger: Logger,
  streams = PLATFORM_STREAMS,
): Promise<void> {
  for (const wanted of streams) {
    let existing: StreamConfig | undefined;
    try {
      existing = (await jsm.streams.info(wanted.name)).config;
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    if (existing === undefined) {
      try {
        await jsm.streams.add({ ...wanted, discard: DiscardPolicy.Old });
        logger.info("stream created", { stream: wanted.name, subjects: wanted.subjects });
        continue;
      } catch (err) {
        // Another gateway may have created it between our info and add.
        if (!/already in use|already exists/i.test(errorMessage(err))) throw err;
        existing = (await jsm.streams.info(wanted.name)).config;
      }
    }
    const differences = Object.entries(wanted)
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
}

export function isNotFound(err: unknown): boolean {
  return /not found/i.test(errorMessage(err));
}

/** Stream sequence of the newest stored message of the subject, or 0 if none. */
export async function newestSequence(
  jsm: JetStreamManager,
  options: { readonly stream: string; readonly subject: string },
): Promise<number> {
  try {
    const stored = await jsm.streams.getMessage(options.stream, { last_by_subj: options.subject });
    return stored?.seq ?? 0;
  } catch (err) {
    if (isNotFound(err)) return 0;
    throw err;
  }
}
