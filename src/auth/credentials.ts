/**
 * The Authorization header, parsed once for everyone who reads it: the API's access control
 * (http-auth.ts) and POST /submit. Basic (RFC 7617, user:password in base64, UTF-8) or Bearer.
 */

// Far above any real Authorization header (a long JWT is ~2 KiB); a bigger one is refused unparsed.
const MAX_AUTHORIZATION = 8 * 1024;

export type Credentials = { scheme: 'basic'; user: string; password: string } | { scheme: 'bearer'; token: string } | { scheme: 'malformed' } | null;

/** null without a header; 'malformed' for an unknown scheme, bad base64 or a Basic value without ':'. */
export function parseAuthorization(header: string | undefined | null): Credentials {
  if (header === undefined || header === null) return null;
  if (header.length > MAX_AUTHORIZATION) return { scheme: 'malformed' };
  const m = /^([A-Za-z]+) +(\S+) *$/.exec(header);
  if (!m) return { scheme: 'malformed' };
  const scheme = m[1]!.toLowerCase();
  if (scheme === 'bearer') return { scheme: 'bearer', token: m[2]! };
  if (scheme !== 'basic' || !/^[A-Za-z0-9+/]+={0,2}$/.test(m[2]!)) return { scheme: 'malformed' };
  const decoded = Buffer.from(m[2]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return { scheme: 'malformed' };
  return { scheme: 'basic', user: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}
