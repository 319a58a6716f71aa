/**
 * Haineko's checks, in Haineko's order, with its replies. Pure: the tables come in as a
 * function and the hook checkpoints (if any) as gates, nothing is sent. The HTTP-level checks
 * (relayhosts, authentication, malformed body, the connect hook) are in submit.ts, before these.
 */
import type { ResponseEntry } from '../relay/types.js';
import { hasLineBreak, isValidAddress, isValidEhlo } from './address.js';
import { entry } from './replies.js';
import type { SubmitRequest } from './request.js';

/** Servers a message may have passed (its X-Haineko-Loop list) before it counts as a loop. */
export const MAX_LOOP_HOPS = 50;

export interface Limits {
  maxMessageSize: number;
  maxRcptsPerMessage: number;
}

export type Verdict =
  | { kind: 'reject'; status: number; entries: ResponseEntry[]; accepted: string[] }
  | { kind: 'accept'; accepted: string[]; refused: ResponseEntry[] };

function reject(status: number, entries: ResponseEntry[], accepted: string[] = []): Verdict {
  return { kind: 'reject', status, entries, accepted };
}

/** The first field carrying CR, LF or NUL, with the SMTP command it belongs to. */
function lineBreakField(req: SubmitRequest): { field: string; command: string } | null {
  const fields: [string, string, string][] = [
    ['ehlo', 'EHLO', req.ehlo],
    ['mail', 'MAIL', req.mail],
    ...req.rcpt.map((r): [string, string, string] => ['rcpt', 'RCPT', r]),
    ['header.from', 'DATA', req.header.from ?? ''],
    ['header.subject', 'DATA', req.header.subject],
    ['header.replyto', 'DATA', req.header.replyto ?? ''],
    ['header.charset', 'DATA', req.header.charset],
    ...req.header.cc.map((c): [string, string, string] => ['header.cc', 'DATA', c]),
    ...req.header.loop.map((c): [string, string, string] => ['header.x-haineko-loop', 'DATA', c]),
    ...req.header.extra.flatMap(([n, v]): [string, string, string][] => [[`header.${n}`, 'DATA', n], [`header.${n}`, 'DATA', v]]),
    ...req.attachments.flatMap((a): [string, string, string][] => [['attachments.filename', 'DATA', a.filename], ['attachments.contentType', 'DATA', a.contentType]]),
  ];
  for (const [field, command, value] of fields) if (hasLineBreak(value)) return { field, command };
  return null;
}

/** Bytes of the content, as it will be sent before transfer encoding. */
export function contentBytes(req: SubmitRequest): number {
  let n = Buffer.byteLength(req.body, 'utf8');
  if (req.html !== null) n += Buffer.byteLength(req.html, 'utf8');
  for (const a of req.attachments) n += a.content.length;
  return n;
}

/**
 * Hook checkpoints between Haineko's checks (src/submit/hooks.ts), where Haineko ran its milters:
 * each answers a refusal entry or null to go on.
 */
export interface Gates {
  helo(ehlo: string): Promise<ResponseEntry | null>;
  mail(address: string): Promise<ResponseEntry | null>;
  /** Per recipient that passed the recipients table: a refusal refuses that recipient only. */
  rcpt(address: string): Promise<ResponseEntry | null>;
}

export async function validate(
  req: SubmitRequest,
  limits: Limits,
  servername: string,
  recipientAllowed: (rcpt: string) => boolean,
  gates: Gates | null = null,
): Promise<Verdict> {
  // Nothing with a line break goes any further: it would be a header or a command of the client's choosing.
  const broken = lineBreakField(req);
  if (broken) return reject(400, [entry('lineBreak', { command: broken.command, detail: broken.field })]);

  // Loop detection (Haineko's check was dead code): this server is already in the list, or
  // the list is longer than any real chain of servers (Postfix's hopcount_limit is 50 too).
  const me = servername.toLowerCase();
  if (req.header.loop.length >= MAX_LOOP_HOPS) return reject(400, [entry('detectLoop')]);
  if (req.header.loop.some((s) => s.trim().toLowerCase() === me)) return reject(400, [entry('detectLoop')]);

  if (!req.ehlo) return reject(400, [entry('ehloRequired')]);
  if (!isValidEhlo(req.ehlo)) return reject(400, [entry('ehloInvalid')]);
  const helo = gates && (await gates.helo(req.ehlo));
  if (helo) return reject(400, [helo]);

  if (!req.mail) return reject(400, [entry('mailSyntax')]);
  if (!isValidAddress(req.mail)) return reject(400, [entry('mailDomainRequired')]);
  const mail = gates && (await gates.mail(req.mail));
  if (mail) return reject(400, [mail]);

  if (req.rcpt.length === 0) return reject(400, [entry('rcptRequired')]);
  if (req.rcpt.length > limits.maxRcptsPerMessage) return reject(403, [entry('tooManyRecipients')]);

  // Each recipient on its own: a bad one is reported, the others go on.
  const refused: ResponseEntry[] = [];
  const accepted: string[] = [];
  for (const rcpt of req.rcpt) {
    if (!isValidAddress(rcpt)) refused.push(entry('rcptInvalid', { rcpt }));
    else if (!recipientAllowed(rcpt)) refused.push(entry('rcptRejected', { rcpt }));
    else {
      const hook = gates && (await gates.rcpt(rcpt));
      if (hook) refused.push(hook);
      else accepted.push(rcpt);
    }
  }
  if (accepted.length === 0) return reject(400, refused);

  if (!req.body) return reject(400, [...refused, entry('emptyBody')], accepted);
  if (contentBytes(req) > limits.maxMessageSize) return reject(400, [...refused, entry('tooBig')], accepted);
  // Only spaces and tabs is empty too: the header writer squeezes them away (charset.ts).
  if (!req.header.subject.trim()) return reject(400, [...refused, entry('emptySubject')], accepted);
  if (req.contentError) return reject(400, [...refused, entry('badContent', { detail: req.contentError })], accepted);

  return { kind: 'accept', accepted, refused };
}
