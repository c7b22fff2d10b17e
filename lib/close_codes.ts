/**
 * Every close code the gateway sends, in one table (docs/protocol.md "Close codes"; the browser
 * client's reaction to each is in client/gateway_client.ts). 1xxx are RFC 6455's, 4xxx the
 * gateway's own.
 */
export const CloseCode = {
  /** Gateway shutting down. */
  goingAway: 1001,
  /** Client sent a binary frame; the gateway accepts none. */
  unsupportedData: 1003,
  /** Client broke the rules (frame flood), or presented no valid token (`unauthorized`) or one
   * not covering the route (`forbidden`). */
  policyViolation: 1008,
  /** Client frame above the 4096 bytes a ping needs at most. */
  messageTooBig: 1009,
  /** Unexpected gateway error. */
  internalError: 1011,
  /** A templated route's value was dropped and made anew between upgrade and open; retry. */
  tryAgainLater: 1013,
  /** The JWT's exp passed during the connection (reason `token expired`). */
  tokenExpired: 4001,
  /** Client stayed behind past its buffer bound for too long. */
  slowConsumer: 4008,
} as const;
