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
