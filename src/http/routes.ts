/**
 * The whole HTTP route table, in one place. Handlers live in small files beside this one; each
 * entry names its route, and a name given twice is an error at start.
 * (The WebSocket feed /api/v1/events attaches to the server's upgrade event, not here.)
 */
import type { FastifyInstance } from 'fastify';
import type { ResolvedHttpDeps } from './deps.js';
import { healthz, metricsText, readyz } from './health.js';
import { deleteMessage, getAttachment, getMessage, getRawMessage, listMessages } from './messages.js';
import type { RouteHandler } from './request.js';
import { serveStatic } from './static.js';

export interface RouteDef {
  name: string;
  method: 'GET' | 'POST' | 'DELETE';
  url: string;
  handler: (deps: ResolvedHttpDeps) => RouteHandler;
}

export const ROUTES: readonly RouteDef[] = [
  { name: 'messages.list', method: 'GET', url: '/api/v1/messages', handler: listMessages },
  { name: 'messages.get', method: 'GET', url: '/api/v1/messages/:id', handler: getMessage },
  { name: 'messages.raw', method: 'GET', url: '/api/v1/messages/:id/raw', handler: getRawMessage },
  { name: 'messages.attachment', method: 'GET', url: '/api/v1/messages/:id/attachments/:index', handler: getAttachment },
  { name: 'messages.delete', method: 'DELETE', url: '/api/v1/messages/:id', handler: deleteMessage },
  { name: 'healthz', method: 'GET', url: '/healthz', handler: healthz },
  { name: 'readyz', method: 'GET', url: '/readyz', handler: readyz },
  { name: 'metrics', method: 'GET', url: '/metrics', handler: metricsText },
  // Last by convention, though the router prefers every static route above anyway.
  { name: 'web', method: 'GET', url: '/*', handler: serveStatic },
];

export function registerRoutes(app: FastifyInstance, deps: ResolvedHttpDeps, routes: readonly RouteDef[] = ROUTES): void {
  const names = new Set<string>();
  for (const route of routes) {
    if (names.has(route.name)) throw new Error(`route name ${route.name} is used twice`);
    names.add(route.name);
    app.route({ method: route.method, url: route.url, handler: route.handler(deps) });
  }
}
