/**
 * POST /submit, Haineko-compatible: access control, parsing, validation in Haineko's order,
 * then one delivery per recipient through the route the tables choose. Knows nothing of HTTP
 * frameworks: http/submit.ts calls admit() when the request arrives (before its body is read),
 * then submit() with the body, and sends what comes back.
 */
import { parseAuthorization } from '../auth/credentials.js';
import { createPasswordLogin, type PasswordLogin } from '../auth/password-login.js';
import { Slots } from '../util/slots.js';
import { FailureThrottle } from '../auth/throttle.js';
import type { HookRunner } from '../hooks/runner.js';
import type { Logger } from '../log/logger.js';
import type { Relay } from '../relay/relay.js';
import type { Delivery, ResponseEntry } from '../relay/types.js';
import type { Routing } from '../routing/types.js';
import { SubmitHooks } from './hooks.js';
import { buildMessage } from './message.js';
import { entry } from './replies.js';
import { parseBody, readRequest } from './request.js';
import { makeQueueId, sessionBody, type SessionInfo } from './session.js';
import { validate, type Limits } from './validate.js';
import { normaliseIp } from '../util/net.js';

/** Who is asking: the TCP peer and two request headers. */
export interface ClientInfo {
  remoteAddress: string;
  remotePort: number;
  userAgent: string | null;
  referer: string | null;
}

export interface SubmitInput extends ClientInfo {
  body: string;
  /** The result of admit() for this request; absent: submit() runs the access check itself. */
  admitted?: { user: string | null };
  /** The Authorization header, for the access check when `admitted` is absent. */
  authorization?: string | null;
}

/** admit()'s answer: go on (holding a slot of max_concurrent until release), or this refusal. */
export type Admission = { kind: 'admit'; user: string | null; release: () => void } | { kind: 'refuse'; out: SubmitOutput };

export interface SubmitOutput {
  status: number;
  headers?: Record<string, string>;
  body: unknown;
}

export interface SubmitServiceOptions {
  routing: () => Routing;
  relay: Relay;
  limits: Limits;
  requireAuth: boolean;
  hostname: string;
  servername: string;
  version: string;
  logger: Logger;
  /** The hook scripts (src/hooks/); without any configured, requests create no hook session. */
  hooks?: HookRunner | null;
  /**
   * Basic credentials through the app's shared brute-force brake (auth/password-login.ts);
   * absent (tests): the password table through a private throttle.
   */
  login?: PasswordLogin;
  /** http.auth.realm, for the WWW-Authenticate of a 401 (default "mailwire"). */
  realm?: string;
  /** submit.max_concurrent: requests admitted and not yet answered. Default 8. */
  maxConcurrent?: number;
  /** submit.max_queued: requests waiting for a slot; beyond it, 503 at once. Default 256. */
  maxQueued?: number;
  /** submit.queue_wait in ms: the longest wait for a slot before 503. Default 30 s. */
  queueWaitMs?: number;
}

/** The fixed answers that need no body: 405, 404, a cross-site request (403), too many requests at once (503). */
export type FixedAnswer = 'methodNotSupported' | 'notFound' | 'crossSite' | 'busy';

export interface SubmitService {
  /**
   * The access check, before the body is read: Basic credentials (throttled) or relayhosts,
   * then a slot of max_concurrent, waiting in line for one if need be (`signal`: the client
   * left). A refusal is the whole answer.
   */
  admit(client: ClientInfo & { authorization: string | null }, signal?: AbortSignal): Promise<Admission>;
  submit(input: SubmitInput): Promise<SubmitOutput>;
  /** The 405 for GET /submit, the 404 for unknown paths under /submit/, and the refusals of http/submit.ts, Haineko-style. */
  fixed(kind: FixedAnswer, client: ClientInfo): SubmitOutput;
}

const FIXED_STATUS: Record<FixedAnswer, number> = { methodNotSupported: 405, notFound: 404, crossSite: 403, busy: 503 };
const FIXED_REPLY = { methodNotSupported: 'methodNotSupported', notFound: 'notFound', crossSite: 'accessDenied', busy: 'busy' } as const;

