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
 *   counted per client (throttle.ts, shared with /submit and SMTP AUTH); past a limit the
 *   client gets 429 for a while.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { AccessConfig } from '../config/sections/access.js';
import type { Logger } from '../log/logger.js';
import { isLoopbackBind } from '../util/net.js';
import { parseAuthorization, type Credentials } from './credentials.js';
import { FailureThrottle } from './throttle.js';

/** What access control needs from the password table (src/routing: TableRouting satisfies it). */
export interface PasswordVerifier {
  /** Checks a user's password against its {SSHA}/{SSHA256}/{SSHA512} hash. */
  verifyPassword(user: string, password: string): boolean;
  /** How many users the password table holds now. */
  count(): number;
}

/** A refusal carries what its answer needs: the challenge of a 401, the wait of a 429. */
export type AccessDecision =
  | { ok: true; user: string | null; via: 'off' | 'basic' | 'bearer' }
  | { ok: false; status: 401; reason: 'missing' | 'invalid'; challenge: string }
  | { ok: false; status: 429; reason: 'throttled'; retryAfterS: number };

/** The response headers of a refusal: WWW-Authenticate for 401, Retry-After for 429. */
export function refusalHeaders(decision: Extract<AccessDecision, { ok: false }>): Record<string, string> {
  return decision.status === 429 ? { 'retry-after': String(decision.retryAfterS) } : { 'www-authenticate': decision.challenge };
}

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
  /** checkFeed, for src/ws's `authorize` option (the refusal's status and headers go on the upgrade's answer). */
  authorize(req: IncomingMessage): AccessDecision;
}

/** auto: on when http.host is not loopback. */
export function accessEnabled(mode: AccessConfig['enabled'], httpHost: string): boolean {
  return mode === 'auto' ? !isLoopbackBind(httpHost) : mode;
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
  /** The app's one brute-force brake (shared with /submit and SMTP AUTH); a private one when absent (tests). */
  throttle?: FailureThrottle;
  /** The clock of the private throttle, for the failure window. */
  now?: () => number;
}

export function createHttpAccess(opts: HttpAccessOptions): HttpAccess {
  const logger = opts.logger.child({ mod: 'auth' });
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
  const throttle = opts.throttle ?? new FailureThrottle(opts.now);

  function tokenValid(token: string): boolean {
    const d = digest(token);
    let ok = false;
    // Every token is compared: the time does not tell which one (or whether any) matched.
    for (const t of tokenDigests) ok = timingSafeEqual(d, t) || ok;
    return ok;
  }

  function decide(req: AuthRequest, allowQuery: boolean): AccessDecision {
    if (!enabled) return { ok: true, user: null, via: 'off' };
    let creds: Credentials = parseAuthorization(req.headers.authorization);
    if (creds === null && allowQuery) {
      const token = queryToken(req);
      if (token !== null) creds = { scheme: 'bearer', token };
    }
    if (creds === null) return { ok: false, status: 401, reason: 'missing', challenge };
    const ip = req.socket.remoteAddress ?? 'unknown';
    const c = creds;
    const outcome = throttle.attempt(ip, () =>
      c.scheme === 'basic' ? opts.passwords.verifyPassword(c.user, c.password) : c.scheme === 'bearer' ? tokenValid(c.token) : false,
    );
    if (outcome.kind === 'throttled') {
      logger.debug({ ip }, 'authentication attempt refused: too many failures');
      return { ok: false, status: 429, reason: 'throttled', retryAfterS: outcome.retryAfterS };
    }
    if (outcome.kind === 'ok') return c.scheme === 'basic' ? { ok: true, user: c.user, via: 'basic' } : { ok: true, user: null, via: 'bearer' };
    const user = c.scheme === 'basic' ? c.user.slice(0, 64) : undefined;
    logger.info({ ip, scheme: c.scheme, ...(user !== undefined ? { user } : {}) }, 'HTTP authentication failed');
    return { ok: false, status: 401, reason: 'invalid', challenge };
  }

  return {
    enabled,
    challenge,
    generatedToken,
    check: (req) => decide(req, false),
    checkFeed: (req) => decide(req, true),
    authorize: (req) => decide(req, true),
  };
}
