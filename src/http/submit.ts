/**
 * POST /submit (Haineko-compatible JSON in and out), GET /submit (405) and unknown paths under
 * /submit/ (404 in Haineko's format). The body arrives as text whatever its content type:
 * Haineko's sample clients post JSON or YAML with a form content type (see routes.ts).
 *
 * submitGate runs when the request arrives, before its body is read: a cross-site browser
 * request, a client not allowed to submit and a request beyond submit.max_concurrent are
 * answered without buffering a byte of their body.
 */
import type { IncomingMessage } from 'node:http';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Admission, SubmitOutput } from '../submit/submit.js';
import type { ResolvedHttpDeps } from './deps.js';
import { sendError } from './errors.js';
import { hostKnown, type HostPolicy } from './host-check.js';
import { checkOrigin, normaliseOrigins } from './origin.js';
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

function header(request: FastifyRequest, name: string): string | null {
  const v = request.headers[name];
  return typeof v === 'string' ? v : null;
}

function client(request: FastifyRequest) {
  return {
    remoteAddress: request.socket.remoteAddress ?? '',
    remotePort: request.socket.remotePort ?? 0,
    userAgent: header(request, 'user-agent'),
    referer: header(request, 'referer'),
  };
}

function send(reply: FastifyReply, out: SubmitOutput): FastifyReply {
  if (out.headers) reply.headers(out.headers);
  return reply.code(out.status).header('content-type', 'application/json; charset=utf-8').send(out.body);
}

/**
 * Cross-site request forgery: a page on any web site can make its visitor's browser POST a
 * text/plain form or a no-cors fetch to http://127.0.0.1:8025/submit (loopback is in the
 * default relayhosts), and the body would be read as a submission. Browsers say where such a
 * request comes from: Origin (on every POST) and Sec-Fetch-Site. Haineko clients (curl,
 * scripts, servers) send neither. Refused: an Origin that is not this server's own or in
 * http.allowed_origins, and, without Origin, Sec-Fetch-Site cross-site or same-site (another
 * port of the same host is another origin). "Same origin" counts only for a Host we know by
 * name (hostKnown): on a server that serves any Host, a DNS-rebinding page's own name would
 * otherwise be its own "same origin", from a peer address in relayhosts.
 */
export function crossSiteRequest(req: Pick<IncomingMessage, 'headers' | 'rawHeaders'>, allowedOrigins: ReadonlySet<string>, hostPolicy: HostPolicy): boolean {
  const origin = checkOrigin(req, allowedOrigins);
  // 'same' implies a parsable Origin; an unknown Host leaves only http.allowed_origins to vouch.
  if (origin === 'same' && !hostKnown(req.headers.host, hostPolicy)) return !allowedOrigins.has(new URL(req.headers.origin!).origin);
  if (origin !== 'none') return origin === 'refused';
  const site = req.headers['sec-fetch-site'];
  return site === 'cross-site' || site === 'same-site';
}

/** The admissions of requests whose body is being read, for their handler. */
const admissions = new WeakMap<IncomingMessage, { admission: Extract<Admission, { kind: 'admit' }>; handled: boolean; unwatch: () => void }>();

/**
 * Calls `onGone` once when the client is gone: its response closed, or its socket. Both are
 * needed: a pipelined request waiting behind another has no response attached to the socket
 * yet, so its response never emits 'close' when the socket dies. Returns the unsubscribe.
 */
function watchGone(request: FastifyRequest, reply: FastifyReply, onGone: () => void): () => void {
  const socket = request.raw.socket;
  let fired = false;
  // Keep-alive sockets serve many requests: no listener outlives its request.
  const unwatch = () => {
    reply.raw.off('close', fire);
    socket?.off('close', fire);
  };
  function fire(): void {
    if (fired) return;
    fired = true;
    unwatch();
    onGone();
  }
  reply.raw.once('close', fire);
  socket?.once('close', fire);
  if (!socket || socket.destroyed) fire();
  return unwatch;
}

/** The onRequest hook of POST /submit: origin, access, concurrency; before the body is read. */
export function submitGate(deps: ResolvedHttpDeps) {
  const origins = normaliseOrigins(deps.allowedOrigins ?? []);
  return async (request: FastifyRequest, reply: FastifyReply): Promise<unknown> => {
    if (!deps.submit) return undefined; // the handler answers 404
    if (crossSiteRequest(request.raw, origins, deps.hostPolicy)) {
      deps.logger.info({ origin: request.headers.origin?.slice(0, 100), site: header(request, 'sec-fetch-site') }, 'submit refused: cross-site browser request');
      return send(reply, deps.submit.fixed('crossSite', client(request)));
    }
    // A client that leaves while waiting for a slot gives its place in line up.
    const gone = new AbortController();
    const unwatchWait = watchGone(request, reply, () => gone.abort());
    const admission = await deps.submit.admit({ ...client(request), authorization: header(request, 'authorization') }, gone.signal);
    unwatchWait();
    // Answered even when the client has gone (nothing is written then): the handler must not run.
    if (admission.kind === 'refuse') return send(reply, admission.out);
    if (gone.signal.aborted) {
      admission.release();
      return send(reply, deps.submit.fixed('busy', client(request)));
    }
    // A request that ends before its handler runs (body too large, client gone) frees its slot
    // here; once the handler runs, the slot is held until the relaying is done.
    const entry = { admission, handled: false, unwatch: () => {} };
    entry.unwatch = watchGone(request, reply, () => {
      if (!entry.handled) admission.release();
    });
    admissions.set(request.raw, entry);
    return undefined;
  };
}

export function postSubmit(deps: ResolvedHttpDeps): RouteHandler {
  return async (request, reply) => {
    if (!deps.submit) return sendError(reply, 'not_found');
    const entry = admissions.get(request.raw);
    // Every route of this scope has the gate; no admission is a bug, not a reason to skip the check.
    if (!entry) throw new Error('POST /submit without an admission');
    entry.handled = true;
    entry.unwatch();
    try {
      const body = typeof request.body === 'string' ? request.body : '';
      return send(reply, await deps.submit.submit({ ...client(request), body, admitted: { user: entry.admission.user } }));
    } finally {
      entry.admission.release();
    }
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
