/**
 * Security headers. Every response gets the API set first (onRequest); the static handler
 * swaps in the viewer's set for its own files.
 */

/** Headers for every response except the viewer's own files. */
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

/** Headers for files of the web viewer. */
export const STATIC_HEADERS: Readonly<Record<string, string>> = {
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  // The viewer may frame its own pages (a message body in an iframe); nobody else may
  // frame it (a delete button under someone else's page is clickjacking).
  'x-frame-options': 'SAMEORIGIN',
  // Own scripts and styles only, no inline script; images also from data: URLs. Mail HTML
  // shown in an iframe inherits this, so remote images and trackers in mail do not load.
  // connect-src 'self' covers the API and (CSP 3) the same-origin WebSocket feed.
  'content-security-policy':
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'self'",
  // Revalidate every time: a new release must not run against a stale cached viewer.
  'cache-control': 'no-cache',
};
