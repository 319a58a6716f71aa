/**
 * The gate in front of the feed: which upgrade requests may become a WebSocket, and the plain
 * HTTP answer for those that may not (a browser only learns that the connection failed; a
 * script sees the status and the JSON body, shaped like the REST API's errors).
 * Order: Host (DNS rebinding, as for every HTTP request), path, Origin, access control.
 */
import { STATUS_CODES, type IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { refusalHeaders, type AccessDecision } from '../auth/http-auth.js';
import { requestHostAllowed, type HostPolicy } from '../http/host-check.js';
import { checkOrigin } from '../http/origin.js';
import { FEED_PATH } from './protocol.js';

export interface Refusal {
  status: number;
  /** The label of mailwire_ws_refused_total. */
  reason: 'host' | 'path' | 'origin' | 'auth' | 'limit' | 'limit_per_ip' | 'stopping';
  /** The `error` field of the body. */
  code: string;
  message: string;
  /** Extra response headers: WWW-Authenticate on a 401, Retry-After on a 429. */
  headers?: Record<string, string>;
}

export interface Gate {
  hostPolicy: HostPolicy;
  /** Normalised http.allowed_origins (see normaliseOrigins). */
  origins: ReadonlySet<string>;
  /** Access control (auth/http-auth.ts checkFeed): a refusal's status and headers are the answer's. */
  authorize?: (req: IncomingMessage) => AccessDecision;
}

/**
 * How long a refused client has to read the answer before its socket is destroyed: one that
 * never reads must not hold the socket.
 */
const REFUSE_GRACE_MS = 5000;
/** Any absolute URL works as the base: only the path and the query of the target are used. */
const BASE = 'http://feed.invalid';

export function checkUpgrade(req: IncomingMessage, gate: Gate): { ok: true; url: URL } | { ok: false; refusal: Refusal } {
  const refuse = (status: number, reason: Refusal['reason'], code: string, message: string) => ({ ok: false as const, refusal: { status, reason, code, message } as Refusal });
  if (!requestHostAllowed(req, gate.hostPolicy)) return refuse(403, 'host', 'forbidden_host', 'Host header not allowed; add it to http.allowed_hosts');
  const target = req.url ?? '/';
  if (!URL.canParse(target, BASE)) return refuse(400, 'path', 'bad_request', 'the URL is not valid');
  const url = new URL(target, BASE);
  if (url.pathname !== FEED_PATH) return refuse(404, 'path', 'not_found', 'not found');
  if (checkOrigin(req, gate.origins) === 'refused') return refuse(403, 'origin', 'forbidden_origin', 'Origin not allowed; add it to http.allowed_origins');
  const decision = gate.authorize?.(req);
  if (decision && !decision.ok) {
    const refusal =
      decision.status === 429
        ? refuse(429, 'auth', 'too_many_requests', 'too many failed authentication attempts; try again later')
        : refuse(401, 'auth', 'unauthorized', 'authentication required');
    refusal.refusal.headers = refusalHeaders(decision);
    return refusal;
  }
  return { ok: true, url };
}

/** Answers the upgrade request with a plain HTTP error and closes the socket. */
export function refuseUpgrade(socket: Duplex, r: Refusal): void {
  socket.on('error', () => {});
  const body = JSON.stringify({ error: r.code, message: r.message });
  const timer = setTimeout(() => socket.destroy(), REFUSE_GRACE_MS).unref();
  socket.once('close', () => clearTimeout(timer));
  socket.once('finish', () => socket.destroy());
  socket.end(
    `HTTP/1.1 ${r.status} ${STATUS_CODES[r.status] ?? ''}\r\n` +
      'Connection: close\r\nContent-Type: application/json; charset=utf-8\r\n' +
      'Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n' +
      Object.entries(r.headers ?? {})
        .map(([name, value]) => `${name}: ${value}\r\n`)
        .join('') +
      `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
}
