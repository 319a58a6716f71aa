/**
 * GET /api/v1/info: what the web viewer needs to know about this server (the disposable
 * address domain, the polling interval, the version). Nothing secret: the same as the
 * viewer's own behaviour reveals.
 */
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { HttpDeps } from './deps.js';
import type { RouteHandler } from './request.js';

/** The viewer's settings, from config `web:` (app.ts fills them in). */
export interface ViewerSettings {
  /** Domain of the "new address" button's random addresses. */
  disposableDomain: string;
  /** Polling interval when the WebSocket feed cannot connect. */
  pollIntervalMs: number;
  /** Largest message SMTP accepts, shown in the viewer. */
  maxMessageSize: number;
}

/** Defaults when the server is built without settings (unit tests of the HTTP layer). */
export const DEFAULT_VIEWER_SETTINGS: ViewerSettings = { disposableDomain: 'mailwire.test', pollIntervalMs: 3000, maxMessageSize: 25 * 1024 * 1024 };

export interface InfoBody extends ViewerSettings {
  name: 'mailwire';
  version: string;
  /** Path of the WebSocket feed on this server. */
  feed: string;
}

/** package.json is two levels above src/http/ (tsx) and three above dist/src/http/ (built). */
function readVersion(): string {
  for (const rel of ['../../package.json', '../../../package.json']) {
    const path = fileURLToPath(new URL(rel, import.meta.url));
    if (!existsSync(path)) continue;
    try {
      const pkg = JSON.parse(readFileSync(path, 'utf8')) as { name?: unknown; version?: unknown };
      if (pkg.name === 'mailwire' && typeof pkg.version === 'string') return pkg.version;
    } catch {
      // Not ours or unreadable: try the next candidate.
    }
  }
  return 'unknown';
}

export function getInfo(deps: HttpDeps): RouteHandler {
  const body: InfoBody = { name: 'mailwire', version: readVersion(), feed: '/api/v1/events', ...(deps.viewer ?? DEFAULT_VIEWER_SETTINGS) };
  return async () => body;
}
