/**
 * Message ids: ULIDs (26 characters, Crockford base32), sortable by receive time, so
 * "newest first" and resume-after-id need no extra column. Monotonic within a millisecond.
 */
import { randomFillSync } from 'node:crypto';
import { monotonicFactory } from 'ulid';

/**
 * ulid's default PRNG makes one crypto.getRandomValues call per character (16 per id): in a
 * CPU profile of the inbound bench that was 3% of mailwire's time. The same CSPRNG, read from
 * a pooled buffer: one call per 256 ids. Each byte / 256 is uniform over [0, 1) in steps of
 * 1/256, so ulid's floor(x * 32) picks each of the 32 characters with equal chance.
 */
const pool = Buffer.alloc(4096);
let used = pool.length;

function pooledRandom(): number {
  if (used === pool.length) {
    randomFillSync(pool);
    used = 0;
  }
  return pool[used++]! / 256;
}

const next = monotonicFactory(pooledRandom);

export function newMessageId(): string {
  return next();
}

export const MESSAGE_ID_PATTERN = /^[0-9A-HJKMNP-TV-Z]{26}$/;

export function isMessageId(s: string): boolean {
  return MESSAGE_ID_PATTERN.test(s);
}
