/**
 * POST /submit, Haineko-compatible: access control, parsing, validation in Haineko's order,
 * then one delivery per recipient through the route the tables choose. Knows nothing of HTTP
 * frameworks: the handler in http/submit.ts passes the request in and sends what comes back.
 */
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

export interface SubmitInput {
  body: string;
  remoteAddress: string;
  remotePort: number;
  userAgent: string | null;
  referer: string | null;
  authorization: string | null;
}

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
}

export interface SubmitService {
  submit(input: SubmitInput): Promise<SubmitOutput>;
  /** The 405 for GET /submit and the 404 for unknown paths under /submit/, Haineko-style. */
  fixed(kind: 'methodNotSupported' | 'notFound', input: Omit<SubmitInput, 'body' | 'authorization'>): SubmitOutput;
}

type Credentials = { user: string; password: string } | 'malformed' | null;

/** Basic credentials from an Authorization header; 'malformed' for any other scheme or encoding. */
function basicCredentials(header: string | null): Credentials {
  if (header === null) return null;
  const m = /^Basic\s+([A-Za-z0-9+/]+=*)\s*$/i.exec(header);
  if (!m) return 'malformed';
  const decoded = Buffer.from(m[1]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return 'malformed';
  return { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

/** `::ffff:127.0.0.1` is 127.0.0.1 for relayhosts and in the answer. */
function plainAddress(a: string): string {
  return a.startsWith('::ffff:') && a.includes('.') ? a.slice(7) : a;
}

export function createSubmitService(opts: SubmitServiceOptions): SubmitService {
  const logger = opts.logger.child({ mod: 'submit' });

  function session(input: Omit<SubmitInput, 'body' | 'authorization'>): SessionInfo {
    const started = new Date();
    return {
      queueid: makeQueueId(started),
      referer: input.referer ?? '',
      useragent: input.userAgent,
      remoteaddr: plainAddress(input.remoteAddress),
      remoteport: input.remotePort,
      started,
    };
  }

  async function submit(input: SubmitInput): Promise<SubmitOutput> {
    const s = session(input);
    // The hook session (if any) ends with the request, whatever the answer: abort, then close.
    let hooks: SubmitHooks | null = null;
    try {
      return await handle(input, s, (h) => (hooks = h));
    } finally {
      (hooks as SubmitHooks | null)?.finish();
    }
  }

  async function handle(input: SubmitInput, s: SessionInfo, opened: (h: SubmitHooks | null) => void): Promise<SubmitOutput> {
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

    // Access: valid Basic credentials, or (unless auth is required) a client in relayhosts.
    const creds = basicCredentials(input.authorization);
    const authenticated = creds !== null && creds !== 'malformed' && routing.verifyPassword(creds.user, creds.password);
    if ((creds !== null && !authenticated) || (opts.requireAuth && !authenticated)) {
      logger.info({ queueid: s.queueid, remote: s.remoteaddr, user: creds !== null && creds !== 'malformed' ? creds.user.slice(0, 64) : null }, 'submit: authentication failed');
      return { status: 401, headers: { 'www-authenticate': 'Basic realm="mailwire", charset="UTF-8"' }, body: entry('authRequired') };
    }
    if (!authenticated && !routing.relayAllowed(s.remoteaddr)) return answer(403, null, [], [entry('accessDenied')]);

    // Haineko ran its connect milters here: after relayhosts, before reading the request.
    const user = authenticated && typeof creds === 'object' && creds !== null ? creds.user : null;
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

  function fixed(kind: 'methodNotSupported' | 'notFound', input: Omit<SubmitInput, 'body' | 'authorization'>): SubmitOutput {
    const s = session(input);
    return { status: kind === 'notFound' ? 404 : 405, body: sessionBody(s, null, [], [entry(kind)]) };
  }

  return { submit, fixed };
}
