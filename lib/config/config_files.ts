/**
 * The files a configuration names, checked before anything starts: JWT keys read and parsed as
 * lib/auth/keys.ts will read them; NATS credentials and certificates opened (lib/nats/connection.ts
 * parses them when it connects). A file that cannot be used is a ConfigError (exit 2).
 */
import { AuthConfigError, readJwtKeys } from "../auth/keys.ts";
import { type Config } from "./config.ts";
import { ConfigError } from "./config_error.ts";
import { configuredFiles } from "./permissions.ts";

/** Throws ConfigError naming the first variable whose file cannot be used. */
export function checkConfigFiles(config: Config): void {
  for (const { name, path } of configuredFiles(config)) {
    try {
      const file = Deno.openSync(path, { read: true });
      const isFile = file.statSync().isFile;
      file.close();
      if (!isFile) throw new ConfigError(`${name} must name a file: "${path}" is not one`);
    } catch (err) {
      if (err instanceof ConfigError) throw err;
      throw new ConfigError(
        `${name} names a file that cannot be used: "${path}" (${whyUnreadable(err)})`,
        { cause: err },
      );
    }
  }
  try {
    readJwtKeys(config);
  } catch (err) {
    throw err instanceof AuthConfigError ? new ConfigError(err.message, { cause: err }) : err;
  }
}

function whyUnreadable(err: unknown): string {
  return err instanceof Deno.errors.NotFound
    ? "no such file"
    : err instanceof Deno.errors.PermissionDenied || err instanceof Deno.errors.NotCapable
    ? "this process may not read it"
    : "it cannot be read";
}
