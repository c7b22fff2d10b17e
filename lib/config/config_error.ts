/**
 * The one error a bad configuration raises; main.ts turns it into exit code 2. Its own module so
 * lib/relay/route_table.ts (which lib/config/config.ts imports) can raise it without an import cycle.
 */

/** Raised when a variable holds a value the gateway cannot use. */
export class ConfigError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ConfigError";
  }
}
