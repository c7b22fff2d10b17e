/**
 * Telling a refusal (login, TLS) that retrying cannot fix from a failure worth retrying, and
 * saying in the error which setting to change.
 */
import { errors } from "@nats-io/nats-core";
import { errorMessage } from "../util.ts";
import type { Login, NatsCredentials } from "./credentials.ts";
import { NatsLoginError, NatsTlsError } from "./errors.ts";
import { type AttemptTrace, ClientCertificateRequired } from "./transport.ts";

export interface RefusalContext {
  readonly login: Login;
  readonly where: string;
  readonly credentials: Partial<NatsCredentials>;
}

/**
 * The error to stop with when a failed attempt is a refusal that retrying cannot fix (login,
 * TLS), or undefined for a failure worth retrying (refused connection, timeout).
 */
export function describeRefusal(
  err: unknown,
  trace: AttemptTrace,
  { login, where, credentials }: RefusalContext,
): Error | undefined {
  if (
    err instanceof errors.AuthorizationError || err instanceof errors.UserAuthenticationExpiredError
  ) {
    return new NatsLoginError(`NATS refused the login ${login.who} at ${where}: ${err.message}`);
  }
  const tlsFailed = (reason: string) =>
    new NatsTlsError(`TLS to NATS at ${where} failed: ${reason}`);
  if (err instanceof errors.ConnectionError && err.message.includes("does not support 'tls'")) {
    return tlsFailed(
      "the server does not offer TLS, but a tls:// URL or NATS_CA/NATS_CERT asks for it",
    );
  }
  if (err instanceof ClientCertificateRequired) {
    return tlsFailed(
      "the server requires a client certificate (tls_verify): set NATS_CERT and NATS_KEY",
    );
  }
  // A TLS failure is the attempt's error, or (alert after the handshake) one its sockets saw.
  const tlsError = [err, ...trace.socketErrors].find(isTlsFailure);
  if (tlsError !== undefined) {
    const reason = errorMessage(tlsError);
    const code = String((tlsError as { code?: unknown }).code ?? "");
    const shown = code && !reason.includes(code) ? `${reason} (${code})` : reason;
    return tlsFailed(`${shown}${tlsHint(`${code} ${reason}`, credentials)}`);
  }
  // Closed without an alert read: the alert can be lost when the server closes first.
  if (trace.verifiesClients && trace.socketErrors.length > 0) {
    return tlsFailed(
      `the server closed the connection after the TLS handshake (${
        errorMessage(trace.socketErrors[0])
      }): it verifies client certificates and did not accept the one in NATS_CERT`,
    );
  }
  return undefined;
}

/** Node/Deno TLS error codes and messages that mean the handshake or a certificate failed. */
const TLS_FAILURE =
  /certificate|CERT_|self.signed|unknown.?ca|UnknownIssuer|altname|NotValidForName|handshake|alert|ERR_TLS|ERR_SSL|EPROTO/i;

function isTlsFailure(err: unknown): err is Error {
  if (!(err instanceof Error)) return false;
  return TLS_FAILURE.test(`${String((err as { code?: unknown }).code ?? "")} ${err.message}`);
}

/** What to change, by the kind of TLS failure and the settings given. */
function tlsHint(failure: string, c: Partial<NatsCredentials>): string {
  if (/altname|NotValidForName/i.test(failure)) {
    return " (the server's certificate does not name the host in NATS_URL)";
  }
  if (/verify|self.signed|issuer|unknown.?ca|CERT_/i.test(failure)) {
    return c.natsCaPath
      ? " (the server's certificate is not signed by the CA in NATS_CA)"
      : " (the server requires TLS: set NATS_CA to the CA that signed its certificate)";
  }
  if (/alert/i.test(failure)) {
    return c.natsCertPath
      ? " (the server did not accept the client certificate in NATS_CERT)"
      : " (the server may require a client certificate: set NATS_CERT and NATS_KEY)";
  }
  return "";
}
