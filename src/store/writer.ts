/**
 * Every write to the store's database, on a connection of its own. It runs in a worker thread
 * (writer-worker.ts, driven by writer-thread.ts), so the SMTP and HTTP event loop never waits
 * for a write transaction: not for the WAL fsync that makes a commit durable, not for the
 * checkpoints SQLite runs after a commit now and then (they write and fsync the database file).
 * The main thread's own connection (sqlite-store.ts) only reads.
 *
 * SQLite orders writers itself: this is the only connection that writes while the app runs,
 * and every transaction takes the write lock at BEGIN (IMMEDIATE), so a check and the write it
 * guards see the same database.
 */
import Database from 'better-sqlite3';
import type { AddressInfo, MailDeletedEvent, MailEvent } from '../events/types.js';
import type { CommitResult, TrimResult } from './types.js';

/** One message of a commit batch, as the main thread hands it over. */
export interface InsertItem {
  /** The mail.received event, serialised once on the main thread: a string crosses threads as one copy. */
  json: string;
  /** The raw message when it goes into the row (up to 64 KiB, see sqlite-store.ts), else null. */
  raw: Uint8Array | null;
}

/** An error as it crosses the thread boundary (an Error's own properties, such as code, do not). */
export interface WriterError {
  message: string;
  code: string | null;
}

export type InsertOutcome = { ok: true; value: CommitResult } | { ok: false; error: WriterError };

export interface InsertBatchResult {
  outcomes: InsertOutcome[];
  /** Why the batch's single transaction failed, when it did and each item was committed alone. */
  batchError: WriterError | null;
}

interface TrimRow {
  seq: number;
  type: string;
  id: string;
  logged: string;
  live: number;
}

interface InsertParams {
  id: string;
  received_at: string;
  mail_from: string;
  rcpt_json: string;
  subject: string | null;
  from_json: string;
  from_text: string;
  to_text: string;
  search_text: string;
  size: number;
  spam_status: string;
  spam_score: number | null;
  attachment_count: number;
  message_id: string | null;
  event_json: string;
  raw: Buffer | null;
}

function formatAddresses(list: readonly AddressInfo[]): string {
  return list.map((a) => (a.name ? `${a.name} <${a.address}>` : a.address)).join(', ');
}

function insertParams(event: MailEvent, json: string, raw: Buffer | null): InsertParams {
  const fromText = formatAddresses(event.from);
  const toText = formatAddresses([...event.to, ...event.cc]);
  // Lower-cased in JavaScript, not with SQL lower() or LIKE, which fold ASCII only: a search
  // for "zürich" must find "ZÜRICH". instr() on this column is a plain substring test, so
  // there are no LIKE wildcards (% and _) to escape and none a user could inject.
  const searchText = [event.subject ?? '', event.envelope.mailFrom, fromText, toText, event.envelope.rcptTo.join(', ')]
    .join('\n')
    .toLowerCase();
  return {
    id: event.id,
    received_at: event.receivedAt,
    mail_from: event.envelope.mailFrom,
    rcpt_json: JSON.stringify(event.envelope.rcptTo),
    subject: event.subject,
    from_json: JSON.stringify(event.from.map((a) => ({ name: a.name, address: a.address }))),
    from_text: fromText,
    to_text: toText,
    search_text: searchText,
    size: event.size,
    spam_status: event.spam.status,
    spam_score: event.spam.score,
    attachment_count: event.attachments.length,
    message_id: event.messageId,
    event_json: json,
    raw,
  };
}

export function writerError(err: unknown): WriterError {
  const e = err as { message?: unknown; code?: unknown } | null;
  return {
    message: typeof e?.message === 'string' ? e.message : String(err),
    code: typeof e?.code === 'string' ? e.code : null,
  };
}

/** The Error a WriterError stands for, on the other side (message and code). */
export function errorFrom(e: WriterError): Error {
  const err = new Error(e.message) as NodeJS.ErrnoException;
  if (e.code !== null) err.code = e.code;
  return err;
}

