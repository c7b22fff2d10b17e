/**
 * One JetStream request: a failure is rethrown saying what was asked (`stream info LEVEL_SIGNALS
 * failed: timeout`); whether an error means "not found"; the newest sequence of a subject.
 */
import type { JetStreamManager } from "@nats-io/jetstream";
import { errorMessage } from "../util.ts";

/** JetStream API error codes the gateway tells apart. */
const NOT_FOUND_CODES = [10059, 10014, 10037]; // stream, consumer, message not found

/** A JetStream request that failed; the message names the request, the cause is the client's error. */
export class NatsRequestError extends Error {
  constructor(readonly request: string, cause: unknown) {
    super(`${request} failed: ${errorMessage(cause)}`, { cause });
    this.name = "NatsRequestError";
  }
}

/** Runs one JetStream request; a failure is rethrown saying what was asked. */
export async function ask<T>(request: string, send: () => Promise<T>): Promise<T> {
  try {
    return await send();
  } catch (err) {
    throw err instanceof NatsRequestError ? err : new NatsRequestError(request, err);
  }
}

/** Whether a JetStream error says the stream, consumer or message does not exist. */
export function isNotFound(err: unknown): boolean {
  for (let e: unknown = err; e instanceof Error; e = e.cause) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "number" && NOT_FOUND_CODES.includes(code)) return true;
  }
  return /not found/i.test(errorMessage(err));
}

/** Stream sequence of the newest stored message of the subject, or 0 if none. */
export async function newestSequence(
  jsm: JetStreamManager,
  options: { readonly stream: string; readonly subject: string },
): Promise<number> {
  try {
    const stored = await ask(
      `msg get ${options.stream} last_by_subj ${options.subject}`,
      () => jsm.streams.getMessage(options.stream, { last_by_subj: options.subject }),
    );
    return stored?.seq ?? 0;
  } catch (err) {
    if (isNotFound(err)) return 0;
    throw err;
  }
}
