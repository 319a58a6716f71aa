/**
 * The SQLite schema and its migrations. `PRAGMA user_version` holds the schema version; each
 * migration runs in one transaction, so a crash mid-migration leaves the previous version.
 */
import type Database from 'better-sqlite3';

const MIGRATIONS: readonly string[] = [
  // 1: messages, the recipient index and the event log.
  `
  -- seq is the rowid, so it is the INTEGER PRIMARY KEY (SQLite allows AUTOINCREMENT only
  -- there); id is unique beside it. AUTOINCREMENT, not plain rowid: a seq is never reused,
  -- even after the newest row is deleted, so a list cursor or a replay position handed out
  -- earlier can never come to mean a different message.
  CREATE TABLE messages (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT    NOT NULL UNIQUE,
    received_at      TEXT    NOT NULL,
    mail_from        TEXT    NOT NULL,
    rcpt_json        TEXT    NOT NULL,  -- envelope.rcptTo as given, for summaries
    subject          TEXT,
    from_json        TEXT    NOT NULL,  -- header From as [{name, address}], for summaries
    from_text        TEXT    NOT NULL,  -- "Name <addr>, ..." of header From
    to_text          TEXT    NOT NULL,  -- "Name <addr>, ..." of header To and Cc
    search_text      TEXT    NOT NULL,  -- lower-cased subject, from, to and envelope, for q
    size             INTEGER NOT NULL,
    spam_status      TEXT    NOT NULL,
    spam_score       REAL,
    attachment_count INTEGER NOT NULL,
    message_id       TEXT,
    event_json       TEXT    NOT NULL
  );

  -- Keyed by (rcpt, seq) so "newest first for one recipient" is a walk down one index range.
  CREATE TABLE message_rcpt (
    rcpt TEXT    NOT NULL,  -- lower-cased envelope recipient
    seq  INTEGER NOT NULL,
    id   TEXT    NOT NULL,
    PRIMARY KEY (rcpt, seq)
  ) WITHOUT ROWID;
  CREATE INDEX message_rcpt_id ON message_rcpt (id);

  -- Append-only, in commit order. json is NULL for mail.received (the event is
  -- messages.event_json; no need to store a message of several MiB twice).
  -- Trimmed of what no reader needs any more: see migration 3 and store/event-log-trim.ts.
  CREATE TABLE events (
    seq  INTEGER PRIMARY KEY AUTOINCREMENT,
    type TEXT    NOT NULL,
    id   TEXT    NOT NULL,
    at   TEXT    NOT NULL,
    json TEXT
  );
  -- One mail.received per id, ever: this is what makes commit() idempotent, even for a
  -- message that was deleted before spool recovery committed it again.
  CREATE UNIQUE INDEX events_received ON events (id) WHERE type = 'mail.received';
  `,
  // 2: the raw bytes of a message of up to 64 KiB (the spool's INLINE_MAX), in its row: made
  // durable by the WAL fsync its row needs anyway, with no file, link or directory sync of its
  // own. NULL for a larger message (and for every message stored before): its bytes are
  // messages/<id>.eml. Last column, so the summaries and the event never read it.
  `
  ALTER TABLE messages ADD COLUMN raw BLOB;
  `,
  // 3: for the event-log trim (store/event-log-trim.ts). logged_at: when the entry was written,
  // or last confirmed by a duplicate commit (at is the event's own time: a recovered message's
  // receivedAt can be days older than its entry); NULL before this version. log_horizon: how
  // far the log has been trimmed; entries up to this seq may be gone, so a feed client
  // resuming from before it must reload instead.
  `
  ALTER TABLE events ADD COLUMN logged_at TEXT;
  CREATE TABLE log_horizon (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL
  );
  INSERT INTO log_horizon (id, seq) VALUES (1, 0);
  `,
  // 4: the text `q` searches, in a narrow table of its own. A search finds no index to use
  // (a substring anywhere), so it reads every row until the page is full; in messages that is
  // every message's whole row (its event, often its raw bytes), on the main thread: with 100k
  // messages a search that matches nothing took 54-440 ms, holding SMTP and HTTP meanwhile.
  // Here ~150 bytes a row: 10 ms. Triggers keep it in step with messages, in the same
  // transaction as every insert and delete.
  `
  CREATE TABLE message_search (
    seq  INTEGER PRIMARY KEY,  -- messages.seq
    text TEXT    NOT NULL      -- messages.search_text
  );
  INSERT INTO message_search (seq, text) SELECT seq, search_text FROM messages;
  CREATE TRIGGER message_search_insert AFTER INSERT ON messages BEGIN
    INSERT INTO message_search (seq, text) VALUES (new.seq, new.search_text);
  END;
  CREATE TRIGGER message_search_delete AFTER DELETE ON messages BEGIN
    DELETE FROM message_search WHERE seq = old.seq;
  END;
  `,
];

export const SCHEMA_VERSION = MIGRATIONS.length;

export function migrate(db: Database.Database): number {
  const current = db.pragma('user_version', { simple: true }) as number;
  if (current > SCHEMA_VERSION) {
    throw new Error(`database schema version ${current} is newer than this mailwire (${SCHEMA_VERSION}); refusing to open it`);
  }
  for (let v = current; v < SCHEMA_VERSION; v++) {
    const sql = MIGRATIONS[v];
    if (sql === undefined) throw new Error(`missing migration ${v + 1}`);
    db.transaction(() => {
      db.exec(sql);
      db.pragma(`user_version = ${v + 1}`);
    }).immediate();
  }
  return current;
}
