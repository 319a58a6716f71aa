/**
 * The SMTP side of outbound relaying: a client allowed to relay (its address in relayhosts, or
 * authenticated with AUTH against the password table) sends to a recipient that is not local.
 * The message is durable in the spool first (like any other), then delivered through the same
 * routing tables and relay mailers as POST /submit; the client's DATA reply is the upstream's
 * reply (no queue, like Haineko). The spool entry is released afterwards whatever the outcome:
 * a relayed message is never stored as local mail (no mail.received event).
 *
 * eom hooks run before relaying (relay-eom.ts): their refusal is the client's reply, a discard
 * answers 250 and relays nothing, and their edits change what is relayed. The reply is the
 * upstream's for the first recipient (the client's, unless a hook removed it). Recipients a hook
 * added are relayed to once that one is accepted, after the reply, and their outcomes are only
 * logged: a failure there must not make the client send again to a recipient that already has
 * the message.
 *
 * Reply mapping (the client sees the upstream's code, enhanced code and text):
 *   2xx, or a local mailer's 200 (File, Screen, Discard) ─▶ 250 with the upstream's text
 *   4xx / 5xx                                             ─▶ the same code and enhanced code
 *   421, or upstream unreachable                          ─▶ 451 4.4.1 (a 421 would close our session)
 *   a refusal of our EHLO or STARTTLS                     ─▶ 451 4.4.1
 *   a refusal of our AUTH (a wrong authinfo password)     ─▶ 451 4.7.0
 *   anything else                                         ─▶ 451 4.3.0
 * Refusals before MAIL are about this gateway's setup or the upstream, never about the message:
 * passed through as a 5xx they would make the client bounce mail for good (Postfix defers them
 * too: smtp_sasl_auth_soft_bounce).
 */
import { readRaw } from '../util/raw-source.js';
import type { Logger } from '../log/logger.js';
import type { Relay } from '../relay/relay.js';
import type { ResponseEntry } from '../relay/types.js';
import type { Routing } from '../routing/types.js';
import type { MessageOutcome } from '../smtp/transaction.js';
import type { Spool, SpooledMessage } from '../spool/spool.js';
import type { HookSession } from '../hooks/runner.js';
import { relayEom } from './relay-eom.js';

export interface OutboundRelayDeps {
  routing(): Routing;
  relay: Pick<Relay, 'deliver'>;
  spool: Spool;
  logger: Logger;
}

/** What the SMTP listener asks (see SmtpDeps.relay). */
export interface OutboundRelay {
  mayRelay(client: { remoteAddress: string; user: string | null }): boolean;
  recipientAllowed(rcpt: string): boolean;
  deliver(msg: SpooledMessage, rcpt: string, hooks?: HookSession | null): Promise<MessageOutcome>;
}

// The reply text we pass back is one line; an upstream sending pages of text should not make
// ours long (reply.ts already caps the lines at 10 x 512 characters).
const MAX_REPLY_TEXT = 512;

