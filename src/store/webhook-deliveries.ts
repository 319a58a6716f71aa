/**
 * Webhook deliveries and their attempts, in a SQLite file of their own (<dataDir>/webhooks.sqlite),
 * so the message store's schema and its write lock are not shared with a retry loop.
 *
 * A delivery is written before its first attempt, so a crash or a restart never loses one; each
 * webhook also has a cursor: the event-log seq up to which events were considered for it (see
 * src/webhooks/dispatcher.ts). Deliveries and cursors move in one transaction, so the two can
 * never disagree, even after a power cut rolls the last transactions back.
 *
 * A mail.received delivery does not copy the event (it can be several MiB): it refers to the
 * message in the store by id. Other events are small and kept inline (`payload`).
 */
import Database from 'better-sqlite3';
import { join } from 'node:path';
import { idFor } from '../events/id.js';
import type { Logger } from '../log/logger.js';

export type DeliveryStatus = 'pending' | 'delivered' | 'failed' | 'gone' | 'cancelled';
export const DELIVERY_STATUSES: readonly DeliveryStatus[] = ['pending', 'delivered', 'failed', 'gone', 'cancelled'];

export interface Delivery {
  seq: number;
  id: string;
  webhook: string;
  eventType: string;
  eventId: string;
  /** The frame to send, for events not kept in the message store; null for mail.received. */
  payload: string | null;
  status: DeliveryStatus;
  attemptCount: number;
  createdAt: number;
  nextAttemptAt: number | null;
  finishedAt: number | null;
  lastStatus: number | null;
  lastError: string | null;
}

export interface AttemptRecord {
  n: number;
  at: number;
  ms: number;
  /** The receiver's HTTP status; null when there was no response (refused, timeout, ...). */
  status: number | null;
  error: string | null;
  /** The start of the response body, for debugging a receiver. */
  response: string | null;
}

export interface NewDelivery {
  webhook: string;
  eventType: string;
  eventId: string;
  logSeq: number | null;
  payload: string | null;
}

/** One enqueue transaction's work (see WebhookDeliveryStore.enqueue). */
export interface EnqueueBatch {
  items: readonly NewDelivery[];
  /** New cursor positions, by webhook. */
  cursors: ReadonlyMap<string, number>;
  /** max_pending, by webhook. */
  caps: ReadonlyMap<string, number>;
  /** Ids of messages deleted: their pending mail.received deliveries are cancelled. */
  deleted: readonly string[];
  /** Deliveries with an attempt in flight: left to finish (cancelling cannot call them back). */
  inflight: ReadonlySet<number>;
}

export interface EnqueueResult {
  /** Pending deliveries failed for the queue cap, by webhook. */
  dropped: Map<string, number>;
  /** Pending deliveries cancelled because their message was deleted, by webhook. */
  cancelled: Map<string, number>;
}

/** lastError of a mail.received delivery whose message was deleted while it was pending. */
export const DELETED_REASON = 'message deleted before delivery';

export type AttemptResult = { status: 'pending'; nextAttemptAt: number } | { status: Exclude<DeliveryStatus, 'pending'> };

export interface DeliveryQuery {
  webhook?: string;
  status?: DeliveryStatus;
  eventType?: string;
  eventId?: string;
  limit: number;
  /** seq of the last delivery on the previous page. */
  before?: number;
}

/**
 * Attempts kept per delivery: the most recent ones. max_attempts may be up to 100, and the
 * last tries say why a delivery failed; the count itself is kept whole in attempt_count.
 */
export const MAX_STORED_ATTEMPTS = 25;

