import type { RawSource } from '../util/raw-source.js';
import type { AttachmentMeta, MailDeletedEvent, MailEvent, SpamStatus } from '../events/types.js';

/** One row of the message list: enough for a list view without loading every event. */
export interface MessageSummary {
  id: string;
  receivedAt: string;
  mailFrom: string;
  rcptTo: string[];
  from: { name: string; address: string }[];
  subject: string | null;
  size: number;
  spam: { status: SpamStatus; score: number | null };
  attachments: number;
  messageId: string | null;
}

/** Page size when the caller gives none. */
export const DEFAULT_LIST_LIMIT = 50;
/**
 * Largest page. A summary is ~0.5 KiB of JSON, so 500 rows is ~250 KiB per response: enough
 * for any list view, while one request cannot make the server serialise the whole mailbox.
 */
export const MAX_LIST_LIMIT = 500;

export interface ListQuery {
  /** 1..MAX_LIST_LIMIT; DEFAULT_LIST_LIMIT when absent. */
  limit?: number;
  /** Cursor from a previous page's `next`. Opaque: pass it back unchanged. */
  before?: string;
  /** Case-insensitive substring search over subject, from and to (header and envelope). */
  q?: string;
  /** Only messages with this envelope recipient (exact, case-insensitive). */
  rcpt?: string;
}

export interface MessagePage {
  items: MessageSummary[];
  next: string | null;
}

export type CommitResult = 'inserted' | 'duplicate';

/**
 * A list() query the store cannot run: a malformed cursor or an out-of-range limit. It comes
 * from user input, so the HTTP layer answers 400 with `message`; anything else list() throws
 * is a broken store.
 */
export class StoreQueryError extends Error {
  constructor(
    readonly field: 'limit' | 'before' | 'q' | 'rcpt',
    message: string,
  ) {
    super(message);
    this.name = 'StoreQueryError';
  }
}

/**
 * Where events, raw messages and attachments live. The pipeline writes attachment files into
 * attachmentsDir(id) before commit; commit() makes the message visible atomically and is
 * idempotent by event id (spool recovery may commit the same message twice).
 */
export interface MessageStore {
  attachmentsDir(id: string): string;
  /**
   * Removes what the pipeline wrote for a message that will not be committed (refused after
   * parsing: spam, a hook): its directory with the attachments. A committed message is
   * removed with delete().
   */
  discardFiles(id: string): Promise<void>;
  /** `raw`: the message's bytes; kept in the database when in memory, else linked from the file. */
  commit(event: MailEvent, raw: RawSource): Promise<CommitResult>;
  get(id: string): MailEvent | null;
  /** Newest first. Throws StoreQueryError for a bad limit or cursor. */
  list(query: ListQuery): MessagePage;
  /** The stored message's bytes (small messages) or file; null when there is no such message. */
  raw(id: string): RawSource | null;
  attachment(id: string, index: number): { meta: AttachmentMeta; path: string } | null;
  delete(id: string): Promise<boolean>;
  /** True while the store can take writes (for /readyz). */
  healthy(): boolean;
  /** Waits for the writes already asked for, then closes. */
  close(): Promise<void>;
}

/** What retention (store/retention.ts) reads to pick the messages to delete. */
export interface RetentionView {
  /** Messages stored. */
  count(): number;
  /** The `limit` first messages in commit order (oldest first), with their receivedAt. */
  oldest(limit: number): { id: string; receivedAt: string }[];
}

/** One entry of the store's event log, in commit order. */
export interface LoggedEvent {
  /** Position in the log; strictly increasing, never reused. */
  seq: number;
  event: MailEvent | MailDeletedEvent;
}

/** One event-log entry without its event (see EventLog.eventHeadsAfter). */
export interface LogEntryHead {
  seq: number;
  type: 'mail.received' | 'mail.deleted';
  /** The message's id (for mail.deleted: the id of the message deleted). */
  id: string;
  /** receivedAt, or when the message was deleted. */
  at: string;
  /**
   * The message's envelope recipients; for mail.deleted, those of the message deleted (kept in
   * the log for filtered webhooks, not part of the public event). null for a deletion logged
   * before the store recorded them.
   */
  rcptTo: string[] | null;
}

/**
 * The store's append-only log of mail.received and mail.deleted, in commit order, so the
 * WebSocket feed can replay what a client missed (`?since=<id>`) before going live.
 */
export interface EventLog {
  /**
   * Up to `limit` entries after `since` (a log seq, or the id of a received message), oldest
   * first. A received entry whose message has been deleted since is left out: its
   * mail.deleted entry follows later in the log. null when `since` is an id the log never saw.
   */
  eventsAfter(since: { seq: number } | { id: string }, limit: number): LoggedEvent[] | null;
  /**
   * Like eventsAfter({ seq }), but only what a consumer needs to route an entry (the webhooks):
   * no event is loaded or parsed, so a page costs a few hundred bytes per entry, not up to the
   * size of each message's event.
   */
  eventHeadsAfter(seq: number, limit: number): LogEntryHead[];
  /**
   * seq of the newest entry ever written, 0 before the first (where a live feed starts). It
   * never goes back, even when trimming removed the entries at the end.
   */
  lastEventSeq(): number;
  /**
   * Entries up to this seq may have been trimmed (store/event-log-trim.ts); 0 when none was. A
   * reader resuming from before it could miss a mail.deleted, so it must start afresh instead.
   */
  logHorizon(): number;
  /** seq of a received message's log entry; null when the log has none for that id. */
  receivedSeq(id: string): number | null;
}

/** One step of the event-log trim. */
export interface TrimResult {
  /** Entries removed. */
  removed: number;
  /** The step stopped at its row limit, not at `before` or keepFrom: there may be more. */
  more: boolean;
}

/** What the event-log trim (store/event-log-trim.ts) needs from the store. */
export interface EventLogTrim {
  /**
   * Walks up to `maxRows` entries past the horizon, in log order, up to `keepFrom` (the lowest
   * webhook cursor) and stopping at the first logged at or after `before` (an ISO time). Of
   * those it removes the mail.deleted entries (with their message's mail.received entry, if
   * that was logged before `before`) and the mail.received entries of messages gone; a live
   * message's entry stays. The horizon moves to the last entry walked.
   */
  trimEventLog(before: string, keepFrom: number, maxRows: number): Promise<TrimResult>;
}
