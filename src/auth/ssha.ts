/**
 * Salted SHA password hashes in the LDAP/Haineko format of config/password:
 * `{SSHA}base64(sha1(password + salt) + salt)`, and `{SSHA256}`, `{SSHA512}` with SHA-256 and
 * SHA-512. These are what Haineko's Crypt::SaltedHash writes and checks, so an existing Haineko
 * password file works unchanged. Only hashes: a plain-text or unknown scheme is refused.
 *
 * Note: these are fast hashes (one digest per guess). They resist a stolen-file attack only as
 * well as the password resists a dictionary; use long random passwords (docs/security.md).
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

export type PasswordScheme = 'ssha' | 'ssha256' | 'ssha512';

export const PASSWORD_SCHEMES: readonly PasswordScheme[] = ['ssha', 'ssha256', 'ssha512'];

const ALGORITHM: Record<PasswordScheme, { prefix: string; digest: string; length: number }> = {
  ssha: { prefix: '{SSHA}', digest: 'sha1', length: 20 },
  ssha256: { prefix: '{SSHA256}', digest: 'sha256', length: 32 },
  ssha512: { prefix: '{SSHA512}', digest: 'sha512', length: 64 },
};

// slappasswd and Crypt::SaltedHash use 4 bytes; 16 makes precomputed tables useless.
const NEW_SALT_BYTES = 16;
// A salt longer than this is not something any tool writes; refuse it rather than hash megabytes.
const MAX_SALT_BYTES = 64;
// A password longer than this is refused before hashing: it bounds the work one request costs.
export const MAX_PASSWORD_BYTES = 1024;

/** A stored hash, decoded once when the password table is loaded. */
export interface PasswordHash {
  scheme: PasswordScheme;
  digest: Buffer;
  salt: Buffer;
}

export function hashPassword(password: string, scheme: PasswordScheme = 'ssha512', salt: Buffer = randomBytes(NEW_SALT_BYTES)): string {
  const alg = ALGORITHM[scheme];
  const digest = createHash(alg.digest).update(password, 'utf8').update(salt).digest();
  return alg.prefix + Buffer.concat([digest, salt]).toString('base64');
}

/** Decodes `{SSHA…}base64`; the error says what is wrong (without echoing the value). */
export function parsePasswordHash(stored: string): PasswordHash | { error: string } {
  const m = /^\{([A-Za-z0-9]+)\}(.*)$/s.exec(stored.trim());
  if (!m) return { error: 'not a {SSHA}, {SSHA256} or {SSHA512} hash (create one with: mailwire pw)' };
  const scheme = m[1]!.toLowerCase() as PasswordScheme;
  const alg = ALGORITHM[scheme];
  if (!alg || !PASSWORD_SCHEMES.includes(scheme)) {
    return { error: `unsupported scheme {${m[1]}}; use {SSHA}, {SSHA256} or {SSHA512} (create one with: mailwire pw)` };
  }
  const b64 = m[2]!;
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) return { error: `${alg.prefix} value is not base64` };
  const raw = Buffer.from(b64, 'base64');
  const saltLength = raw.length - alg.length;
  if (saltLength < 1 || saltLength > MAX_SALT_BYTES) return { error: `${alg.prefix} value has the wrong length for a salted hash` };
  return { scheme, digest: raw.subarray(0, alg.length), salt: raw.subarray(alg.length) };
}

/** Constant-time check of a password against a decoded hash. */
export function verifyPassword(hash: PasswordHash, password: string): boolean {
  if (Buffer.byteLength(password, 'utf8') > MAX_PASSWORD_BYTES) return false;
  const alg = ALGORITHM[hash.scheme];
  const candidate = createHash(alg.digest).update(password, 'utf8').update(hash.salt).digest();
  return timingSafeEqual(candidate, hash.digest);
}

/**
 * Checked when the user does not exist, so that an unknown user costs the same digest and
 * comparison as a wrong password and the answer time does not tell which names exist. One per
 * scheme: the password table uses the one of its own entries.
 */
export const DUMMY_HASHES: Readonly<Record<PasswordScheme, PasswordHash>> = Object.freeze(
  Object.fromEntries(
    PASSWORD_SCHEMES.map((scheme) => {
      const parsed = parsePasswordHash(hashPassword(randomBytes(16).toString('hex'), scheme));
      if ('error' in parsed) throw new Error(parsed.error);
      return [scheme, parsed];
    }),
  ) as Record<PasswordScheme, PasswordHash>,
);
