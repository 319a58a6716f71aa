/**
 * The Origin check of browser requests that act without the user's intent: the feed's upgrade
 * (cross-site WebSocket hijacking: a browser opens a WebSocket to any address a page names and
 * lets the page read the answers) and POST /submit (cross-site request forgery: a form or a
 * no-cors fetch from any page would relay mail through a loopback mailwire). Only browsers
 * send Origin, and a page cannot change it.
 *
 * - No Origin header: not a browser (curl, a script, a server): allowed; the Host check and
 *   access control still apply.
 * - Same origin: the Origin's host[:port] equals the request's Host. The scheme is not
 *   compared: behind a TLS-terminating proxy the page is https:// while this server sees plain
 *   HTTP. The Host itself already passed the DNS-rebinding check (http/host-check.ts), so a
 *   foreign page cannot make its own name "same origin".
 * - Otherwise the Origin must be one of http.allowed_origins (exact scheme, host and port).
 * - "null" (sandboxed frames, file:// pages), several Origin headers or anything unparsable:
 *   refused.
 */
import type { IncomingMessage } from 'node:http';

export type OriginVerdict = 'none' | 'same' | 'allowed' | 'refused';

/** Normalises configured origins ("https://Viewer.example.org:443/" -> "https://viewer.example.org"). */
export function normaliseOrigins(origins: readonly string[]): Set<string> {
  const out = new Set<string>();
  for (const o of origins) {
    if (!URL.canParse(o)) continue;
    const origin = new URL(o).origin;
    if (origin !== 'null') out.add(origin);
  }
  return out;
}

export function checkOrigin(req: Pick<IncomingMessage, 'headers' | 'rawHeaders'>, allowed: ReadonlySet<string>): OriginVerdict {
  let count = 0;
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    if (req.rawHeaders[i]!.toLowerCase() === 'origin') count++;
  }
  if (count === 0) return 'none';
  const header = req.headers.origin;
  if (count !== 1 || header === undefined || !URL.canParse(header)) return 'refused';
  const url = new URL(header);
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return 'refused';
  const host = req.headers.host;
  // The Host with the Origin's scheme, so default ports compare equal (":443" vs none).
  if (host !== undefined && URL.canParse(`${url.protocol}//${host}`) && new URL(`${url.protocol}//${host}`).host === url.host) {
    return 'same';
  }
  return allowed.has(url.origin) ? 'allowed' : 'refused';
}