export class StoreWriter {
  readonly #db: Database.Database;
  readonly #insertTx: (item: InsertItem) => CommitResult;
  readonly #insertBatchTx: (items: readonly InsertItem[]) => CommitResult[];
  readonly #deleteTx: (id: string, at: string) => boolean;
  readonly #trimTx: (before: string, keepFrom: number, maxRows: number) => TrimResult;

  /** Opens `file`, which sqlite-store.ts has created and migrated. */
  constructor(file: string) {
    const db = new Database(file, { fileMustExist: true });
    this.#db = db;
    try {
      // The file is in WAL mode already (a persistent setting); these two are per connection.
      // FULL: a commit returns once the WAL is fsynced (see sqlite-store.ts on durability).
      db.pragma('synchronous = FULL');
      // The sqlite3 shell or a backup can hold the lock briefly: wait for it, on this thread.
      db.pragma('busy_timeout = 5000');
    } catch (err) {
      db.close();
      throw err;
    }

    const selectReceived = db.prepare<[string], { seq: number }>("SELECT seq FROM events WHERE type = 'mail.received' AND id = ?");
    // max(): a clock stepped back must not make the entry look older than it was.
    const touchReceived = db.prepare<[string, string]>(
      "UPDATE events SET logged_at = max(coalesce(logged_at, at), ?) WHERE type = 'mail.received' AND id = ?",
    );
    const insertMessage = db.prepare<InsertParams>(
      `INSERT INTO messages (id, received_at, mail_from, rcpt_json, subject, from_json, from_text, to_text,
         search_text, size, spam_status, spam_score, attachment_count, message_id, event_json, raw)
       VALUES (@id, @received_at, @mail_from, @rcpt_json, @subject, @from_json, @from_text, @to_text,
         @search_text, @size, @spam_status, @spam_score, @attachment_count, @message_id, @event_json, @raw)`,
    );
    const insertRcpt = db.prepare<[string, number, string]>('INSERT OR IGNORE INTO message_rcpt (rcpt, seq, id) VALUES (?, ?, ?)');
    const insertLog = db.prepare<[string, string, string, string | null, string]>(
      'INSERT INTO events (type, id, at, json, logged_at) VALUES (?, ?, ?, ?, ?)',
    );
    const selectRcpts = db.prepare<[string], { rcpt_json: string }>('SELECT rcpt_json FROM messages WHERE id = ?');
    const deleteMessage = db.prepare<[string]>('DELETE FROM messages WHERE id = ?');
    const deleteRcpts = db.prepare<[string]>('DELETE FROM message_rcpt WHERE id = ?');

    const insertOne = ({ json, raw }: InsertItem): CommitResult => {
      const event = JSON.parse(json) as MailEvent;
      // Checked inside the write transaction, so two commits of one id cannot both insert,
      // whether they are in one batch (the first insert is visible to the second) or not.
      if (selectReceived.get(event.id)) {
        // A second commit comes from spool recovery: its record was on disk until now, so the
        // trim must keep this entry (what makes the next such commit a no-op) a while longer.
        touchReceived.run(new Date().toISOString(), event.id);
        return 'duplicate';
      }
      // A Buffer: better-sqlite3 binds a blob from a Buffer only (a Uint8Array arrives here).
      const bytes = raw === null ? null : Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength);
      const seq = Number(insertMessage.run(insertParams(event, json, bytes)).lastInsertRowid);
      for (const rcpt of event.envelope.rcptTo) insertRcpt.run(rcpt.toLowerCase(), seq, event.id);
      insertLog.run('mail.received', event.id, event.receivedAt, null, new Date().toISOString());
      return 'inserted';
    };
    const insertTx = db.transaction(insertOne);
    this.#insertTx = (item) => insertTx.immediate(item);
    const insertBatchTx = db.transaction((items: readonly InsertItem[]) => items.map(insertOne));
    this.#insertBatchTx = (items) => insertBatchTx.immediate(items);

