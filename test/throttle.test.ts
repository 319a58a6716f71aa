/** auth/throttle.ts: the brute-force brake shared by the API, the feed, /submit and SMTP AUTH. */
import { describe, expect, it } from 'vitest';
import { FAILURE_LIMIT, FAILURE_WINDOW_MS, FailureThrottle } from '../src/auth/throttle.js';

function clock() {
  let t = 1_000_000;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

describe('FailureThrottle', () => {
  it('refuses every attempt, right ones too, after FAILURE_LIMIT failures until the window is over', () => {
    const c = clock();
    const th = new FailureThrottle(c.now);
    for (let i = 0; i < FAILURE_LIMIT; i++) expect(th.attempt('192.0.2.1', () => false)).toEqual({ kind: 'invalid' });
    expect(th.attempt('192.0.2.1', () => true)).toEqual({ kind: 'throttled', retryAfterS: 60 });
    expect(th.attempt('192.0.2.2', () => true)).toEqual({ kind: 'ok' });
    c.advance(FAILURE_WINDOW_MS - 1000);
    expect(th.attempt('192.0.2.1', () => true)).toEqual({ kind: 'throttled', retryAfterS: 1 });
    c.advance(1000);
    expect(th.attempt('192.0.2.1', () => true)).toEqual({ kind: 'ok' });
  });

  it('a successful login in between does not clear the count (no unlimited guessing with one valid account)', () => {
    const th = new FailureThrottle(clock().now);
    for (let i = 0; i < FAILURE_LIMIT - 1; i++) th.attempt('192.0.2.1', () => false);
    expect(th.attempt('192.0.2.1', () => true)).toEqual({ kind: 'ok' });
    expect(th.attempt('192.0.2.1', () => false)).toEqual({ kind: 'invalid' });
    expect(th.attempt('192.0.2.1', () => true).kind).toBe('throttled');
  });

  it('counts an IPv6 client by its /64 and an IPv4-mapped address as the IPv4 one', () => {
    const th = new FailureThrottle(clock().now);
    for (let i = 0; i < FAILURE_LIMIT; i++) th.attempt(`2001:db8:1:2::${i + 1}`, () => false);
    expect(th.attempt('2001:db8:1:2:ffff::1', () => true).kind).toBe('throttled');
    expect(th.attempt('2001:db8:1:3::1', () => true).kind).toBe('ok');
    for (let i = 0; i < FAILURE_LIMIT; i++) th.attempt('::ffff:198.51.100.7', () => false);
    expect(th.blockedFor('198.51.100.7')).toBeGreaterThan(0);
  });
});