export function createOutboundRelay(deps: OutboundRelayDeps): OutboundRelay {
  const logger = deps.logger.child({ mod: 'smtp-relay' });
  return {
    // An authenticated session may relay: AUTH is only offered when smtp.auth.enabled (and, by
    // default, only after STARTTLS), and it checks the password table.
    mayRelay: (client) => client.user !== null || deps.routing().relayAllowed(client.remoteAddress),
    recipientAllowed: (rcpt) => deps.routing().recipientAllowed(rcpt),
    async deliver(msg, rcpt, hooks = null) {
      const started = performance.now();
      // The mailers take the bytes synchronously (OutboundMessage.raw); the size is bounded by
      // smtp.limits.max_message_size, enforced while spooling. Our Received: header is included.
      let raw = await readRaw(msg.raw);
      let sender = msg.envelope.mailFrom;
      let rcptTo = [rcpt];
      let disconnect = false;
      // What every 'relayed message' log line says about the message.
      const about = (to: string) => ({ id: msg.id, from: sender, rcpt: to, ip: msg.envelope.remoteAddress, user: msg.envelope.auth?.user ?? null, size: msg.size });
      if (hooks?.has('eom')) {
        const eom = await relayEom(hooks, msg, rcpt, raw);
        if (eom.kind === 'refuse') {
          logger.info({ ...about(rcpt), code: eom.code, result: 'rejected-hook' }, 'relayed message');
          // transaction.ts releases the spool entry of a refused message before replying.
          return { kind: 'reject', code: eom.code, enhanced: eom.enhanced, message: eom.message, disconnect: eom.disconnect };
        }
        if (eom.kind === 'discard') {
          // Out of the spool before the 250: recovery drops relayed entries anyway, but nothing waits on it.
          await deps.spool.release(msg);
          logger.info({ ...about(rcpt), code: 250, result: 'discarded-hook' }, 'relayed message');
          return { kind: 'accept', disconnect: eom.disconnect, afterReply: () => Promise.resolve() };
        }
        ({ raw, sender, rcptTo, disconnect } = eom);
      }
      const bytes = raw;
      const relayTo = async (to: string): Promise<SmtpReply> => {
        const route = deps.routing().route(to, sender);
        const result = await deps.relay.deliver({ sender, rcpt: to, route, message: { queueid: msg.id, raw: () => bytes, json: null } });
        const reply = smtpReply(result);
        logger.info(
          {
            ...about(to),
            route: route.source,
            mailer: route.mailer,
            upstream: result.code,
            dsn: result.dsn,
            code: reply.code,
            ms: Math.round(performance.now() - started),
          },
          'relayed message',
        );
        return reply;
      };
      const [first, ...added] = rcptTo;
      const reply = await relayTo(first!);
      if (reply.code !== 250) {
        // transaction.ts releases the spool entry of a refused message before replying.
        return { kind: 'reject', code: reply.code, enhanced: reply.enhanced, message: reply.text, disconnect };
      }
      const afterReply = async () => {
        // After the reply: a slow upstream for an added recipient must not hold the client's
        // reply until it gives up and sends again.
        for (const to of added) {
          await relayTo(to).catch((err: unknown) => logger.error({ err, id: msg.id, rcpt: to }, 'relaying to a recipient a hook added failed'));
        }
        await deps.spool.release(msg);
      };
      return { kind: 'accept', reply: `${reply.enhanced} ${reply.text}`, disconnect, afterReply };
    },
  };
}

export interface SmtpReply {
  code: number;
  enhanced: string;
  text: string;
}

/** The SMTP reply our client gets for the upstream's result (see the table at the top). */
export function smtpReply(r: ResponseEntry): SmtpReply {
  const text = replyText(r.message);
  if (r.command === 'CONN' || r.code === 421 || r.command === 'EHLO' || r.command === 'STARTTLS') {
    return { code: 451, enhanced: '4.4.1', text: `Upstream unavailable, try again later${text ? `: ${text}` : ''}` };
  }
  if (r.command === 'AUTH' && r.code >= 400) {
    return { code: 451, enhanced: '4.7.0', text: `Upstream refused our authentication, try again later${text ? `: ${text}` : ''}` };
  }
  const cls = Math.floor(r.code / 100);
  if (cls === 2) return { code: 250, enhanced: dsnOfClass(r.dsn, 2) ?? '2.0.0', text: text || 'Ok' };
  if (cls === 4 || cls === 5) return { code: r.code, enhanced: dsnOfClass(r.dsn, cls) ?? `${cls}.0.0`, text: text || 'Upstream refused the message' };
  return { code: 451, enhanced: '4.3.0', text: `Unexpected upstream reply, try again later${text ? `: ${text}` : ''}` };
}

/** The enhanced code if it has the reply's class (RFC 3463: they must agree), else null. */
function dsnOfClass(dsn: string | null, cls: number): string | null {
  return dsn && /^[245]\.\d{1,3}\.\d{1,3}$/.test(dsn) && dsn.startsWith(`${cls}.`) ? dsn : null;
}

/** The upstream's reply lines without their codes, as one line. */
function replyText(lines: readonly string[]): string {
  const text = lines
    .map((l) => l.replace(/^[2345]\d\d[ -]?/, '').replace(/^[245]\.\d{1,3}\.\d{1,3}\s*/, '').trim())
    .filter((l) => l.length > 0)
    .join(' ');
  // Control characters never reach a reply line (smtp-server also replaces them).
  return text.replace(/[\x00-\x1f\x7f]/g, ' ').slice(0, MAX_REPLY_TEXT);
}
