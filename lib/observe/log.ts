/** JSON-lines logger: the only module that writes to the console. */
import type { LogLevel } from "../config/settings.ts";

export type LogFields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
}

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/** Where lines go; tests pass a recorder. */
export type LineSink = (level: LogLevel, line: string) => void;

const consoleSink: LineSink = (level, line) => {
  if (level === "warn" || level === "error") console.error(line);
  else console.log(line);
};

function serialise(value: unknown): unknown {
  if (value instanceof Error) {
    return value.cause === undefined
      ? `${value.name}: ${value.message}`
      : `${value.name}: ${value.message} (cause: ${String(serialise(value.cause))})`;
  }
  return value;
}

export function createLogger(
  level: LogLevel = "info",
  sink: LineSink = consoleSink,
): Logger {
  const min = RANK[level];
  const write = (lvl: LogLevel, msg: string, fields?: LogFields) => {
    if (RANK[lvl] < min) return;
    const record: LogFields = { ts: new Date().toISOString(), level: lvl, msg };
    if (fields) {
      for (const [key, value] of Object.entries(fields)) {
        record[key] = serialise(value);
      }
    }
    sink(lvl, JSON.stringify(record));
  };
  return {
    debug: (msg, fields) => write("debug", msg, fields),
    info: (msg, fields) => write("info", msg, fields),
    warn: (msg, fields) => write("warn", msg, fields),
    error: (msg, fields) => write("error", msg, fields),
  };
}

/**
 * Logs the first event at once, then at most one line per interval carrying the number of
 * events that were suppressed in between — for faults that can repeat at message rate.
 */
export function rateLimited(
  log: (msg: string, fields?: LogFields) => void,
  intervalMs: number,
  now: () => number = Date.now,
): (msg: string, fields?: LogFields) => void {
  let lastAt = -Infinity;
  let suppressed = 0;
  return (msg, fields) => {
    const t = now();
    if (t - lastAt < intervalMs) {
      suppressed++;
      return;
    }
    lastAt = t;
    log(msg, suppressed > 0 ? { ...fields, suppressed } : fields);
    suppressed = 0;
  };
}

/** A logger that adds `fields` to every line (e.g. which worker wrote it). */
export function withFields(logger: Logger, fields: LogFields): Logger {
  return {
    debug: (msg, more) => logger.debug(msg, { ...fields, ...more }),
    info: (msg, more) => logger.info(msg, { ...fields, ...more }),
    warn: (msg, more) => logger.warn(msg, { ...fields, ...more }),
    error: (msg, more) => logger.error(msg, { ...fields, ...more }),
  };
}
