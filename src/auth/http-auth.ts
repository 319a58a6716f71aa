/**
 * Access control for the HTTP API, the live feed and the web viewer: HTTP Basic against the
 * password table (Haineko's {SSHA} format, shared with POST /submit), or a bearer token from
 * http.auth.tokens. Pure functions over Node's IncomingMessage, so the fastify hook and the
 * WebSocket upgrade use one check.
 *
 * - Bound to a non-loopback address it is on unless http.auth.enabled is false: a server
 *   others can reach never shows mail to whoever asks.
 * - On, with no password users and no tokens, it neither starts wide open nor refuses to
 *   start: it makes a random token and logs it once at warn (as Jupyter does).
 * - Wrong credentials are logged at info (address, scheme, user; never the password) and
 *   counted per client address; past a limit the address gets 429 for a while.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { AccessConfig } from '../config/sections/access.js';
import { isLoopbackBind } from '../http/host-check.js';
import type { Logger } from '../log/logger.js';

/** What access control needs from the password table (src/routing: TableRouting satisfies it). */
export interface PasswordVerifier {
  verify(user: string, password: string): boolean;
  count(): number;
}

export type AccessDecision =
  | { ok: true; user: string | null; via: 'off' | 'basic' | 'bearer' }
  | { ok: false; status: 401; reason: 'missing' | 'invalid' }
  | { ok: false; status: 429; reason: 'throttled'; retryAfterS: number };

export type AuthRequest = Pick<IncomingMessage, 'headers' | 'url' | 'socket'>;

export interface HttpAccess {
  readonly enabled: boolean;
  /** The WWW-Authenticate value of a 401: `Basic realm="mailwire"`. */
  readonly challenge: string;
  /** The token made at start when access control is on and nothing else could log in. */
  readonly generatedToken: string | null;
  /** Header credentials only (the API, the viewer, /metrics). */
  check(req: AuthRequest): AccessDecision;
  /** For the WebSocket feed's upgrade: header credentials, or ?access_token= (browsers cannot set headers there). */
  checkFeed(req: AuthRequest): AccessDecision;
  /** checkFeed as a yes/no, for src/ws's `authorize` option. */
  authorize(req: IncomingMessage): boolean;
}

// Far above any real Authorization header (a long JWT is ~2 KiB); a bigger one is refused unparsed.
const MAX_AUTHORIZATION = 8 * 1024;
// Brute-force brake: 20 wrong attempts a minute per client address is more than a person
// mistyping and far too few for a dictionary. After that, 429 until the minute is over.
const FAILURE_LIMIT = 20;
const FAILURE_WINDOW_MS = 60_000;
// The failure map is bounded: under a spray from many addresses the oldest entries go first.
const MAX_TRACKED_CLIENTS = 10_000;

/** auto: on when http.host is not loopback. */
export function accessEnabled(mode: AccessConfig['enabled'], httpHost: string): boolean {
  return mode === 'auto' ? !isLoopbackBind(httpHost) : mode;
}

class FailureThrottle {
  readonly #clients = new Map<string, { count: number; since: number }>();

  blockedFor(ip: string, now: number): number {
    const entry = this.#clients.get(ip);
    if (!entry) return 0;
    if (now - entry.since >= FAILURE_WINDOW_MS) {
      this.#clients.delete(ip);
      return 0;
    }
    return entry.count >= FAILURE_LIMIT ? Math.ceil((entry.since + FAILURE_WINDOW_MS - now) / 1000) : 0;
  }