export function createSubmitService(opts: SubmitServiceOptions): SubmitService {
  const logger = opts.logger.child({ mod: 'submit' });
  const login =
    opts.login ?? createPasswordLogin({ throttle: new FailureThrottle(), passwords: { verifyPassword: (u, p) => opts.routing().verifyPassword(u, p) }, logger: opts.logger });
  // RFC 7617 2.1: charset="UTF-8" tells the client to send the user and password in UTF-8.
  const challenge = `Basic realm="${opts.realm ?? 'mailwire'}", charset="UTF-8"`;
  const slots = new Slots(opts.maxConcurrent ?? 8, opts.maxQueued ?? 256);
  const queueWaitMs = opts.queueWaitMs ?? 30_000;

  function session(input: ClientInfo): SessionInfo {
    const started = new Date();
    return {
      queueid: makeQueueId(started),
      referer: input.referer ?? '',
      useragent: input.userAgent,
      // `::ffff:127.0.0.1` is 127.0.0.1 for relayhosts and in the answer.
      remoteaddr: normaliseIp(input.remoteAddress),
      remoteport: input.remotePort,
      started,
    };
  }

  async function admit(client: ClientInfo & { authorization: string | null }, signal?: AbortSignal): Promise<Admission> {
    const access = checkAccess(client);
    if (access.kind === 'refuse') return access;
    const release = await slots.acquire(queueWaitMs, signal);
    if (!release) {
      if (!signal?.aborted) {
        logger.warn({ held: slots.held, queued: slots.queued, remote: normaliseIp(client.remoteAddress) }, 'submit refused: every submit.max_concurrent slot taken and the queue full or waited out');
      }
      return { kind: 'refuse', out: { ...fixed('busy', client), headers: { 'retry-after': '1' } } };
    }
    return { kind: 'admit', user: access.user, release };
  }

  /** Valid Basic credentials, or (unless auth is required) a client in relayhosts. */
  function checkAccess(client: ClientInfo & { authorization: string | null }): { kind: 'admit'; user: string | null } | { kind: 'refuse'; out: SubmitOutput } {
    const remote = normaliseIp(client.remoteAddress);
    const creds = parseAuthorization(client.authorization);
    const unauthorized = (): { kind: 'refuse'; out: SubmitOutput } => ({ kind: 'refuse', out: { status: 401, headers: { 'www-authenticate': challenge }, body: entry('authRequired') } });
    if (creds !== null) {
      // Any scheme but Basic, or a Basic value that does not decode, is a failed login too
      // (and, like any attempt while the client is throttled, answered 429).
      const user = creds.scheme === 'basic' ? creds.user : null;
      const outcome = login('submit', client.remoteAddress, user, creds.scheme === 'basic' ? creds.password : null);
      if (outcome.kind === 'ok') return { kind: 'admit', user };
      if (outcome.kind === 'throttled') {
        return { kind: 'refuse', out: { status: 429, headers: { 'retry-after': String(outcome.retryAfterS) }, body: entry('authThrottled') } };
      }
      return unauthorized();
    }
    if (opts.requireAuth) return unauthorized();
    if (!opts.routing().relayAllowed(remote)) {
      const s = session(client);
      logger.info({ queueid: s.queueid, remote }, 'submit: client not in relayhosts');
      return { kind: 'refuse', out: { status: 403, body: sessionBody(s, null, [], [entry('accessDenied')]) } };
    }
    return { kind: 'admit', user: null };
  }

  async function submit(input: SubmitInput): Promise<SubmitOutput> {
    let admitted = input.admitted;
    let release: (() => void) | null = null;
    if (!admitted) {
      const a = await admit({ ...input, authorization: input.authorization ?? null });
      if (a.kind === 'refuse') return a.out;
      admitted = { user: a.user };
      release = a.release;
    }
    const s = session(input);
    // The hook session (if any) ends with the request, whatever the answer: abort, then close.
    let hooks: SubmitHooks | null = null;
    try {
      return await handle(input, admitted.user, s, (h) => (hooks = h));
    } finally {
      (hooks as SubmitHooks | null)?.finish();
      release?.();
    }
  }

  async function handle(input: SubmitInput, user: string | null, s: SessionInfo, opened: (h: SubmitHooks | null) => void): Promise<SubmitOutput> {
    const routing = opts.routing();
    let tags: string[] = [];
    const answer = (status: number, addresser: string | null, recipient: string[], response: ResponseEntry[]): SubmitOutput => {
      const first = response.find((r) => r.error === 1);
      logger.info(
        {
          queueid: s.queueid,
          remote: s.remoteaddr,
          from: addresser,
          rcpts: recipient.length,
          status,
          code: first?.code ?? response[0]?.code,
          reason: first?.message[0],
          ...(tags.length ? { tags } : {}),
        },
        'submit',
      );
      return { status, body: sessionBody(s, addresser, recipient, response) };
    };

    // Access was checked by admit(). Haineko ran its connect milters here: after relayhosts,
    // before reading the request.
    const hooks = SubmitHooks.open(opts.hooks ?? null, { queueid: s.queueid, remoteAddress: s.remoteaddr, remotePort: s.remoteport, user });
    opened(hooks);
    const refusedConnect = hooks && (await hooks.connect());
    if (refusedConnect) return answer(400, null, [], [refusedConnect]);

    const json = parseBody(input.body);
    const req = json ? readRequest(json) : null;
    if (!req) return answer(400, null, [], [entry('malformedJson')]);

    const verdict = await validate(req, opts.limits, opts.servername, (rcpt) => routing.recipientAllowed(rcpt), hooks);
    const addresser = req.mail || null;
    if (verdict.kind === 'reject') return answer(verdict.status, addresser, verdict.accepted, verdict.entries);

    const message = buildMessage(req, {
      queueid: s.queueid,
      hostname: opts.hostname,
      servername: opts.servername,
      remoteaddr: s.remoteaddr,
      useragent: s.useragent,
      referer: s.referer,
      version: opts.version,
      date: s.started,
    });
    let sender = req.mail;
    let recipients = verdict.accepted;
    let outbound = message;
    if (hooks) {
      // header, body and eom on the built message; eom may edit headers and the envelope.
      const eom = await hooks.message(message, req.mail, verdict.accepted, s.started);
      if (eom.kind === 'refuse') return answer(400, addresser, verdict.accepted, [...verdict.refused, eom.entry]);
      tags = eom.tags;
      if (eom.kind === 'discard') {
        // Answered as accepted, sent nowhere: each recipient gets the Discard mailer's reply.
        const discarded = verdict.accepted.map((rcpt): ResponseEntry => ({ dsn: null, code: 200, host: null, port: null, rcpt, error: 0, mailer: 'Discard', command: 'DATA', message: ['Discard'] }));
        return answer(200, addresser, verdict.accepted, [...verdict.refused, ...discarded]);
      }
      ({ sender, rcptTo: recipients, message: outbound } = eom);
    }
    const deliveries: Delivery[] = [];
    const unroutable: ResponseEntry[] = [];
    for (const rcpt of recipients) {
      try {
        deliveries.push({ sender, rcpt, route: routing.route(rcpt, sender), message: outbound });
      } catch (err) {
        // The tables failed us (a bug or a broken file): this recipient is not sent, and says so.
        logger.error({ err, queueid: s.queueid }, 'routing failed');
        unroutable.push({ ...entry('emptyBody'), dsn: '4.3.0', code: 451, rcpt, message: ['Routing tables failed; try again later'] });
      }
    }
    const results = await opts.relay.deliverAll(deliveries);
    return answer(200, addresser, recipients, [...verdict.refused, ...unroutable, ...results]);
  }

  function fixed(kind: FixedAnswer, client: ClientInfo): SubmitOutput {
    const s = session(client);
    return { status: FIXED_STATUS[kind], body: sessionBody(s, null, [], [entry(FIXED_REPLY[kind])]) };
  }

  return { admit, submit, fixed };
}
