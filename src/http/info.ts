/**
 * GET /api/v1/info: what the web viewer needs to know about this server (the disposable
 * address domain, the polling interval, the version). Nothing secret: the same as the
 * viewer's own behaviour reveals.
 */
import { MAILWIRE_VERSION } from '../util/version.js';
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

export function getInfo(deps: HttpDeps): RouteHandler {
  const body: InfoBody = { name: 'mailwire', version: MAILWIRE_VERSION, feed: '/api/v1/events', ...(deps.viewer ?? DEFAULT_VIEWER_SETTINGS) };
  return async () => body;
}