  fail(ip: string, now: number): void {
    const entry = this.#clients.get(ip);
    if (entry && now - entry.since < FAILURE_WINDOW_MS) {
      entry.count++;
      return;
    }
    this.#clients.delete(ip);
    if (this.#clients.size >= MAX_TRACKED_CLIENTS) this.#clients.delete(this.#clients.keys().next().value!);
    this.#clients.set(ip, { count: 1, since: now });
  }

  succeed(ip: string): void {
    this.#clients.delete(ip);
  }
}

type Credentials = { scheme: 'basic'; user: string; password: string } | { scheme: 'bearer'; token: string } | { scheme: 'malformed' } | null;

function headerCredentials(req: AuthRequest): Credentials {
  const header = req.headers.authorization;
  if (header === undefined) return null;
  if (header.length > MAX_AUTHORIZATION) return { scheme: 'malformed' };
  const m = /^([A-Za-z]+) +(\S+) *$/.exec(header);
  if (!m) return { scheme: 'malformed' };
  const scheme = m[1]!.toLowerCase();
  if (scheme === 'bearer') return { scheme: 'bearer', token: m[2]! };
  if (scheme !== 'basic' || !/^[A-Za-z0-9+/]+={0,2}$/.test(m[2]!)) return { scheme: 'malformed' };
  const decoded = Buffer.from(m[2]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return { scheme: 'malformed' };
  return { scheme: 'basic', user: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

function queryToken(req: AuthRequest): string | null {
  const url = req.url ?? '';
  const q = url.indexOf('?');
  if (q < 0) return null;
  return new URLSearchParams(url.slice(q + 1)).get('access_token');
}

const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest();

export interface HttpAccessOptions {
  config: AccessConfig;
  /** config http.host, for enabled: auto. */
  httpHost: string;
  passwords: PasswordVerifier;
  logger: Logger;
  /** The clock, for the failure window. */
  now?: () => number;
}

export function createHttpAccess(opts: HttpAccessOptions): HttpAccess {
  const logger = opts.logger.child({ mod: 'auth' });
  const now = opts.now ?? Date.now;
  const enabled = accessEnabled(opts.config.enabled, opts.httpHost);
  const challenge = `Basic realm="${opts.config.realm}"`;
  let generatedToken: string | null = null;
  if (enabled && opts.passwords.count() === 0 && opts.config.tokens.length === 0) {
    generatedToken = randomBytes(32).toString('base64url');
    logger.warn(
      `access control is on (http.host ${opts.httpHost}) but there are no users in the password file and no http.auth.tokens: ` +
        `use this token until you add one (it changes at every start): Authorization: Bearer ${generatedToken}`,
    );
  } else if (!enabled && !isLoopbackBind(opts.httpHost)) {
    logger.warn(`access control is off (http.auth.enabled: false) on ${opts.httpHost}: anyone who can reach the HTTP port can read all mail`);
  }
  // Compared as SHA-256 digests: equal length for timingSafeEqual, whatever the token length.
  const tokenDigests = [...opts.config.tokens, ...(generatedToken ? [generatedToken] : [])].map(digest);
  const throttle = new FailureThrottle();

  function tokenValid(token: string): boolean {
    const d = digest(token);
    let ok = false;
    // Every token is compared: the time does not tell which one (or whether any) matched.
    for (const t of tokenDigests) ok = timingSafeEqual(d, t) || ok;
    return ok;
  }

  function decide(req: AuthRequest, allowQuery: boolean): AccessDecision {
    if (!enabled) return { ok: true, user: null, via: 'off' };
    let creds = headerCredentials(req);
    if (creds === null && allowQuery) {
      const token = queryToken(req);
      if (token !== null) creds = { scheme: 'bearer', token };
    }
    if (creds === null) return { ok: false, status: 401, reason: 'missing' };
    const ip = req.socket.remoteAddress ?? 'unknown';
    const t = now();
    const wait = throttle.blockedFor(ip, t);
    if (wait > 0) {
      logger.debug({ ip }, 'authentication attempt refused: too many failures');
      return { ok: false, status: 429, reason: 'throttled', retryAfterS: wait };
    }
    let ok = false;
    if (creds.scheme === 'basic') ok = opts.passwords.verify(creds.user, creds.password);
    else if (creds.scheme === 'bearer') ok = tokenValid(creds.token);
    if (ok) {
      throttle.succeed(ip);
      return creds.scheme === 'basic' ? { ok: true, user: creds.user, via: 'basic' } : { ok: true, user: null, via: 'bearer' };
    }
    throttle.fail(ip, t);
    const user = creds.scheme === 'basic' ? creds.user.slice(0, 64) : undefined;
    logger.info({ ip, scheme: creds.scheme, ...(user !== undefined ? { user } : {}) }, 'HTTP authentication failed');
    return { ok: false, status: 401, reason: 'invalid' };
  }

  return {
    enabled,
    challenge,
    generatedToken,
    check: (req) => decide(req, false),
    checkFeed: (req) => decide(req, true),
    authorize: (req) => decide(req, true).ok,
  };
}
