/**
 * POST /submit (Haineko-compatible JSON in and out), GET /submit (405) and unknown paths under
 * /submit/ (404 in Haineko's format). The body arrives as text whatever its content type:
 * Haineko's sample clients post JSON or YAML with a form content type (see routes.ts).
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { SubmitOutput } from '../submit/submit.js';
import type { ResolvedHttpDeps } from './deps.js';
import { sendError } from './errors.js';
import type { RouteHandler } from './request.js';

/**
 * The HTTP body limit of /submit for a given max_message_size: the request carries the message
 * as JSON (non-ASCII escaped as \uXXXX: 6 bytes for a 2-byte character) or base64 (4/3), so
 * 3x plus 64 KiB for the envelope and headers. Larger bodies are refused (413) before they
 * are buffered; the exact message size is checked afterwards, in bytes.
 */
export function submitBodyLimit(maxMessageSize: number): number {
  return maxMessageSize * 3 + 64 * 1024;
}

function client(request: FastifyRequest) {
  const header = (name: string): string | null => {
    const v = request.headers[name];
    return typeof v === 'string' ? v : null;
  };
  return {
    remoteAddress: request.socket.remoteAddress ?? '',
    remotePort: request.socket.remotePort ?? 0,
    userAgent: header('user-agent'),
    referer: header('referer'),
    authorization: header('authorization'),
  };
}

function send(reply: FastifyReply, out: SubmitOutput): FastifyReply {
  if (out.headers) reply.headers(out.headers);
  return reply.code(out.status).header('content-type', 'application/json; charset=utf-8').send(out.body);
}

export function postSubmit(deps: ResolvedHttpDeps): RouteHandler {
  return async (request, reply) => {
    if (!deps.submit) return sendError(reply, 'not_found');
    const body = typeof request.body === 'string' ? request.body : '';
    return send(reply, await deps.submit.submit({ ...client(request), body }));
  };
}

export function getSubmit(deps: ResolvedHttpDeps): RouteHandler {
  return async (request, reply) => {
    if (!deps.submit) return sendError(reply, 'not_found');
    return send(reply.header('allow', 'POST'), deps.submit.fixed('methodNotSupported', client(request)));
  };
}

export function submitNotFound(deps: ResolvedHttpDeps): RouteHandler {
  return async (request, reply) => {
    if (!deps.submit) return sendError(reply, 'not_found');
    return send(reply, deps.submit.fixed('notFound', client(request)));
  };
}
