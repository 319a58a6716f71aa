import type { AttachmentMeta, MailEvent, SpamStatus } from '../events/types.js';

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

export interface ListQuery {
  limit?: number;
  /** Cursor from a previous page's `next`. */
  before?: string;
  /** Search over subject, from and to. */
  q?: string;
  /** Only messages with this envelope recipient. */
  rcpt?: string;
}

export interface MessagePage {
  items: MessageSummary[];
  next: string | null;
}

export type CommitResult = 'inserted' | 'duplicate';

/**
 * Where events, raw messages and attachments live. The pipeline writes attachment files into
 * attachmentsDir(id) before commit; commit() makes the message visible atomically and is
 * idempotent by event id (spool recovery may commit the same message twice).
 */
export interface MessageStore {
  attachmentsDir(id: string): string;
  commit(event: MailEvent, rawPath: string): Promise<CommitResult>;
  get(id: string): MailEvent | null;
  list(query: ListQuery): MessagePage;
  rawPath(id: string): string | null;
  attachment(id: string, index: number): { meta: AttachmentMeta; path: string } | null;
  delete(id: string): Promise<boolean>;
  /** True while the store can take writes (for /readyz). */
  healthy(): boolean;
  close(): void;
}
