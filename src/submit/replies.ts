/**
 * The replies /submit gives before relaying, word for word as Haineko's
 * Haineko::SMTPD::Response catalogue has them, so existing clients can match on them.
 */
import type { ResponseEntry } from '../relay/types.js';

interface Reply {
  code: number;
  dsn: string | null;
  command: string;
  message: string;
}

export const REPLIES = {
  accessDenied: { code: 500, dsn: '5.7.1', command: 'AUTH', message: 'Access denied' },
  authRequired: { code: 500, dsn: '5.7.1', command: 'AUTH', message: 'Access denied. Proper authentication required.' },
  malformedJson: { code: 421, dsn: null, command: 'HTTP', message: 'Malformed JSON string' },
  methodNotSupported: { code: 421, dsn: null, command: 'HTTP', message: 'GET method not supported' },
  notFound: { code: 421, dsn: null, command: 'HTTP', message: 'Not found' },
  detectLoop: { code: 421, dsn: null, command: 'CONN', message: 'Detected message loop' },
  ehloRequired: { code: 501, dsn: '5.0.0', command: 'EHLO', message: 'EHLO requires domain address' },
  ehloInvalid: { code: 501, dsn: '5.0.0', command: 'EHLO', message: 'Invalid domain name' },
  mailSyntax: { code: 501, dsn: '5.5.2', command: 'MAIL', message: 'Syntax error in parameters scanning "FROM"' },
  mailDomainRequired: { code: 553, dsn: '5.5.4', command: 'MAIL', message: 'Domain name required for sender address' },
  rcptRequired: { code: 553, dsn: '5.0.0', command: 'RCPT', message: 'User address required' },
  tooManyRecipients: { code: 452, dsn: '4.5.3', command: 'RCPT', message: 'Too many recipients' },
  rcptInvalid: { code: 553, dsn: '5.1.5', command: 'RCPT', message: 'Recipient address is invalid' },
  rcptRejected: { code: 553, dsn: '5.7.1', command: 'RCPT', message: 'Recipient address is not permitted' },
  emptyBody: { code: 500, dsn: '5.6.0', command: 'DATA', message: 'Message body is empty' },
  tooBig: { code: 552, dsn: '5.2.3', command: 'DATA', message: 'Message size exceeds fixed maximum message size' },
  emptySubject: { code: 500, dsn: '5.6.0', command: 'DATA', message: 'Subject header is empty' },
  // mailwire's own (Haineko had no such check): a CR or LF in a header field or an address
  // would let a client add headers or SMTP commands of its choosing.
  lineBreak: { code: 501, dsn: '5.5.2', command: 'DATA', message: 'CR or LF is not permitted in a header field or an address' },
  // mailwire's own: a request beyond Haineko's fields that is not well-formed (attachments, html).
  badContent: { code: 501, dsn: '5.6.0', command: 'DATA', message: 'Invalid message content' },
  // mailwire's own: too many wrong credentials from this client (the shared throttle,
  // docs/security.md); RFC 4954's temporary authentication failure, as SMTP AUTH answers it.
  authThrottled: { code: 454, dsn: '4.7.0', command: 'AUTH', message: 'Temporary authentication failure: too many failed attempts, try again later' },
  // mailwire's own: submit.max_concurrent requests are in progress.
  busy: { code: 421, dsn: '4.3.2', command: 'CONN', message: 'Too many concurrent requests, try again later' },
} as const satisfies Record<string, Reply>;

export type ReplyName = keyof typeof REPLIES;

/** A response entry for one of the catalogued replies (host, port, mailer are null before relaying). */
export function entry(name: ReplyName, opts: { rcpt?: string | null; command?: string; detail?: string } = {}): ResponseEntry {
  const r: Reply = REPLIES[name];
  const message = [r.message];
  if (opts.detail) message.push(opts.detail);
  return {
    dsn: r.dsn,
    code: r.code,
    host: null,
    port: null,
    rcpt: opts.rcpt ?? null,
    error: r.code >= 400 ? 1 : 0,
    mailer: null,
    command: opts.command ?? r.command,
    message,
  };
}
