import type { MailEvent } from '../events/types.js';

/** Bounds on the work and memory one message can cause while being parsed. */
export interface ParseLimits {
  maxTextBytes: number;
  maxHtmlBytes: number;
  maxAttachments: number;
  maxHeaders: number;
  timeoutMs: number;
}

/** The parsed part of a MailEvent. */
export type ParsedMessage = Pick<
  MailEvent,
  'messageId' | 'subject' | 'date' | 'from' | 'to' | 'cc' | 'replyTo' | 'headers' | 'text' | 'html' | 'truncated' | 'attachments' | 'parseError'
>;

/** A message of which nothing could be parsed: it is stored raw, with the reason in parseError. */
export function unparsed(parseError: string): ParsedMessage {
  return {
    messageId: null,
    subject: null,
    date: null,
    from: [],
    to: [],
    cc: [],
    replyTo: [],
    headers: [],
    text: null,
    html: null,
    truncated: { text: false, html: false },
    attachments: [],
    parseError,
  };
}
