/**
 * The HTTP server: REST API, web viewer, health and metrics. The only module tree that
 * imports fastify. createHttpServer() builds it; the caller listens and closes.
 */
import Fastify, { type FastifyError, type FastifyInstance } from 'fastify';
import { createMetrics } from '../metrics/metrics.js';
import type { HttpDeps, ResolvedHttpDeps } from './deps.js';
import { codeForStatus, errorBody, HttpError, sendError } from './errors.js';
import { DEFAULT_HOST_POLICY, requestHostAllowed } from './host-check.js';
import { registerRoutes } from './routes.js';
import { API_HEADERS } from './security.js';

export type { HttpDeps, Readiness } from './deps.js';

/**
 * Request bodies: the read API takes none, and 64 KiB is plenty for the small JSON bodies to
 * come; a larger body is refused before it is buffered (413).
 */
const BODY_LIMIT = 64 * 1024;
/**
 * Time for a client to send its whole request (headers and body), not for our response: a
 * slow reader may take minutes over a 25 MiB raw message. Stops slowloris-style clients
 * from holding sockets with a trickle of header bytes.
 */
export const REQUEST_TIMEOUT_MS = 30_000;
/**
 * The headers alone, within that. Must be set with the server (fastify's requestTimeout alone
 * leaves Node's 60 s default here, and Node then enforces the larger of the two).
 */
const HEADERS_TIMEOUT_MS = 20_000;
/** How often Node checks those deadlines (default 30 s: a deadline could pass by 30 s unnoticed). */
const TIMEOUT_CHECK_INTERVAL_MS = 2_000;
/**
 * A refused Host is logged at warn at most this often (a rebinding page can send thousands);
 * the others go to debug. The warn names the host so an operator can add a legitimate one.
 */
const REFUSED_HOST_WARN_INTERVAL_MS = 60_000;
/**
 * Routes served without access control: health checks (a Docker HEALTHCHECK or an orchestrator
 * probe has no credentials, and they tell nothing about mail) and POST /submit, which applies
 * Haineko's relayhosts and password rules itself.
 */
const OPEN_ROUTES: ReadonlySet<string> = new Set(['/healthz', '/readyz', '/submit']);
const isOpenRoute = (url: string | undefined) => url !== undefined && (OPEN_ROUTES.has(url) || url.startsWith('/submit/'));

function statusOf(err: unknown): number | undefined {
  const status = (err as Partial<FastifyError> | null)?.statusCode;
  return typeof status === 'number' && status >= 400 && status <= 599 ? status : undefined;
}

export function createHttpServer(input: HttpDeps): FastifyInstance {
  const logger = input.logger.child({ mod: 'http' });
  const deps: ResolvedHttpDeps = {
    ...input,
    logger,
    metrics: input.metrics ?? createMetrics(),
    hostPolicy: input.hostPolicy ?? DEFAULT_HOST_POLICY,
  };
  const requests = deps.metrics.counter('mailwire_http_requests_total', 'HTTP requests answered, by method, route and status', [
    'method',
    'route',
    'status',
  ]);

  const app = Fastify({
    // Fastify's own logger is off; requests are logged below, at debug, by our pino logger.
    logger: false,
    bodyLimit: BODY_LIMIT,
    requestTimeout: REQUEST_TIMEOUT_MS,
    return503OnClosing: true,
    // Node answers an HTTP/1.1 request without Host with a bare 400 of its own; let it through
    // to the Host check instead, which refuses it like any other unknown Host (403, JSON, headers).
    http: { requireHostHeader: false, headersTimeout: HEADERS_TIMEOUT_MS, connectionsCheckingInterval: TIMEOUT_CHECK_INTERVAL_MS },
    // Errors fastify raises before routing (a malformed percent-encoding in the path): no hook
    // has run, so the security headers are set here too. The URL is not echoed back.
    frameworkErrors: (err, _request, reply) => {
      reply.headers({ ...API_HEADERS });
      if (err.code === 'FST_ERR_BAD_URL') return sendError(reply, 'bad_request', 'the URL is not valid');
      return sendError(reply, codeForStatus(statusOf(err) ?? 500));
    },
  });

  let lastRefusedWarn = -Infinity;
  app.addHook('onRequest', async (request, reply) => {
    reply.headers({ ...API_HEADERS });
    // DNS rebinding: refuse a Host we do not know before any handler runs (see host-check.ts).
    if (!requestHostAllowed(request.raw, deps.hostPolicy)) {
      const now = Date.now();
      const host = request.headers.host?.slice(0, 100);
      if (now - lastRefusedWarn >= REFUSED_HOST_WARN_INTERVAL_MS) {
        lastRefusedWarn = now;
        logger.warn({ host, method: request.method }, 'request refused: Host header not allowed (http.allowed_hosts)');
      } else {
        logger.debug({ host, method: request.method }, 'request refused: Host header not allowed');
      }
      return sendError(reply, 'forbidden_host');
    }
    if (deps.access && !isOpenRoute(request.routeOptions.url)) {
      const decision = deps.access.check(request.raw);
      if (!decision.ok) {
        if (decision.status === 429) return sendError(reply.header('retry-after', String(decision.retryAfterS)), 'too_many_requests');
        return sendError(reply.header('www-authenticate', deps.access.challenge), 'unauthorized');
      }
    }
  });

  app.addHook('onResponse', async (request, reply) => {
    // The route pattern, never the raw URL, as the label: ids would make unbounded series.
    const route = request.routeOptions.url ?? 'unmatched';
    requests.inc({ method: request.method, route, status: String(reply.statusCode) });
    logger.debug({ method: request.method, route, status: reply.statusCode, ms: Math.round(reply.elapsedTime) }, 'http request');
  });

  app.setErrorHandler((err: unknown, request, reply) => {
    if (err instanceof HttpError) return reply.code(err.status).send(errorBody(err.code, err.message));
    const status = statusOf(err);
    if (status !== undefined && status < 500) {
      // Fastify's own 4xx (bad JSON, body too large, ...): its message is about the request.
      const code = codeForStatus(status);
      const message = err instanceof Error ? err.message : undefined;
      return reply.code(status).send(errorBody(code, message));
    }
    logger.error({ err, method: request.method, route: request.routeOptions.url }, 'request failed');
    // Never the internal message: it may name paths or SQL.
    return sendError(reply, 'internal');
  });

  app.setNotFoundHandler((_request, reply) => sendError(reply, 'not_found'));

  registerRoutes(app, deps);
  return app;
}
