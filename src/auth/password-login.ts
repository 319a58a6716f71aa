/**
 * A user-and-password login through the shared brute-force brake (throttle.ts): POST /submit's
 * Basic credentials and SMTP AUTH. While a client is throttled its attempts are refused
 * unchecked, even with the right password, so a guesser learns nothing. Failures are logged at
 * info (address, user, where; never the password).
 */
import type { Logger } from '../log/logger.js';
import type { PasswordVerifier } from './http-auth.js';
import type { AttemptOutcome, FailureThrottle } from './throttle.js';

/** user and password null: credentials that do not even parse (another scheme, bad base64): a failure, unless throttled. */
export type PasswordLogin = (via: 'submit' | 'smtp', remoteAddress: string, user: string | null, password: string | null) => AttemptOutcome;

export function createPasswordLogin(opts: { throttle: FailureThrottle; passwords: Pick<PasswordVerifier, 'verifyPassword'>; logger: Logger }): PasswordLogin {
  const logger = opts.logger.child({ mod: 'auth' });
  return (via, remoteAddress, user, password) => {
    const outcome = opts.throttle.attempt(remoteAddress, () => user !== null && password !== null && opts.passwords.verifyPassword(user, password));
    if (outcome.kind === 'throttled') logger.debug({ ip: remoteAddress, via }, 'authentication attempt refused: too many failures');
    else if (outcome.kind === 'invalid') logger.info({ ip: remoteAddress, via, user: user?.slice(0, 64) ?? null }, 'authentication failed');
    return outcome;
  };
}
