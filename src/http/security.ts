/**
 * Security headers. Every response gets the API set first (onRequest); the static handler
 * swaps in the viewer's set for its own files, and the mail-HTML view its own, stricter one.
 */

/** Headers for every response except the viewer's own files and the mail-HTML view. */
export const API_HEADERS: Readonly<Record<string, string>> = {
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  // JSON, raw messages and attachments are data, never a document: nothing may load, run or
  // be framed. `sandbox` also gives the response an opaque origin if a browser renders it
  // anyway (a hostile attachment opened directly), so it cannot read our API with cookies.
  'content-security-policy': "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'; sandbox",
  // Messages are deleted and attachments are private: no shared or browser cache keeps them.
  'cache-control': 'no-store',
};

/**
 * The viewer page's policy: own scripts and styles only (no inline script, so an injection
 * bug in the viewer cannot run code), images from us and data: URLs, fetch and the
 * WebSocket feed to us only, frames (the mail-HTML view) from us only.
 */
const VIEWER_CSP =
  "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-src 'self'; " +
  "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'self'";

/** Headers for files of the web viewer. */
export const STATIC_HEADERS: Readonly<Record<string, string>> = {
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  // The viewer may frame its own pages; nobody else may frame it (a delete button under
  // someone else's page is clickjacking).
  'x-frame-options': 'SAMEORIGIN',
  // connect-src 'self' covers the API and, in CSP 3 browsers, the same-origin WebSocket feed;
  // viewerHeaders() names the ws: and wss: origin too, for browsers that predate that rule.
  'content-security-policy': `${VIEWER_CSP}; connect-src 'self'`,
  // Revalidate every time: a new release must not run against a stale cached viewer.
  'cache-control': 'no-cache',
};

/** A Host header that is safe to repeat inside a CSP: a name or [IPv6], optional port. */
const CSP_SAFE_HOST = /^(?:[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?$/;

/**
 * The viewer's headers for a request that came in with `host`. The feed is at exactly that
 * host, so connect-src names ws://host and wss://host and nothing wider (not "ws:", which
 * would let an injected script talk to any WebSocket server). The Host was already checked
 * against http.allowed_hosts; anything odd in it falls back to 'self' alone.
 */
export function viewerHeaders(host: string | undefined): Record<string, string> {
  if (host === undefined || !CSP_SAFE_HOST.test(host)) return { ...STATIC_HEADERS };
  return { ...STATIC_HEADERS, 'content-security-policy': `${VIEWER_CSP}; connect-src 'self' ws://${host} wss://${host}` };
}

/**
 * The policy of a message's HTML body, shown in the viewer's sandboxed iframe from
 * /api/v1/messages/:id/html. The mail is hostile and this header is the defence, whatever
 * the HTML holds (nothing is stripped): `sandbox` without allow-scripts and allow-forms runs
 * no script and submits no form, even if the URL is opened directly in a tab, and gives the
 * document an opaque origin; default-src 'none' loads nothing but inline styles, images from
 * us (cid: parts, rewritten to attachment URLs) and data: URLs. Remote images are trackers
 * ("this mail was read, from this address"), so they load only when the user asked
 * (`remoteImages`). Links open in a new tab (allow-popups, escaping the sandbox so the site
 * works normally); never in the top window (no allow-top-navigation).
 */
export function mailHtmlHeaders(remoteImages: boolean): Record<string, string> {
  const img = remoteImages ? "img-src 'self' data: http: https:" : "img-src 'self' data:";
  return {
    'x-content-type-options': 'nosniff',
    'referrer-policy': 'no-referrer',
    // Only the viewer frames it.
    'x-frame-options': 'SAMEORIGIN',
    'content-security-policy':
      `default-src 'none'; ${img}; style-src 'unsafe-inline'; font-src data:; ` +
      "form-action 'none'; base-uri 'none'; frame-ancestors 'self'; sandbox allow-popups allow-popups-to-escape-sandbox",
    // No DNS look-ups of the names in links either (they leak that the mail was opened).
    'x-dns-prefetch-control': 'off',
    'cache-control': 'no-store',
  };
}
