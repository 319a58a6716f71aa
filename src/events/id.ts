/**
 * Message ids: ULIDs (26 characters, Crockford base32), sortable by receive time, so
 * "newest first" and resume-after-id need no extra column. Monotonic within a millisecond.
 */
import { createHash, randomFillSync } from 'node:crypto';
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

const CROCKFORD = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';

/**
 * An id derived from `key`: the same key gives the same id. The shape of every other mailwire
 * id (26 characters of Crockford base32, the first 0-7 as in a ULID), from the first 130 bits of
 * the key's SHA-256; not sortable by time.
 */
export function idFor(key: string): string {
  const digest = createHash('sha256').update(key).digest();
  let id = '';
  for (let i = 0; i < 26; i++) {
    const bit = i * 5;
    const byte = bit >> 3;
    const value = (((digest[byte]! << 8) | digest[byte + 1]!) >> (11 - (bit & 7))) & 31;
    id += CROCKFORD[i === 0 ? value & 7 : value];
  }
  return id;
}

export const MESSAGE_ID_PATTERN = /^[0-9A-HJKMNP-TV-Z]{26}$/;

export function isMessageId(s: string): boolean {
  return MESSAGE_ID_PATTERN.test(s);
}
