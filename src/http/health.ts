/** Liveness, readiness and metrics. */
import type { HttpDeps, Readiness, ResolvedHttpDeps } from './deps.js';
import type { RouteHandler } from './request.js';

/** Liveness: 200 while the process can answer at all. Orchestrators restart on failure. */
export function healthz(): RouteHandler {
  return async () => ({ status: 'ok' });
}

/** Readiness: 200 when the app can take mail, 503 (with the failing checks) otherwise. */
export function readyz(deps: HttpDeps): RouteHandler {
  return async (_request, reply) => {
    let result: Readiness;
    try {
      result = deps.readiness();
    } catch (err) {
      deps.logger.error({ err }, 'readiness check threw');
      result = { ready: false, checks: { readiness: 'error' } };
    }
    return reply.code(result.ready ? 200 : 503).send({ status: result.ready ? 'ready' : 'not_ready', checks: result.checks });
  };
}

export function metricsText(deps: ResolvedHttpDeps): RouteHandler {
  return async (_request, reply) => {
    const text = await deps.metrics.render();
    return reply.header('content-type', deps.metrics.contentType).send(text);
  };
}
