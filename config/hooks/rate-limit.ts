/**
 * Per-client-IP rate limit (the idea of smtp-dos-detector): more than LIMIT messages from one
 * address within WINDOW_S seconds get 421 4.7.0 and the connection is closed. Counted at MAIL
 * FROM, so every attempt counts, accepted or not later on.
 *
 * State lives in this module: it is per process and starts afresh when the file is edited.
 */
import type { Hook } from '../../src/hooks/api.js';

const LIMIT = 5;
const WINDOW_S = 60;
// Bounds memory under a scan from many addresses: the oldest address is forgotten first.
const MAX_CLIENTS = 10_000;

/** Send times (ms) per client address, oldest first, at most LIMIT + 1 kept. */
const seen = new Map<string, number[]>();

export default {
  name: 'rate-limit',
  mail(ctx) {
    const now = Date.now();
    const ip = ctx.session.remoteAddress;
    const times = (seen.get(ip) ?? []).filter((t) => now - t < WINDOW_S * 1000);
    times.push(now);
    seen.delete(ip); // re-inserted last: Map order is then least recently seen first
    seen.set(ip, times.slice(-(LIMIT + 1)));
    if (seen.size > MAX_CLIENTS) seen.delete(seen.keys().next().value!);
    if (times.length > LIMIT) {
      ctx.log.info('rate limit reached', { ip, limit: LIMIT, windowS: WINDOW_S });
      return { verdict: 'tempfail', code: 421, enhanced: '4.7.0', message: `Too many messages from ${ip}, slow down`, disconnect: true };
    }
  },
} satisfies Hook;