    const deleteTx = db.transaction((id: string, at: string): boolean => {
      const rcpts = selectRcpts.get(id);
      if (!rcpts || deleteMessage.run(id).changes === 0) return false;
      deleteRcpts.run(id);
      const event: MailDeletedEvent = { type: 'mail.deleted', version: 1, id, at };
      // The log entry also keeps the deleted message's envelope recipients (rcptTo), so a
      // webhook filtered on recipients can tell whether the deletion concerns it, however long
      // ago the message came. They are not part of the public event: eventsAfter() leaves them out.
      const rcptTo = JSON.parse(rcpts.rcpt_json) as string[];
      insertLog.run(event.type, id, at, JSON.stringify({ ...event, rcptTo }), at);
      return true;
    });
    this.#deleteTx = (id, at) => deleteTx.immediate(id, at);

    // The trim walks the log from its horizon in seq order, a bounded page at a time, and stops
    // at the first entry logged at or after `before` (store/event-log-trim.ts has the rules).
    const selectHorizon = db.prepare<[], { seq: number }>('SELECT seq FROM log_horizon WHERE id = 1');
    const selectFromHorizon = db.prepare<{ after: number; upTo: number; limit: number }, TrimRow>(
      `SELECT e.seq, e.type, e.id, coalesce(e.logged_at, e.at) AS logged,
              (e.type = 'mail.received' AND EXISTS (SELECT 1 FROM messages m WHERE m.id = e.id)) AS live
         FROM events e
        WHERE e.seq > @after AND e.seq <= @upTo
        ORDER BY e.seq LIMIT @limit`,
    );
    const deleteEntry = db.prepare<[number]>('DELETE FROM events WHERE seq = ?');
    // A deletion's own message entry, wherever it is (behind the horizon, typically: retention
    // deletes old mail), unless it was confirmed by a commit since `before`.
    const deleteReceivedOf = db.prepare<{ id: string; before: string }>(
      `DELETE FROM events WHERE type = 'mail.received' AND id = @id AND coalesce(logged_at, at) < @before
          AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = @id)`,
    );
    const setHorizon = db.prepare<[number]>('UPDATE log_horizon SET seq = ? WHERE id = 1');
    const trimTx = db.transaction((before: string, keepFrom: number, maxRows: number): TrimResult => {
      const horizon = selectHorizon.get()?.seq ?? 0;
      const rows = selectFromHorizon.all({ after: horizon, upTo: Math.min(keepFrom, Number.MAX_SAFE_INTEGER), limit: maxRows });
      let reached = horizon;
      let removed = 0;
      let more = rows.length === maxRows;
      for (const row of rows) {
        if (row.logged >= before) {
          more = false;
          break;
        }
        reached = row.seq;
        // A live message's entry stays: since=<id> resolves it, and it makes a second commit a no-op.
        if (row.live) continue;
        removed += deleteEntry.run(row.seq).changes;
        if (row.type === 'mail.deleted') removed += deleteReceivedOf.run({ id: row.id, before }).changes;
      }
      if (reached > horizon) setHorizon.run(reached);
      return { removed, more };
    });
    this.#trimTx = (before, keepFrom, maxRows) => trimTx.immediate(before, keepFrom, maxRows);
  }

  /**
   * One transaction for the whole batch (one WAL fsync). If it fails, it rolled back whole, and
   * one bad event must not fail the others with it: each is then tried on its own, so every
   * caller learns its own outcome.
   */
  insertBatch(items: readonly InsertItem[]): InsertBatchResult {
    try {
      return { outcomes: this.#insertBatchTx(items).map((value) => ({ ok: true, value })), batchError: null };
    } catch (err) {
      if (items.length === 1) return { outcomes: [{ ok: false, error: writerError(err) }], batchError: null };
      const outcomes = items.map((item): InsertOutcome => {
        try {
          return { ok: true, value: this.#insertTx(item) };
        } catch (error) {
          return { ok: false, error: writerError(error) };
        }
      });
      return { outcomes, batchError: writerError(err) };
    }
  }

  /** Removes a message's rows and logs its mail.deleted; false when there was none. */
  delete(id: string, at: string): boolean {
    return this.#deleteTx(id, at);
  }

  /** One step of the event-log trim (EventLogTrim.trimEventLog has the contract). */
  trim(before: string, keepFrom: number, maxRows: number): TrimResult {
    return this.#trimTx(before, keepFrom, maxRows);
  }

  close(): void {
    if (this.#db.open) this.#db.close();
  }
}