const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE deliveries (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT    NOT NULL UNIQUE,   -- X-Mailwire-Delivery, the same on every attempt
    webhook         TEXT    NOT NULL,
    event_type      TEXT    NOT NULL,
    event_id        TEXT    NOT NULL,
    log_seq         INTEGER,                   -- the store's event-log seq; NULL for mail.rejected
    payload         TEXT,                      -- NULL: mail.received, read from the message store
    status          TEXT    NOT NULL,
    attempt_count   INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,          -- ms since the epoch, like every time here
    next_attempt_at INTEGER,
    finished_at     INTEGER,
    last_status     INTEGER,
    last_error      TEXT
  );
  -- One delivery per webhook and logged event, whatever replays the log.
  CREATE UNIQUE INDEX deliveries_once ON deliveries (webhook, log_seq) WHERE log_seq IS NOT NULL;
  CREATE INDEX deliveries_due ON deliveries (webhook, next_attempt_at) WHERE status = 'pending';
  CREATE INDEX deliveries_by_webhook ON deliveries (webhook, status, seq);
  CREATE INDEX deliveries_by_event ON deliveries (event_id);
  CREATE INDEX deliveries_finished ON deliveries (finished_at) WHERE status <> 'pending';

  CREATE TABLE attempts (
    delivery_seq INTEGER NOT NULL,
    n            INTEGER NOT NULL,
    at           INTEGER NOT NULL,
    ms           INTEGER NOT NULL,
    status       INTEGER,
    error        TEXT,
    response     TEXT,
    PRIMARY KEY (delivery_seq, n)
  ) WITHOUT ROWID;

  CREATE TABLE cursors (
    webhook TEXT    PRIMARY KEY,
    seq     INTEGER NOT NULL
  ) WITHOUT ROWID;
  `,
];

interface DeliveryRow {
  seq: number;
  id: string;
  webhook: string;
  event_type: string;
  event_id: string;
  payload: string | null;
  status: DeliveryStatus;
  attempt_count: number;
  created_at: number;
  next_attempt_at: number | null;
  finished_at: number | null;
  last_status: number | null;
  last_error: string | null;
}

function toDelivery(r: DeliveryRow): Delivery {
  return {
    seq: r.seq,
    id: r.id,
    webhook: r.webhook,
    eventType: r.event_type,
    eventId: r.event_id,
    payload: r.payload,
    status: r.status,
    attemptCount: r.attempt_count,
    createdAt: r.created_at,
    nextAttemptAt: r.next_attempt_at,
    finishedAt: r.finished_at,
    lastStatus: r.last_status,
    lastError: r.last_error,
  };
}

export class WebhookDeliveryStore {
  readonly #db: Database.Database;
  readonly #stmts;
  readonly #enqueueTx: (batch: EnqueueBatch, now: number) => EnqueueResult;
  readonly #attemptTx: (seq: number, attempt: AttemptRecord, result: AttemptResult) => void;
  readonly #pruneTx: (olderThan: number, keep: number) => number;
  readonly #listStatements = new Map<string, Database.Statement<Record<string, unknown>, DeliveryRow>>();

  constructor(dataDir: string, logger: Logger) {
    const file = deliveryStorePath(dataDir);
    const db = new Database(file);
    this.#db = db;
    try {
      // WAL: the API reads while the dispatcher writes.
      db.pragma('journal_mode = WAL');
      // NORMAL, not FULL: an enqueue runs on the main thread right after a message is stored,
      // and must not add a second fsync there. A killed process loses nothing (the WAL is
      // written); a power cut may roll back the last enqueues, but their cursor rolls back with
      // them, and the start-up catch-up enqueues them again from the store's event log, which
      // is FULL. A delivery attempt recorded then lost is only sent again (at least once).
      db.pragma('synchronous = NORMAL');
      db.pragma('busy_timeout = 5000');
      const from = migrate(db);
      if (from !== MIGRATIONS.length) logger.info({ from, to: MIGRATIONS.length }, 'webhook store schema migrated');
    } catch (err) {
      db.close();
      throw err;
    }

    const s = {
      cursor: db.prepare<[string], { seq: number }>('SELECT seq FROM cursors WHERE webhook = ?'),
      setCursor: db.prepare<[string, number]>('INSERT INTO cursors (webhook, seq) VALUES (?, ?) ON CONFLICT (webhook) DO UPDATE SET seq = excluded.seq'),
      pendingCount: db.prepare<[string], { n: number }>("SELECT count(*) AS n FROM deliveries WHERE webhook = ? AND status = 'pending'"),
      oldestPending: db.prepare<[string, number], { seq: number }>("SELECT seq FROM deliveries WHERE webhook = ? AND status = 'pending' ORDER BY seq LIMIT ?"),
      insert: db.prepare<[string, string, string, string, number | null, string | null, number, number]>(
        `INSERT OR IGNORE INTO deliveries (id, webhook, event_type, event_id, log_seq, payload, status, created_at, next_attempt_at)
         VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?)`,
      ),
      finish: db.prepare<[string, number, string, number]>(
        "UPDATE deliveries SET status = ?, finished_at = ?, next_attempt_at = NULL, last_error = ? WHERE seq = ? AND status = 'pending'",
      ),
      due: db.prepare<[string, number, number], DeliveryRow>(
        "SELECT * FROM deliveries WHERE webhook = ? AND status = 'pending' AND next_attempt_at <= ? ORDER BY next_attempt_at, seq LIMIT ?",
      ),
      nextDue: db.prepare<[string], { at: number | null }>("SELECT min(next_attempt_at) AS at FROM deliveries WHERE webhook = ? AND status = 'pending'"),
      reschedule: db.prepare<[number, number]>("UPDATE deliveries SET next_attempt_at = ? WHERE seq = ? AND status = 'pending'"),
      insertAttempt: db.prepare<[number, number, number, number, number | null, string | null, string | null]>(
        'INSERT OR REPLACE INTO attempts (delivery_seq, n, at, ms, status, error, response) VALUES (?, ?, ?, ?, ?, ?, ?)',
      ),
      trimAttempts: db.prepare<[number, number]>('DELETE FROM attempts WHERE delivery_seq = ? AND n <= ?'),
      afterAttempt: db.prepare<[string, number | null, number | null, number, number | null, string | null, number]>(
        `UPDATE deliveries SET status = ?, next_attempt_at = ?, finished_at = ?, attempt_count = ?, last_status = ?, last_error = ?
         WHERE seq = ? AND status = 'pending'`,
      ),
      byId: db.prepare<[string], DeliveryRow>('SELECT * FROM deliveries WHERE id = ?'),
      attempts: db.prepare<[number], { n: number; at: number; ms: number; status: number | null; error: string | null; response: string | null }>(
        'SELECT n, at, ms, status, error, response FROM attempts WHERE delivery_seq = ? ORDER BY n',
      ),
      pendingReceived: db.prepare<[string], { seq: number; webhook: string }>(
        "SELECT seq, webhook FROM deliveries WHERE event_id = ? AND event_type = 'mail.received' AND status = 'pending'",
      ),
      counts: db.prepare<[], { webhook: string; status: DeliveryStatus; n: number }>('SELECT webhook, status, count(*) AS n FROM deliveries GROUP BY webhook, status'),
      webhooks: db.prepare<[], { webhook: string }>('SELECT DISTINCT webhook FROM deliveries'),
      cursorNames: db.prepare<[], { webhook: string }>('SELECT webhook FROM cursors'),
      dropCursor: db.prepare<[string]>('DELETE FROM cursors WHERE webhook = ?'),
      cancelPending: db.prepare<[number, string, string]>(
        "UPDATE deliveries SET status = 'cancelled', finished_at = ?, next_attempt_at = NULL, last_error = ? WHERE webhook = ? AND status = 'pending'",
      ),
      pruneAttemptsOld: db.prepare<[number]>(
        "DELETE FROM attempts WHERE delivery_seq IN (SELECT seq FROM deliveries WHERE status <> 'pending' AND finished_at < ?)",
      ),
      pruneOld: db.prepare<[number]>("DELETE FROM deliveries WHERE status <> 'pending' AND finished_at < ?"),
      keepFrom: db.prepare<[string, number], { seq: number }>(
        "SELECT seq FROM deliveries WHERE webhook = ? AND status <> 'pending' ORDER BY seq DESC LIMIT 1 OFFSET ?",
      ),
      pruneAttemptsExcess: db.prepare<[string, number]>(
        "DELETE FROM attempts WHERE delivery_seq IN (SELECT seq FROM deliveries WHERE webhook = ? AND status <> 'pending' AND seq <= ?)",
      ),
      pruneExcess: db.prepare<[string, number]>("DELETE FROM deliveries WHERE webhook = ? AND status <> 'pending' AND seq <= ?"),
    };
    this.#stmts = s;

    const enqueueTx = db.transaction((batch: EnqueueBatch, now: number): EnqueueResult => {
      const { items, cursors, caps } = batch;
      const pending = new Map<string, number>();
      const dropped = new Map<string, number>();
      const cancelled = new Map<string, number>();
      // First, so the cancelled no longer count against the cap below. Per message deleted, at
      // most one row per webhook (the index on event_id finds them).
      for (const eventId of batch.deleted) {
        for (const row of s.pendingReceived.all(eventId)) {
          if (batch.inflight.has(row.seq)) continue;
          s.finish.run('cancelled', now, DELETED_REASON, row.seq);
          cancelled.set(row.webhook, (cancelled.get(row.webhook) ?? 0) + 1);
        }
      }
      for (const item of items) {
        let count = pending.get(item.webhook) ?? s.pendingCount.get(item.webhook)?.n ?? 0;
        const cap = caps.get(item.webhook) ?? Infinity;
        // Oldest out: it is the closest to its max age anyway, and a receiver that comes back
        // after days wants the recent events. Not one with an attempt in flight: that attempt
        // may yet succeed, and its row would then say failed for a delivery that was made.
        while (count >= cap) {
          const oldest = s.oldestPending.all(item.webhook, batch.inflight.size + 1).find((row) => !batch.inflight.has(row.seq));
          if (!oldest) break;
          s.finish.run('failed', now, 'queue full: dropped for a newer event (max_pending)', oldest.seq);
          dropped.set(item.webhook, (dropped.get(item.webhook) ?? 0) + 1);
          count--;
        }
        const info = s.insert.run(deliveryId(item.webhook, item.eventType, item.eventId), item.webhook, item.eventType, item.eventId, item.logSeq, item.payload, now, now);
        pending.set(item.webhook, count + info.changes);
      }
      for (const [webhook, seq] of cursors) s.setCursor.run(webhook, seq);
      return { dropped, cancelled };
    });
    this.#enqueueTx = (batch, now) => enqueueTx.immediate(batch, now);

    this.#attemptTx = db.transaction((seq: number, a: AttemptRecord, result: AttemptResult) => {
      s.insertAttempt.run(seq, a.n, a.at, a.ms, a.status, a.error, a.response);
      if (a.n > MAX_STORED_ATTEMPTS) s.trimAttempts.run(seq, a.n - MAX_STORED_ATTEMPTS);
      const next = result.status === 'pending' ? result.nextAttemptAt : null;
      const finished = result.status === 'pending' ? null : a.at + a.ms;
      s.afterAttempt.run(result.status, next, finished, a.n, a.status, a.error, seq);
    });

    this.#pruneTx = db.transaction((olderThan: number, keep: number) => {
      s.pruneAttemptsOld.run(olderThan);
      let removed = s.pruneOld.run(olderThan).changes;
      for (const { webhook } of s.webhooks.all()) {
        const from = s.keepFrom.get(webhook, keep);
        if (!from) continue;
        s.pruneAttemptsExcess.run(webhook, from.seq);
        removed += s.pruneExcess.run(webhook, from.seq).changes;
      }
      return removed;
    });
  }

  /** The event-log seq up to which events were considered for this webhook; null if never. */
  cursor(webhook: string): number | null {
    return this.#stmts.cursor.get(webhook)?.seq ?? null;
  }

  setCursor(webhook: string, seq: number): void {
    this.#stmts.setCursor.run(webhook, seq);
  }

  /**
   * In one transaction: cancels the pending mail.received deliveries of deleted messages,
   * inserts deliveries (once per webhook and log seq) and moves cursors. Past a webhook's cap,
   * its oldest pending deliveries fail to make room.
   */
  enqueue(batch: EnqueueBatch, now: number): EnqueueResult {
    return this.#enqueueTx(batch, now);
  }

  /** Pending deliveries of a webhook whose time has come, oldest due first. */
  due(webhook: string, now: number, limit: number): Delivery[] {
    return this.#stmts.due.all(webhook, now, limit).map(toDelivery);
  }

  /** When the next pending delivery of this webhook is due; null if none is pending. */
  nextDue(webhook: string): number | null {
    return this.#stmts.nextDue.get(webhook)?.at ?? null;
  }

  /** Moves a pending delivery's next attempt (a lease while in flight, or back to now at stop). */
  reschedule(seq: number, at: number): void {
    this.#stmts.reschedule.run(at, seq);
  }

  /** Ends a pending delivery without an attempt (its message was deleted, ...). */
  finish(seq: number, status: Exclude<DeliveryStatus, 'pending'>, now: number, reason: string): void {
    this.#stmts.finish.run(status, now, reason, seq);
  }

  /** Records one attempt and what follows from it, together. */
  recordAttempt(seq: number, attempt: AttemptRecord, result: AttemptResult): void {
    this.#attemptTx(seq, attempt, result);
  }

  get(id: string): { delivery: Delivery; attempts: AttemptRecord[] } | null {
    const row = this.#stmts.byId.get(id);
    if (!row) return null;
    return { delivery: toDelivery(row), attempts: this.#stmts.attempts.all(row.seq) };
  }

  /** Newest first. */
  list(q: DeliveryQuery): Delivery[] {
    const where: string[] = [];
    const params: Record<string, unknown> = { limit: q.limit };
    const add = (sql: string, name: string, value: unknown): void => {
      where.push(sql);
      params[name] = value;
    };
    if (q.webhook !== undefined) add('webhook = @webhook', 'webhook', q.webhook);
    if (q.status !== undefined) add('status = @status', 'status', q.status);
    if (q.eventType !== undefined) add('event_type = @eventType', 'eventType', q.eventType);
    if (q.eventId !== undefined) add('event_id = @eventId', 'eventId', q.eventId);
    if (q.before !== undefined) add('seq < @before', 'before', q.before);
    const key = where.join(' AND ');
    let stmt = this.#listStatements.get(key);
    if (!stmt) {
      // At most 32 shapes (five optional filters), each prepared once.
      stmt = this.#db.prepare<Record<string, unknown>, DeliveryRow>(
        `SELECT * FROM deliveries${where.length ? ` WHERE ${key}` : ''} ORDER BY seq DESC LIMIT @limit`,
      );
      this.#listStatements.set(key, stmt);
    }
    return stmt.all(params).map(toDelivery);
  }

  /**
   * Forgets webhooks that are no longer configured: their pending deliveries are cancelled and
   * their cursors dropped (a webhook added again later starts afresh, it does not replay the log
   * since it was removed). Returns the number of deliveries cancelled.
   */
  forgetOthers(configured: ReadonlySet<string>, now: number): number {
    const s = this.#stmts;
    return this.#db.transaction(() => {
      let cancelled = 0;
      for (const { webhook } of s.cursorNames.all()) {
        if (configured.has(webhook)) continue;
        cancelled += s.cancelPending.run(now, 'webhook no longer configured', webhook).changes;
        s.dropCursor.run(webhook);
      }
      return cancelled;
    }).immediate();
  }

  /** Deliveries per webhook and status. */
  counts(): Map<string, Partial<Record<DeliveryStatus, number>>> {
    const out = new Map<string, Partial<Record<DeliveryStatus, number>>>();
    for (const row of this.#stmts.counts.all()) {
      const c = out.get(row.webhook) ?? {};
      c[row.status] = row.n;
      out.set(row.webhook, c);
    }
    return out;
  }

  /** Deletes finished deliveries older than `olderThan`, and all but the newest `keep` per webhook. */
  prune(olderThan: number, keep: number): number {
    return this.#pruneTx(olderThan, keep);
  }

  close(): void {
    if (this.#db.open) this.#db.close();
  }
}

function migrate(db: Database.Database): number {
  const current = db.pragma('user_version', { simple: true }) as number;
  if (current > MIGRATIONS.length) {
    throw new Error(`webhooks.sqlite schema version ${current} is newer than this mailwire (${MIGRATIONS.length}); refusing to open it`);
  }
  for (let v = current; v < MIGRATIONS.length; v++) {
    const sql = MIGRATIONS[v];
    if (sql === undefined) throw new Error(`missing webhook store migration ${v + 1}`);
    db.transaction(() => {
      db.exec(sql);
      db.pragma(`user_version = ${v + 1}`);
    }).immediate();
  }
  return current;
}

export function deliveryStorePath(dataDir: string): string {
  return join(dataDir, 'webhooks.sqlite');
}

export function openWebhookDeliveryStore(dataDir: string, logger: Logger): WebhookDeliveryStore {
  return new WebhookDeliveryStore(dataDir, logger);
}

/**
 * A delivery's id (X-Mailwire-Delivery), derived from the webhook and the event: an event
 * enqueued again gets the id the receiver may have seen already, and can be deduplicated. That
 * happens after a power cut: the delivery store runs with synchronous=NORMAL, so its last
 * enqueues can roll back with their cursor, and the start-up catch-up enqueues those events
 * again (a random id made them new deliveries).
 */
export function deliveryId(webhook: string, eventType: string, eventId: string): string {
  return idFor(`${webhook}\0${eventType}\0${eventId}`);
}
