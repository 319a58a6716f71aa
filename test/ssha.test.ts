/** {SSHA}, {SSHA256}, {SSHA512} hashes: known vectors, Haineko's own example, refusals. */
import { describe, expect, it } from 'vitest';
import { hashPassword, parsePasswordHash, verifyPassword, type PasswordHash } from '../src/auth/ssha.js';

function parsed(stored: string): PasswordHash {
  const h = parsePasswordHash(stored);
  if ('error' in h) throw new Error(h.error);
  return h;
}

// Computed independently (Python hashlib): base64(digest("secret" + "abcd") + "abcd").
const VECTORS = {
  ssha: '{SSHA}+RFhsab2AfzZ0VfEdyknXtUT06RhYmNk',
  ssha256: '{SSHA256}qGSW+oNILJZzP8XfwAqm8oHb1pUlXul/o4P6T5F9dC5hYmNk',
  ssha512: '{SSHA512}gpIcMUqzt0RlQondmbeEc/HmIdV69pfARsPgzg5Vtsfw0BMT4rcfl70xxlEukHYl5CkaIgLmipghMxv+WTEta2FiY2Q=',
} as const;

describe('salted SHA hashes', () => {
  it('hashes a known password and salt to the known vector in each scheme', () => {
    for (const [scheme, expected] of Object.entries(VECTORS)) {
      expect(hashPassword('secret', scheme as keyof typeof VECTORS, Buffer.from('abcd'))).toBe(expected);
    }
  });

  it('verifies the known vectors and refuses a wrong password', () => {
    for (const stored of Object.values(VECTORS)) {
      expect(verifyPassword(parsed(stored), 'secret')).toBe(true);
      expect(verifyPassword(parsed(stored), 'Secret')).toBe(false);
      expect(verifyPassword(parsed(stored), '')).toBe(false);
    }
  });

  it("verifies Haineko's own example (etc/password-example: haineko / kijitora)", () => {
    const h = parsed('{SSHA}9p2euyteR33mp0TYKjmYhTlIt1ctxuRn');
    expect(h.scheme).toBe('ssha');
    expect(h.salt.length).toBe(4);
    expect(verifyPassword(h, 'kijitora')).toBe(true);
    expect(verifyPassword(h, 'kijitora ')).toBe(false);
  });

  it('takes the scheme name case-insensitively, as Crypt::SaltedHash does', () => {
    expect(verifyPassword(parsed(VECTORS.ssha256.replace('SSHA256', 'ssha256')), 'secret')).toBe(true);
  });

  it('hashes with a fresh 16-byte salt by default, SSHA512 unless told', () => {
    const a = hashPassword('pw');
    const b = hashPassword('pw');
    expect(a).not.toBe(b);
    expect(a.startsWith('{SSHA512}')).toBe(true);
    expect(parsed(a).salt.length).toBe(16);
    expect(verifyPassword(parsed(a), 'pw')).toBe(true);
    expect(verifyPassword(parsed(hashPassword('pw', 'ssha')), 'pw')).toBe(true);
  });

  it('handles non-ASCII passwords as UTF-8', () => {
    expect(verifyPassword(parsed(hashPassword('pässwörd', 'ssha256')), 'pässwörd')).toBe(true);
    expect(verifyPassword(parsed(hashPassword('pässwörd', 'ssha256')), 'passwoord')).toBe(false);
  });

  it('refuses plain text, other schemes, bad base64 and unsalted lengths with a clear reason', () => {
    expect(parsePasswordHash('kijitora')).toEqual({ error: expect.stringContaining('not a {SSHA}') });
    expect(parsePasswordHash('{PLAIN}kijitora')).toEqual({ error: expect.stringContaining('unsupported scheme {PLAIN}') });
    expect(parsePasswordHash('{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=')).toEqual({ error: expect.stringContaining('unsupported scheme {SHA}') });
    expect(parsePasswordHash('{CRYPT}$6$x$y')).toEqual({ error: expect.stringContaining('unsupported scheme') });
    expect(parsePasswordHash('{SSHA}not base64!')).toEqual({ error: '{SSHA} value is not base64' });
    // 20 bytes: a SHA-1 digest with no salt.
    expect(parsePasswordHash('{SSHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=')).toEqual({ error: '{SSHA} value has the wrong length for a salted hash' });
    expect(parsePasswordHash('{constructor}AAAA')).toEqual({ error: expect.stringContaining('unsupported scheme') });
  });

  it('refuses an overlong password without hashing it', () => {
    const long = 'x'.repeat(2000);
    expect(verifyPassword(parsed(hashPassword(long, 'ssha')), long)).toBe(false);
  });
});
