/**
 * The embedded MessageStore: SQLite (better-sqlite3) for events and the index, plain files for
 * raw messages and attachments. With writer.ts, the only modules that import better-sqlite3.
 * This module's connection creates and migrates the database, then only reads: every write
 * runs on the writer thread (writer.ts says why).
 *
 *   <dataDir>/mailwire.db                          events, summaries, recipient index, event log,
 *                                                  and the raw bytes of a message of up to 64 KiB
 *   <dataDir>/messages/<id>.eml                    the raw bytes of a larger message (a hard link to the spool file)
 *   <dataDir>/messages/<id>/attachments/<index>    written by the parser before commit
 *
 * The raw file sits directly in messages/, not in a directory of its own: a message without
 * attachments then adds one entry to one shared directory, and the fsync of that directory
 * is shared by every message of a commit batch (see GroupCommit). Stores written before this
 * layout kept the raw file at messages/<id>/message.eml; raw() still finds those.
 *
 * A small message's bytes go into its row: the WAL fsync of its batch covers them, so it costs
 * no file create, link or directory sync (each of which waits for the file system's journal).
 *
 * Every path is built from an id that passed isMessageId() first (26 Crockford base32
 * characters, so no "/", "." or NUL can reach the filesystem), never from a raw request string.
 */
import Database from 'better-sqlite3';
import { accessSync, constants as fsConstants, existsSync, mkdirSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { isMessageId } from '../events/id.js';
import type { AttachmentMeta, MailDeletedEvent, MailEvent, SpamStatus } from '../events/types.js';
import { silentLogger, type Logger } from '../log/logger.js';
import { DirectorySync } from '../util/fs.js';
import type { RawSource } from '../util/raw-source.js';
import { fsyncIfExists, linkOrCopy } from './files.js';
import { GroupCommit, type ItemOutcome } from '../util/group-commit.js';
import { InFlight } from '../util/in-flight.js';
import { migrate, SCHEMA_VERSION } from './schema.js';
import { errorFrom, type InsertBatchResult, type InsertItem } from './writer.js';
import { StoreWriterThread } from './writer-thread.js';
import {
  DEFAULT_LIST_LIMIT,
  MAX_LIST_LIMIT,
  StoreQueryError,
  type CommitResult,
  type EventLog,
  type EventLogTrim,
  type TrimResult,
  type ListQuery,
  type LogEntryHead,
  type LoggedEvent,
  type MessagePage,
  type MessageStore,
  type MessageSummary,
  type RetentionView,
} from './types.js';

export type SqliteMessageStore = MessageStore & EventLog & EventLogTrim & RetentionView;

/**
 * Longest search string. q is a substring scan over every row's search text; a longer needle
 * finds nothing a 256-character one would not, and bounds the work per row.
 */
const MAX_Q_LENGTH = 256;
/** RFC 5321 4.5.3.1.3: a path is at most 256 octets, so no real recipient is longer. */
const MAX_RCPT_LENGTH = 256;
/**
 * Cursors are the `seq` of the last item on the page, in decimal. Clients must treat them as
 * opaque. At most 16 digits keeps them within Number.MAX_SAFE_INTEGER's range check below.
 */
const CURSOR_PATTERN = /^[1-9][0-9]{0,15}$/;
/**
 * Group commit (see GroupCommit). A batch's transaction runs on the writer thread (writer.ts).
 * Under concurrent load a batch waits up to 20 ms for more commits: the WAL fsync is then
 * shared by ~10 messages instead of ~3 (measured with `npm run bench`). The wait comes after
 * the client's 250, so clients never see it; a message shows up in the API that much later.
 */
const COMMIT_MAX_BATCH = 128;
const COMMIT_LINGER_MS = 20;
/**
 * Linger only after a batch of 4 or more: at a moderate rate (50 msg/s over a few connections)
 * two commits meet now and then, and lingering after those added 20 ms to the time a message
 * takes to reach the feed (bench/ws-feed.mjs p99), for no throughput gain at that rate.
 */
const COMMIT_LINGER_FROM = 4;

interface SummaryRow {
  seq: number;
  id: string;
  received_at: string;
  mail_from: string;
  rcpt_json: string;
  subject: string | null;
  from_json: string;
  size: number;
  spam_status: SpamStatus;
  spam_score: number | null;
  attachment_count: number;
  message_id: string | null;
}

const SUMMARY_COLUMNS =
  'm.seq, m.id, m.received_at, m.mail_from, m.rcpt_json, m.subject, m.from_json, m.size, ' +
  'm.spam_status, m.spam_score, m.attachment_count, m.message_id';

/** What a commit batch holds per message: the event, and the raw bytes when they go into the row. */
interface CommitItem {
  event: MailEvent;
  raw: Buffer | null;
}

interface LogRow {
  seq: number;
  type: string;
  json: string | null;
  event_json: string | null;
}

interface LogHeadRow {
  seq: number;
  type: LogEntryHead['type'];
  id: string;
  at: string;
  rcpt_json: string | null;
}

function toSummary(row: SummaryRow): MessageSummary {
  return {
    id: row.id,
    receivedAt: row.received_at,
    mailFrom: row.mail_from,
    rcptTo: JSON.parse(row.rcpt_json) as string[],
    from: JSON.parse(row.from_json) as { name: string; address: string }[],
    subject: row.subject,
    size: row.size,
    spam: { status: row.spam_status, score: row.spam_score },
    attachments: row.attachment_count,
    messageId: row.message_id,
  };
}

function parseCursor(before: string): number {
  const seq = CURSOR_PATTERN.test(before) ? Number(before) : NaN;
  if (!Number.isSafeInteger(seq)) throw new StoreQueryError('before', 'before is not a cursor this server handed out');
  return seq;
}

class SqliteStore implements SqliteMessageStore {
  readonly #db: Database.Database;
  readonly #messagesDir: string;
  readonly #messagesDirSync: DirectorySync;
  readonly #log: Logger;
  /** Every write goes through it (writer.ts): this connection only reads. */
  readonly #writer: StoreWriterThread;
  /** Commits in progress: close() lets them finish. */
  readonly #commits = new InFlight();
  #closing: Promise<void> | null = null;
  readonly #listStatements = new Map<string, Database.Statement<Record<string, unknown>, SummaryRow>>();

  readonly #selectEvent: Database.Statement<[string], { event_json: string }>;
  readonly #selectAttachments: Database.Statement<[string], { attachments: string | null }>;
  readonly #selectLive: Database.Statement<[string], { seq: number }>;
  readonly #selectRaw: Database.Statement<[string], { raw: Buffer | null }>;
  readonly #selectReceived: Database.Statement<[string], { seq: number }>;
  readonly #selectDeletedLog: Database.Statement<[string], { seq: number }>;
  readonly #selectLogAfter: Database.Statement<[number, number], LogRow>;
  readonly #selectLogHeadsAfter: Database.Statement<[number, number], LogHeadRow>;
  readonly #selectLastSeq: Database.Statement<[], { seq: number }>;
  readonly #selectHorizon: Database.Statement<[], { seq: number }>;
  readonly #ping: Database.Statement<[], { ok: number }>;
  readonly #count: Database.Statement<[], { n: number }>;
  readonly #selectOldest: Database.Statement<[number], { id: string; received_at: string }>;
  /** Commits arriving together share one directory fsync and one SQLite transaction (one WAL fsync). */
  readonly #batches = new GroupCommit<CommitItem, CommitResult>((items) => this.#commitBatch(items), {
    maxBatch: COMMIT_MAX_BATCH,
    lingerMs: COMMIT_LINGER_MS,
    lingerFrom: COMMIT_LINGER_FROM,
  });

  constructor(dataDir: string, logger: Logger) {
    this.#log = logger.child({ mod: 'store' });
    this.#messagesDir = join(dataDir, 'messages');
    mkdirSync(this.#messagesDir, { recursive: true });
    this.#messagesDirSync = new DirectorySync(this.#messagesDir);

    const file = join(dataDir, 'mailwire.db');
    const db = new Database(file);
    this.#db = db;
    try {
      // WAL: readers (the HTTP API) never block the writer (commits from SMTP) and a commit
      // is one sequential append to the -wal file.
      db.pragma('journal_mode = WAL');
      // Durability. In WAL mode synchronous=NORMAL already survives a killed *process*: a
      // committed transaction is in the -wal file (the OS page cache) when commit returns.
      // It does not survive a power cut or kernel crash: the last transactions can roll back.
      // The pipeline releases the spool entry as soon as commit() returns, so with NORMAL a
      // power cut right after that would lose a message already answered 250, in both
      // places at once. FULL fsyncs the WAL on every commit, which closes that window; commits
      // are grouped (GroupCommit), so the price is one fsync per batch, not per message.
      // (Here for the migrations: the commits run on the writer's connection, set the same way.)
      db.pragma('synchronous = FULL');
      // A second connection (a backup, the sqlite3 shell) can hold the lock briefly; wait for
      // it instead of failing a commit. 5 s is far below the SMTP DATA reply deadline.
      db.pragma('busy_timeout = 5000');
      const from = migrate(db);
      if (from !== SCHEMA_VERSION) this.#log.info({ from, to: SCHEMA_VERSION }, 'store schema migrated');
    } catch (err) {
      db.close();
      throw err;
    }

    this.#selectEvent = db.prepare('SELECT event_json FROM messages WHERE id = ?');
    this.#selectAttachments = db.prepare(
      "SELECT json_extract(event_json, '$.attachments') AS attachments FROM messages WHERE id = ?",
    );
    this.#selectLive = db.prepare('SELECT seq FROM messages WHERE id = ?');
    this.#selectRaw = db.prepare('SELECT raw FROM messages WHERE id = ?');
    this.#selectReceived = db.prepare("SELECT seq FROM events WHERE type = 'mail.received' AND id = ?");
    // Only on the rare path of a delete whose answer was lost (no index on id for mail.deleted).
    this.#selectDeletedLog = db.prepare("SELECT seq FROM events WHERE type = 'mail.deleted' AND id = ? LIMIT 1");
    // A received entry whose message is gone is filtered here, in SQL, so a page of `limit`
    // rows is never cut short by deleted messages (the caller pages until it gets fewer).
    this.#selectLogAfter = db.prepare(
      `SELECT e.seq, e.type, e.json, m.event_json FROM events e
         LEFT JOIN messages m ON e.type = 'mail.received' AND m.id = e.id
       WHERE e.seq > ? AND (e.type <> 'mail.received' OR m.id IS NOT NULL)
       ORDER BY e.seq LIMIT ?`,
    );
    // The same entries, without the events: the recipients come from messages.rcpt_json (a
    // column before event_json, so SQLite never reads the event's overflow pages) or from a
    // deletion's own small log entry.
    this.#selectLogHeadsAfter = db.prepare(
      `SELECT e.seq, e.type, e.id, e.at,
              CASE WHEN e.type = 'mail.received' THEN m.rcpt_json ELSE json_extract(e.json, '$.rcptTo') END AS rcpt_json
         FROM events e
         LEFT JOIN messages m ON e.type = 'mail.received' AND m.id = e.id
       WHERE e.seq > ? AND (e.type <> 'mail.received' OR m.id IS NOT NULL)
       ORDER BY e.seq LIMIT ?`,
    );
    // AUTOINCREMENT's own record of the highest seq ever used: trimming the newest entries
    // (all of them deleted messages) must not make the log look shorter to a resuming client.
    this.#selectLastSeq = db.prepare("SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0) AS seq");
    this.#selectHorizon = db.prepare('SELECT seq FROM log_horizon WHERE id = 1');
    this.#ping = db.prepare('SELECT 1 AS ok');
    this.#count = db.prepare('SELECT count(*) AS n FROM messages');
    // By seq: the primary key, so the walk from the oldest end reads only the rows it returns.
    this.#selectOldest = db.prepare('SELECT id, received_at FROM messages ORDER BY seq LIMIT ?');

    // Opened once this connection has migrated the schema: the writer expects it current.
    this.#writer = new StoreWriterThread(file, this.#log);
    this.#log.debug({ file }, 'store open');
  }

  #messageDir(id: string): string {
    if (!isMessageId(id)) throw new Error(`not a message id: ${JSON.stringify(id).slice(0, 64)}`);
    return join(this.#messagesDir, id);
  }

  /** Where commit() puts the raw message (see the layout at the top). */
  #rawFile(id: string): string {
    if (!isMessageId(id)) throw new Error(`not a message id: ${JSON.stringify(id).slice(0, 64)}`);
    return join(this.#messagesDir, `${id}.eml`);
  }

  attachmentsDir(id: string): string {
    return join(this.#messageDir(id), 'attachments');
  }

  async discardFiles(id: string): Promise<void> {
    await this.#removeFiles(id);
  }

  commit(event: MailEvent, raw: RawSource): Promise<CommitResult> {
    if (this.#closing) return Promise.reject(new Error('the store is closed'));
    return this.#commits.track(this.#commit(event, raw));
  }

  async #commit(event: MailEvent, raw: RawSource): Promise<CommitResult> {
    if (event.type !== 'mail.received') throw new Error(`commit: not a mail.received event (${String(event.type)})`);
    const rawFile = this.#rawFile(event.id);
    // A message already stored (spool recovery running it again) is found out by the writer,
    // inside its transaction; asking here first would cost every commit a query for the sake
    // of a rare one.
    // Files first, each made durable, then the row: once the row is visible (and the spool
    // entry is released), everything it points at is on disk. A crash between the two leaves
    // files without a row, which the spool's recovery run commits again. Bytes in memory go
    // into the row itself.
    const how = raw.path === undefined ? 'row' : await linkOrCopy(raw.path, rawFile);
    await this.#syncAttachments(event);
    // What is left is shared with other messages: the messages/ directory entry and the row.
    const result = await this.#batches.submit({ event, raw: raw.bytes ?? null });
    if (result === 'duplicate') await this.#dropIfNotLive(event.id);
    this.#log.debug({ id: event.id, raw: how, result }, 'commit');
    return result;
  }

  /**
   * Makes the attachment files the event refers to durable, with their directory and that
   * directory's entry in messages/<id>/. Files the event does not list are unreachable through
   * the API, so they need no fsync. (The parser does not fsync: this is the point from which
   * the store promises that a message survives a crash, attachments included.) A missing file
   * is not an error: the message is stored all the same, and that attachment answers 404;
   * refusing the commit would keep the message in the spool forever.
   */
  async #syncAttachments(event: MailEvent): Promise<void> {
    if (event.attachments.length === 0) return;
    const dir = this.attachmentsDir(event.id);
    await Promise.all(event.attachments.map((a) => fsyncIfExists(join(dir, String(a.index)))));
    await Promise.all([fsyncIfExists(dir), fsyncIfExists(this.#messageDir(event.id))]);
  }

  /**
   * One batch of commits: every raw file of the batch was linked (and its attachments synced)
   * before it was submitted, so one fsync of messages/ that starts now makes all their
   * directory entries durable, raw files and attachment directories alike (none needed when no
   * message has either); then one transaction inserts every row, with one WAL fsync.
   */
  async #commitBatch(items: readonly CommitItem[]): Promise<ItemOutcome<CommitResult>[]> {
    if (items.some((item) => item.raw === null || item.event.attachments.length > 0)) await this.#messagesDirSync.sync();
    const outcomes: ItemOutcome<CommitResult>[] = [];
    // An event that cannot be serialised fails alone, here; the writer gets the others.
    const insert: InsertItem[] = [];
    const positions: number[] = [];
    items.forEach(({ event, raw }, i) => {
      try {
        insert.push({ json: JSON.stringify(event), raw });
        positions.push(i);
      } catch (error) {
        outcomes[i] = { ok: false, error };
      }
    });
    if (insert.length === 0) return outcomes;
    const written = await this.#writer.call<InsertBatchResult>({ op: 'insert', items: insert });
    if (written.batchError) this.#log.warn({ err: written.batchError, count: insert.length }, 'batch commit failed; committed one by one');
    written.outcomes.forEach((o, k) => (outcomes[positions[k]!] = o.ok ? o : { ok: false, error: errorFrom(o.error) }));
    return outcomes;
  }

  /**
   * A duplicate commit of a message deleted in the meantime (deleted after commit, before the
   * spool entry was released, then the process died): the recovery run has just recreated its
   * files. The user deleted it, so remove them again rather than leave orphans.
   */
  async #dropIfNotLive(id: string): Promise<void> {
    if (this.#selectLive.get(id)) return;
    await this.#removeFiles(id);
  }

  /** Both layouts: messages/<id>.eml and messages/<id>/ (attachments, older raw files). */
  async #removeFiles(id: string): Promise<void> {
    await rm(this.#rawFile(id), { force: true });
    await rm(this.#messageDir(id), { recursive: true, force: true });
  }

  get(id: string): MailEvent | null {
    if (!isMessageId(id)) return null;
    const row = this.#selectEvent.get(id);
    return row ? (JSON.parse(row.event_json) as MailEvent) : null;
  }

  list(query: ListQuery): MessagePage {
    const limit = query.limit ?? DEFAULT_LIST_LIMIT;
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LIST_LIMIT) {
      throw new StoreQueryError('limit', `limit must be an integer from 1 to ${MAX_LIST_LIMIT}`);
    }
    const before = query.before !== undefined && query.before !== '' ? parseCursor(query.before) : undefined;
    const q = query.q !== undefined && query.q !== '' ? query.q.toLowerCase() : undefined;
    const rcpt = query.rcpt !== undefined && query.rcpt !== '' ? query.rcpt.toLowerCase() : undefined;
    if (q !== undefined && q.length > MAX_Q_LENGTH) throw new StoreQueryError('q', `q is longer than ${MAX_Q_LENGTH} characters`);
    if (rcpt !== undefined && rcpt.length > MAX_RCPT_LENGTH) {
      throw new StoreQueryError('rcpt', `rcpt is longer than ${MAX_RCPT_LENGTH} characters`);
    }

    // Bind exactly the parameters the statement names (better-sqlite3 rejects extras).
    const params: Record<string, unknown> = { limit: limit + 1 };
    if (before !== undefined) params['before'] = before;
    if (q !== undefined) params['q'] = q;
    if (rcpt !== undefined) params['rcpt'] = rcpt;
    const rows = this.#listStatement(before !== undefined, q !== undefined, rcpt !== undefined).all(params);

    const page = rows.slice(0, limit);
    const last = page[page.length - 1];
    return {
      items: page.map(toSummary),
      next: rows.length > limit && last ? String(last.seq) : null,
    };
  }

  /**
   * One prepared statement per combination of filters (eight at most), rather than one with
   * `(@x IS NULL OR ...)` guards that would keep SQLite from seeking the seq index.
   * Order is by seq, i.e. commit order, which is also the order of the live event feed: a
   * viewer that loads a page and then prepends live events never has to insert in the middle.
   */
  #listStatement(before: boolean, q: boolean, rcpt: boolean): Database.Statement<Record<string, unknown>, SummaryRow> {
    const key = `${Number(before)}${Number(q)}${Number(rcpt)}`;
    let stmt = this.#listStatements.get(key);
    if (stmt) return stmt;
    const where: string[] = [];
    let from = 'messages m';
    let seqCol = 'm.seq';
    if (rcpt) {
      from = 'message_rcpt r JOIN messages m ON m.seq = r.seq';
      seqCol = 'r.seq';
      where.push('r.rcpt = @rcpt');
      // The recipient's index range is walked first; only its messages are searched.
      if (q) where.push('instr(m.search_text, @q) > 0');
    } else if (q) {
      // Scanned newest first in the narrow search table (migration 4), not in messages.
      from = 'message_search s JOIN messages m ON m.seq = s.seq';
      seqCol = 's.seq';
      where.push('instr(s.text, @q) > 0');
    }
    if (before) where.push(`${seqCol} < @before`);
    const sql =
      `SELECT ${SUMMARY_COLUMNS} FROM ${from}` +
      (where.length > 0 ? ` WHERE ${where.join(' AND ')}` : '') +
      ` ORDER BY ${seqCol} DESC LIMIT @limit`;
    stmt = this.#db.prepare<Record<string, unknown>, SummaryRow>(sql);
    this.#listStatements.set(key, stmt);
    return stmt;
  }

  raw(id: string): RawSource | null {
    if (!isMessageId(id)) return null;
    const row = this.#selectRaw.get(id);
    if (!row) return null;
    if (row.raw !== null) return { bytes: row.raw };
    const file = this.#rawFile(id);
    // A message stored before the flat layout has its raw file in its own directory.
    const legacy = join(this.#messageDir(id), 'message.eml');
    return { path: existsSync(file) || !existsSync(legacy) ? file : legacy };
  }

  attachment(id: string, index: number): { meta: AttachmentMeta; path: string } | null {
    if (!isMessageId(id) || !Number.isSafeInteger(index) || index < 0) return null;
    const row = this.#selectAttachments.get(id);
    if (!row || row.attachments === null) return null;
    const meta = (JSON.parse(row.attachments) as AttachmentMeta[]).find((a) => a.index === index);
    if (!meta) return null;
    return { meta, path: join(this.attachmentsDir(id), String(index)) };
  }

  async delete(id: string): Promise<boolean> {
    if (!isMessageId(id)) return false;
    // Row first, files second: a crash in between leaves unreferenced files (harmless),
    // never a visible message whose raw file is gone.
    let deleted: boolean;
    try {
      deleted = await this.#writer.call<boolean>({ op: 'delete', id, at: new Date().toISOString() });
    } catch (err) {
      // The writer thread may have committed the delete and died before answering: then the
      // row is gone and its mail.deleted logged. Finished here (files, and the caller's
      // publish), or the files would stay forever and the feed and webhooks would not hear of
      // it until some later event woke them.
      if (this.#closing || !this.#deleteCommitted(id)) throw err;
      deleted = true;
    }
    if (!deleted) return false;
    try {
      await this.#removeFiles(id);
    } catch (err) {
      this.#log.warn({ id, err }, 'message deleted, but removing its files failed');
    }
    this.#log.debug({ id }, 'delete');
    return true;
  }

  /** The message is gone and its mail.deleted logged (false too when that cannot be read). */
  #deleteCommitted(id: string): boolean {
    try {
      return this.#selectLive.get(id) === undefined && this.#selectDeletedLog.get(id) !== undefined;
    } catch {
      return false;
    }
  }

  eventsAfter(since: { seq: number } | { id: string }, limit: number): LoggedEvent[] | null {
    if (!Number.isSafeInteger(limit) || limit < 1) throw new RangeError('eventsAfter: limit must be a positive integer');
    let after: number;
    if ('seq' in since) {
      if (!Number.isSafeInteger(since.seq) || since.seq < 0) throw new RangeError('eventsAfter: seq must be >= 0');
      after = since.seq;
    } else {
      const row = isMessageId(since.id) ? this.#selectReceived.get(since.id) : undefined;
      if (!row) return null;
      after = row.seq;
    }
    return this.#selectLogAfter.all(after, limit).map((row) => {
      const json = row.type === 'mail.received' ? row.event_json : row.json;
      if (json === null) throw new Error(`event log entry ${row.seq} has no event`);
      if (row.type === 'mail.received') return { seq: row.seq, event: JSON.parse(json) as MailEvent };
      // Only the public fields: the entry also holds the deleted message's recipients.
      const { id, at } = JSON.parse(json) as MailDeletedEvent;
      const event: MailDeletedEvent = { type: 'mail.deleted', version: 1, id, at };
      return { seq: row.seq, event };
    });
  }

  eventHeadsAfter(seq: number, limit: number): LogEntryHead[] {
    if (!Number.isSafeInteger(limit) || limit < 1) throw new RangeError('eventHeadsAfter: limit must be a positive integer');
    if (!Number.isSafeInteger(seq) || seq < 0) throw new RangeError('eventHeadsAfter: seq must be >= 0');
    return this.#selectLogHeadsAfter.all(seq, limit).map((row) => ({
      seq: row.seq,
      type: row.type,
      id: row.id,
      at: row.at,
      rcptTo: row.rcpt_json === null ? null : (JSON.parse(row.rcpt_json) as string[]),
    }));
  }

  lastEventSeq(): number {
    return this.#selectLastSeq.get()?.seq ?? 0;
  }

  logHorizon(): number {
    return this.#selectHorizon.get()?.seq ?? 0;
  }

  receivedSeq(id: string): number | null {
    return isMessageId(id) ? (this.#selectReceived.get(id)?.seq ?? null) : null;
  }

  async trimEventLog(before: string, keepFrom: number, maxRows: number): Promise<TrimResult> {
    if (!Number.isSafeInteger(maxRows) || maxRows < 1) throw new RangeError('trimEventLog: maxRows must be a positive integer');
    return this.#writer.call<TrimResult>({ op: 'trim', before, keepFrom, maxRows });
  }

  count(): number {
    return this.#count.get()!.n;
  }

  oldest(limit: number): { id: string; receivedAt: string }[] {
    if (!Number.isSafeInteger(limit) || limit < 1) throw new RangeError('oldest: limit must be a positive integer');
    return this.#selectOldest.all(limit).map((r) => ({ id: r.id, receivedAt: r.received_at }));
  }

  healthy(): boolean {
    try {
      if (this.#closing || this.#ping.get()?.ok !== 1 || !this.#writer.healthy) return false;
      accessSync(this.#messagesDir, fsConstants.W_OK);
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Refuses new writes, waits for those already asked for (commits still linking files or
   * waiting for their batch included), then closes both connections.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    try {
      await this.#commits.settled();
      await this.#writer.close();
    } finally {
      if (this.#db.open) this.#db.close();
      await this.#messagesDirSync.close();
    }
  }
}

export function openSqliteStore(dataDir: string, logger: Logger = silentLogger()): SqliteMessageStore {
  return new SqliteStore(dataDir, logger);
}
