/** Assembles a MailEvent (v1) from the spooled envelope, the parse result and the spam result. */
import type { HookRecord, MailEvent, SpamResult } from './types.js';
import type { ParsedMessage } from '../parse/types.js';

export interface SpooledFacts {
  id: string;
  receivedAt: string;
  envelope: MailEvent['envelope'];
  size: number;
  sha256: string;
}

export function buildMailEvent(msg: SpooledFacts, parsed: ParsedMessage, spam: SpamResult, hooks: HookRecord[] = [], tags: string[] = []): MailEvent {
  return {
    type: 'mail.received',
    version: 1,
    id: msg.id,
    receivedAt: msg.receivedAt,
    envelope: msg.envelope,
    size: msg.size,
    sha256: msg.sha256,
    messageId: parsed.messageId,
    subject: parsed.subject,
    date: parsed.date,
    from: parsed.from,
    to: parsed.to,
    cc: parsed.cc,
    replyTo: parsed.replyTo,
    headers: parsed.headers,
    text: parsed.text,
    html: parsed.html,
    truncated: parsed.truncated,
    attachments: parsed.attachments,
    spam,
    hooks,
    tags,
    parseError: parsed.parseError,
  };
}
