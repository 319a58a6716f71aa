/**
 * The feed's wire protocol (documented for users in docs/events.md): query parameters, frames,
 * close codes. Every frame is one JSON text message `{ "type", "seq", "data" }`.
 *
 *   mail.received, mail.deleted   seq = the event's position in the store's event log; a client
 *                                 resumes with ?since=<seq of the last frame it handled>
 *   mail.rejected                 seq = null (rejections are not logged, so live only)
 *   feed.ready                    replay done, live from here; data = { seq, replayed }
 *   feed.error                    data = { code, message }; the server closes right after
 *   feed.pong                     answer to a client's {"type":"feed.ping"}
 */
import { isMessageId } from '../events/id.js';
import type { AnyEvent } from '../events/types.js';

export const FEED_PATH = '/api/v1/events';

/** Close codes. 4000-4999 are the application's own (RFC 6455 7.4.2). */
export const CLOSE = {
  /** The server is stopping. */
  goingAway: 1001,
  /** The client did not keep up (its send buffer passed http.feed.max_buffered_bytes). */
  tooSlow: 1008,
  /** Reading the event log failed; reconnect with since. */
  internal: 1011,
  /** A query parameter is malformed. */
  badRequest: 4400,
  /** since names a message or position this server's log does not have. */
  unknownSince: 4404,
  /**
   * since is from before the log's horizon: entries after it were trimmed (a mail.deleted the
   * client never saw may be among them), so it must reload the messages and connect afresh.
   */
  sinceExpired: 4410,
} as const;

/**
 * RFC 5321 4.5.3.1.3: a path is at most 256 octets, so no real recipient is longer (the same
 * bound as the REST API's rcpt filter).
 */
const MAX_RCPT_LENGTH = 256;
/** A seq is a SQLite rowid: decimal, no leading zeros, within Number.MAX_SAFE_INTEGER. */
const SEQ_PATTERN = /^(?:0|[1-9][0-9]{0,15})$/;

export type Since = { seq: number } | { id: string };

export interface FeedQuery {
  /** Where replay starts; null: live only, from now. */
  since: Since | null;
  /** Lower-cased envelope recipient to filter on; null: every event. */
  rcpt: string | null;
}

export type QueryResult = { ok: true; query: FeedQuery } | { ok: false; message: string };

export function parseFeedQuery(params: URLSearchParams): QueryResult {
  const sinceValues = params.getAll('since');
  const rcptValues = params.getAll('rcpt');
  if (sinceValues.length > 1 || rcptValues.length > 1) return { ok: false, message: 'since and rcpt may each be given once' };
  let since: Since | null = null;
  const s = sinceValues[0];
  if (s !== undefined && s !== '') {
    if (SEQ_PATTERN.test(s) && Number.isSafeInteger(Number(s))) since = { seq: Number(s) };
    else if (isMessageId(s)) since = { id: s };
    else return { ok: false, message: 'since must be a seq from a frame (digits) or a message id' };
  }
  let rcpt: string | null = null;
  const r = rcptValues[0];
  if (r !== undefined && r !== '') {
    if (r.length > MAX_RCPT_LENGTH) return { ok: false, message: `rcpt is longer than ${MAX_RCPT_LENGTH} characters` };
    rcpt = r.toLowerCase();
  }
  return { ok: true, query: { since, rcpt } };
}

/** One event frame, serialised once and shared by every client it goes to. */
export function eventFrame(event: AnyEvent, seq: number | null): Buffer {
  return Buffer.from(`{"type":${JSON.stringify(event.type)},"seq":${seq === null ? 'null' : seq},"data":${JSON.stringify(event)}}`);
}

export function controlFrame(type: 'feed.ready' | 'feed.error' | 'feed.pong', data: unknown): Buffer {
  return Buffer.from(JSON.stringify({ type, seq: null, data }));
}

/**
 * Whether an event goes to a client filtering on `rcpt`. mail.deleted carries no recipients
 * (the message is gone), so every client gets every delete: a delete of a message it never
 * saw is a no-op for it, and an id reveals nothing but its receive time.
 */
export function matchesRcpt(event: AnyEvent, rcpt: string | null): boolean {
  if (rcpt === null || event.type === 'mail.deleted') return true;
  const list = event.envelope.rcptTo ?? [];
  return list.some((r) => r.toLowerCase() === rcpt);
}
