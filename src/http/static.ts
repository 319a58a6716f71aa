/**
 * The web viewer's files from deps.webDir. A deliberately small static handler (no
 * directory listings, no dotfiles, a fixed set of types), because every path it gets is
 * attacker-chosen: each segment is decoded and checked on its own, the joined path must stay
 * under webDir, and so must its real path after symlinks.
 */
import { realpath } from 'node:fs/promises';
import { extname, join, resolve, sep } from 'node:path';
import type { HttpDeps } from './deps.js';
import { notFound } from './errors.js';
import { openRegularFile, sendFile, type RouteHandler } from './request.js';
import { viewerHeaders } from './security.js';

const CONTENT_TYPES: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.webmanifest': 'application/manifest+json; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.gif': 'image/gif',
  '.webp': 'image/webp',
  '.ico': 'image/x-icon',
  '.woff2': 'font/woff2',
};

/** The viewer is a handful of files a few folders deep; deeper paths are probes. */
const MAX_SEGMENTS = 8;

/**
 * The decoded path segments of a request URL, with "/" and a trailing "/" meaning
 * index.html; null for anything that is not a plain relative file path: empty segments
 * ("//"), dot segments and dotfiles (".", "..", ".env", including encoded as %2e), encoded
 * separators (%2f, %5c), control characters, ":" (Windows drive and stream names), bad
 * percent-encoding.
 */
export function staticSegments(url: string): string[] | null {
  const pathname = url.split('?', 1)[0] ?? '';
  if (!pathname.startsWith('/')) return null;
  const raw = pathname.slice(1).split('/');
  if (raw.length > MAX_SEGMENTS) return null;
  const segments: string[] = [];
  for (const [i, part] of raw.entries()) {
    if (part === '') {
      if (i !== raw.length - 1) return null;
      segments.push('index.html');
      continue;
    }
    let segment: string;
    try {
      segment = decodeURIComponent(part);
    } catch {
      return null;
    }
    if (segment.startsWith('.') || /[/\\:\u0000-\u001f\u007f]/.test(segment)) return null;
    segments.push(segment);
  }
  return segments;
}

export function serveStatic(deps: HttpDeps): RouteHandler {
  const root = deps.webDir === undefined ? undefined : resolve(deps.webDir);
  return async (request, reply) => {
    if (root === undefined) throw notFound();
    const segments = staticSegments(request.url);
    // /api/... is never a file, whatever webDir holds: unknown API paths get a JSON 404.
    if (segments === null || segments[0] === 'api') throw notFound();
    const contentType = CONTENT_TYPES[extname(segments[segments.length - 1] ?? '').toLowerCase()];
    if (contentType === undefined) throw notFound();

    const path = join(root, ...segments);
    if (!path.startsWith(root + sep)) throw notFound();
    let real: string;
    let realRoot: string;
    try {
      [real, realRoot] = await Promise.all([realpath(path), realpath(root)]);
    } catch {
      throw notFound();
    }
    if (!real.startsWith(realRoot + sep)) throw notFound();

    const file = await openRegularFile(real);
    if (!file) throw notFound();
    reply.headers(viewerHeaders(request.headers.host));
    return sendFile(reply, file, contentType);
  };
}
