/**
 * Why NATS cannot be used: small Error subclasses the gateway's start tells apart (exit codes,
 * messages that say what to do), and the test for Deno's permission refusals.
 */

/** Raised when NATS cannot be used at startup; the message says what to do. */
export class NatsUnavailableError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "NatsUnavailableError";
  }
}

/** The server refused the login (wrong password, unknown user, bad signature…): never retried. */
export class NatsLoginError extends NatsUnavailableError {
  constructor(message: string) {
    super(message);
    this.name = "NatsLoginError";
  }
}

/** The TLS handshake failed or TLS was missing on one side: never retried. */
export class NatsTlsError extends NatsUnavailableError {
  constructor(message: string) {
    super(message);
    this.name = "NatsTlsError";
  }
}

/** A credential or TLS file named by a NATS_* variable cannot be read or used. */
export class NatsCredentialsError extends NatsUnavailableError {
  constructor(message: string) {
    super(message);
    this.name = "NatsCredentialsError";
  }
}

/** Whether an error comes from Deno's permission checks. */
export function isPermissionError(err: unknown): boolean {
  return err instanceof Deno.errors.NotCapable || err instanceof Deno.errors.PermissionDenied;
}
