/**
 * The whole HTTP route table, in one place. Handlers live in small files beside this one; each
 * entry names its route, and a name given twice is an error at start.
 * (The WebSocket feed /api/v1/events attaches to the server's upgrade event, not here.)
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { ResolvedHttpDeps } from './deps.js';
import { healthz, metricsText, readyz } from './health.js';
import { deleteMessage, getAttachment, getMessage, getRawMessage, listMessages } from './messages.js';
import type { RouteHandler } from './request.js';
import { serveStatic } from './static.js';
import { getDelivery, listDeliveries, listWebhooks } from './webhooks.js';
import { getInfo } from './info.js';
import { getMessageHtml } from './mail-html.js';
import { getSubmit, postSubmit, submitGate, submitNotFound } from './submit.js';

export interface RouteDef {
  name: string;
  method: 'GET' | 'POST' | 'DELETE';
  url: string;
  handler: (deps: ResolvedHttpDeps) => RouteHandler;
  /**
   * 'text': the body is read as a string whatever its content type, up to deps.submitBodyLimit
   * (POST /submit: Haineko clients post JSON or YAML with a form content type).
   */
  body?: 'text';
  /** A text body's limit in bytes instead of deps.submitBodyLimit. */
  bodyLimit?: number;
  /**
   * A check that runs when the request arrives, before its body is read (POST /submit: origin,
   * access, concurrency); it answers the request itself to refuse it.
   */
  onRequest?: (deps: ResolvedHttpDeps) => (request: FastifyRequest, reply: FastifyReply) => Promise<unknown>;
}

export const ROUTES: readonly RouteDef[] = [
  { name: 'messages.list', method: 'GET', url: '/api/v1/messages', handler: listMessages },
  { name: 'messages.get', method: 'GET', url: '/api/v1/messages/:id', handler: getMessage },
  { name: 'messages.raw', method: 'GET', url: '/api/v1/messages/:id/raw', handler: getRawMessage },
  { name: 'messages.attachment', method: 'GET', url: '/api/v1/messages/:id/attachments/:index', handler: getAttachment },
  { name: 'messages.delete', method: 'DELETE', url: '/api/v1/messages/:id', handler: deleteMessage },
  { name: 'webhooks.list', method: 'GET', url: '/api/v1/webhooks', handler: listWebhooks },
  { name: 'webhooks.deliveries', method: 'GET', url: '/api/v1/webhooks/deliveries', handler: listDeliveries },
  { name: 'webhooks.delivery', method: 'GET', url: '/api/v1/webhooks/deliveries/:id', handler: getDelivery },
  { name: 'messages.html', method: 'GET', url: '/api/v1/messages/:id/html', handler: getMessageHtml },
  { name: 'info', method: 'GET', url: '/api/v1/info', handler: getInfo },
  { name: 'healthz', method: 'GET', url: '/healthz', handler: healthz },
  { name: 'readyz', method: 'GET', url: '/readyz', handler: readyz },
  { name: 'metrics', method: 'GET', url: '/metrics', handler: metricsText },
  // Haineko-compatible submission (docs/submit.md). Unknown paths under /submit/ answer in
  // Haineko's format (404, code 421 "Not found"); elsewhere the API's own 404 applies.
  { name: 'submit', method: 'POST', url: '/submit', handler: postSubmit, body: 'text', onRequest: submitGate },
  { name: 'submit.get', method: 'GET', url: '/submit', handler: getSubmit },
  { name: 'submit.unknown.get', method: 'GET', url: '/submit/*', handler: submitNotFound },
  // The 404 needs no body: a small limit, so nobody gets to make us buffer megabytes for it.
  { name: 'submit.unknown.post', method: 'POST', url: '/submit/*', handler: submitNotFound, body: 'text', bodyLimit: 64 * 1024 },
  // Last by convention, though the router prefers every static route above anyway.
  { name: 'web', method: 'GET', url: '/*', handler: serveStatic },
];

export function registerRoutes(app: FastifyInstance, deps: ResolvedHttpDeps, routes: readonly RouteDef[] = ROUTES): void {
  const names = new Set<string>();
  for (const route of routes) {
    if (names.has(route.name)) throw new Error(`route name ${route.name} is used twice`);
    names.add(route.name);
    if (route.body === 'text') registerTextBodyRoute(app, deps, route);
    else app.route({ method: route.method, url: route.url, handler: route.handler(deps) });
  }
}

/** A route whose body is taken as text of any content type, in its own scope so no other route parses bodies that way. */
function registerTextBodyRoute(app: FastifyInstance, deps: ResolvedHttpDeps, route: RouteDef): void {
  const bodyLimit = route.bodyLimit ?? deps.submitBodyLimit ?? 64 * 1024;
  void app.register(async (scope) => {
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', { parseAs: 'string', bodyLimit }, (_request, body, done) => done(null, body));
    scope.route({
      method: route.method,
      url: route.url,
      bodyLimit,
      handler: route.handler(deps),
      ...(route.onRequest ? { onRequest: route.onRequest(deps) } : {}),
    });
  });
}
