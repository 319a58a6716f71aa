/**
 * The brute-force brake shared by every way in that checks a password or token: the HTTP API
 * and feed (http-auth.ts), POST /submit's Basic auth and SMTP AUTH. One instance per app
 * (app.ts), so a guesser cannot spread attempts over the three doors.
 *
 * Clients are counted by util/net clientKey: the IPv4 address, or the /64 of an IPv6 address
 * (one host usually owns a whole /64 and would otherwise get 20 guesses from each of 2^64
 * addresses). A request without credentials is not an attempt.
 */
import { clientKey } from '../util/net.js';

// 20 wrong attempts a minute per client is more than a person mistyping and far too few for
// a dictionary. After that, every attempt is refused (even a right one, so a guesser learns
// nothing) until the minute that began with the first failure is over.
export const FAILURE_LIMIT = 20;
export const FAILURE_WINDOW_MS = 60_000;
// The failure map is bounded: under a spray from many addresses the oldest entries go first.
const MAX_TRACKED_CLIENTS = 10_000;

export type AttemptOutcome = { kind: 'ok' } | { kind: 'invalid' } | { kind: 'throttled'; retryAfterS: number };

export class FailureThrottle {
  readonly #clients = new Map<string, { count: number; since: number }>();
  readonly #now: () => number;

  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  /** Seconds until this client may try again; 0 when it may now. */
  blockedFor(address: string): number {
    const key = clientKey(address);
    const entry = this.#clients.get(key);
    if (!entry) return 0;
    const now = this.#now();
    if (now - entry.since >= FAILURE_WINDOW_MS) {
      this.#clients.delete(key);
      return 0;
    }
    return entry.count >= FAILURE_LIMIT ? Math.max(1, Math.ceil((entry.since + FAILURE_WINDOW_MS - now) / 1000)) : 0;
  }

  fail(address: string): void {
    const key = clientKey(address);
    const now = this.#now();
    const entry = this.#clients.get(key);
    if (entry && now - entry.since < FAILURE_WINDOW_MS) {
      entry.count++;
      return;
    }
    this.#clients.delete(key);
    if (this.#clients.size >= MAX_TRACKED_CLIENTS) this.#clients.delete(this.#clients.keys().next().value!);
    this.#clients.set(key, { count: 1, since: now });
  }

  /**
   * One attempt: refused unchecked while the client is throttled (no hash is computed for it),
   * otherwise `check` decides and the outcome is counted.
   */
  attempt(address: string, check: () => boolean): AttemptOutcome {
    const wait = this.blockedFor(address);
    if (wait > 0) return { kind: 'throttled', retryAfterS: wait };
    // A success does not clear the count: otherwise anyone holding one working login could
    // interleave it with guesses at other accounts and never reach the limit.
    if (check()) return { kind: 'ok' };
    this.fail(address);
    return { kind: 'invalid' };
  }
}
