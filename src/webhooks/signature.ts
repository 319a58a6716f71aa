/**
 * The signature on every webhook request, so a receiver can tell mailwire's requests from
 * anyone else's and a captured request cannot be replayed later:
 *
 *   X-Mailwire-Timestamp: <unix seconds>
 *   X-Mailwire-Signature: v1=<hex HMAC-SHA256(secret, timestamp + "." + body)>
 *
 * The timestamp is signed with the body, so a receiver that refuses timestamps older than a few
 * minutes refuses replays. "v1=" names the scheme: a later scheme can be sent beside it.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

export const SIGNATURE_SCHEME = 'v1';

/** The X-Mailwire-Signature value for this timestamp and body. */
export function signPayload(secret: string, timestamp: number, body: string | Buffer): string {
  const mac = createHmac('sha256', secret).update(`${timestamp}.`).update(body).digest('hex');
  return `${SIGNATURE_SCHEME}=${mac}`;
}

/**
 * What a receiver does (also used by the tests): recompute and compare in constant time.
 * `header` may list several signatures separated by spaces or commas; one must match.
 */
export function verifySignature(secret: string, timestamp: string, body: string | Buffer, header: string): boolean {
  if (!/^[0-9]{1,12}$/.test(timestamp)) return false;
  const expected = Buffer.from(signPayload(secret, Number(timestamp), body));
  return header
    .split(/[\s,]+/)
    .filter(Boolean)
    .some((candidate) => {
      const given = Buffer.from(candidate);
      return given.length === expected.length && timingSafeEqual(given, expected);
    });
}
