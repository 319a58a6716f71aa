/**
 * The one catalogue of HTTP error codes. Every error response is
 * `{ "error": "<code>", "message": "<human text>" }`; clients branch on `error`, which never
 * changes meaning, and show `message`, which may be reworded.
 */
import type { FastifyReply } from 'fastify';

export const ERROR_CATALOGUE = {
  bad_request: { status: 400, message: 'the request is not valid' },
  unauthorized: { status: 401, message: 'authentication required (HTTP Basic or a bearer token)' },
  forbidden_host: { status: 403, message: 'Host header not allowed; add it to http.allowed_hosts' },
  not_found: { status: 404, message: 'not found' },
  payload_too_large: { status: 413, message: 'the request body is too large' },
  unsupported_media_type: { status: 415, message: 'unsupported content type' },
  too_many_requests: { status: 429, message: 'too many failed authentication attempts; try again later' },
  internal: { status: 500, message: 'internal error' },
} as const satisfies Record<string, { status: number; message: string }>;

export type ErrorCode = keyof typeof ERROR_CATALOGUE;

export interface ErrorBody {
  error: ErrorCode;
  message: string;
}

/** An error a handler throws to answer with a catalogued code; the error handler sends it. */
export class HttpError extends Error {
  readonly code: ErrorCode;
  readonly status: number;

  constructor(code: ErrorCode, message?: string, options?: ErrorOptions) {
    super(message ?? ERROR_CATALOGUE[code].message, options);
    this.name = 'HttpError';
    this.code = code;
    this.status = ERROR_CATALOGUE[code].status;
  }
}

export function notFound(message?: string): HttpError {
  return new HttpError('not_found', message);
}

export function badRequest(message: string): HttpError {
  return new HttpError('bad_request', message);
}

export function errorBody(code: ErrorCode, message?: string): ErrorBody {
  return { error: code, message: message ?? ERROR_CATALOGUE[code].message };
}

export function sendError(reply: FastifyReply, code: ErrorCode, message?: string): FastifyReply {
  return reply.code(ERROR_CATALOGUE[code].status).send(errorBody(code, message));
}

/** The catalogue code for a status fastify itself chose (body too large, bad JSON, ...). */
export function codeForStatus(status: number): ErrorCode {
  if (status === 404) return 'not_found';
  if (status === 413) return 'payload_too_large';
  if (status === 415) return 'unsupported_media_type';
  if (status >= 400 && status < 500) return 'bad_request';
  return 'internal';
}
