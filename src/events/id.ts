/**
 * Message ids: ULIDs (26 characters, Crockford base32), sortable by receive time, so
 * "newest first" and resume-after-id need no extra column. Monotonic within a millisecond.
 */
import { monotonicFactory } from 'ulid';

const next = monotonicFactory();

export function newMessageId(): string {
  return next();
}

export const MESSAGE_ID_PATTERN = /^[0-9A-HJKMNP-TV-Z]{26}$/;

export function isMessageId(s: string): boolean {
  return MESSAGE_ID_PATTERN.test(s);
}
