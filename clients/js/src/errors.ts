/** An error of the protocol (an `error` frame: code, message, retry) or of the
 * client itself: `closed` (the client was closed), `timeout` (no answer in
 * time), `connection_lost` (the socket dropped under a request that cannot be
 * resent; retry), `unauthorized` (the token was refused), `replaced` (4010). */
export class SwitchboardError extends Error {
  readonly code: string;
  readonly retry: boolean;

  constructor(code: string, message: string, retry = false) {
    super(message);
    this.name = "SwitchboardError";
    this.code = code;
    this.retry = retry;
  }
}

export const UNAUTHORIZED_MESSAGE = "Your session token was refused. Sign in again.";
export const REPLACED_MESSAGE =
  "This chat was opened in too many other tabs or devices, so this one was disconnected. Reconnect to continue here.";
