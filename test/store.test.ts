import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { newMessageId } from '../src/events/id.js';
import type { MailEvent } from '../src/events/types.js';
import { openSqliteStore, type SqliteMessageStore } from '../src/store/sqlite-store.js';
import { StoreQueryError } from '../src/store/types.js';
import { makeAttachment, makeEvent } from './helpers/events.js';

let dir: string;
let dataDir: string;
let spoolDir: string;
let store: SqliteMessageStore;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'mailwire-store-'));
  dataDir = join(dir, 'data');
  spoolDir = join(dir, 'spool');
  mkdirSync(spoolDir);
  store = openSqliteStore(dataDir);
});

afterEach(async () => {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

/**
 * Write a spool file for the event the way the spool does (temp file, then rename, so an
 * existing name gets a new inode and a stored hard link is never written through) and commit it.
 */
async function commitWithRaw(event: MailEvent, raw = `Subject: ${event.subject ?? ''}\r\n\r\nbody of ${event.id}\r\n`) {
  const rawPath = join(spoolDir, event.id);
  writeFileSync(`${rawPath}.tmp`, raw);
  renameSync(`${rawPath}.tmp`, rawPath);
  const result = await store.commit(event, { path: rawPath });
  return { raw: Buffer.from(raw), rawPath, result };
}

describe('commit and get', () => {
  it('stores the event and returns it unchanged', async () => {
    const event = makeEvent({ subject: 'First', tags: ['a'] });
    const { result } = await commitWithRaw(event);
    expect(result).toBe('inserted');
    expect(store.get(event.id)).toEqual(event);
    expect(store.get(newMessageId())).toBeNull();
  });

  it('hard-links the spool file to messages/<id>.eml with the same bytes', async () => {
    const event = makeEvent();
    const { raw, rawPath } = await commitWithRaw(event, 'From: a@b\r\n\r\n\u00e9\x00binary\r\n');
    const stored = store.raw(event.id)?.path;
    expect(stored).toBe(join(dataDir, 'messages', `${event.id}.eml`));
    // No directory of its own for a message without attachments.
    expect(existsSync(join(dataDir, 'messages', event.id))).toBe(false);
    expect(readFileSync(stored!)).toEqual(raw);
    expect(statSync(stored!).ino).toBe(statSync(rawPath).ino);
    // Releasing the spool entry afterwards leaves the stored copy intact.
    rmSync(rawPath);
    expect(readFileSync(stored!)).toEqual(raw);
  });

  it('keeps the bytes of a message in memory in its row: no file, one WAL fsync for both', async () => {
    const event = makeEvent();
    const bytes = Buffer.from('From: a@b\r\n\r\n\u00e9\x00binary\r\n', 'latin1');
    expect(await store.commit(event, { bytes })).toBe('inserted');
    expect(store.raw(event.id)).toEqual({ bytes });
    expect(readdirSync(join(dataDir, 'messages'))).toEqual([]);
    // In the database file itself, byte for byte, as a BLOB.
    await store.close();
    const db = new Database(join(dataDir, 'mailwire.db'), { readonly: true });
    try {
      expect(db.prepare('SELECT raw FROM messages WHERE id = ?').get(event.id)).toEqual({ raw: bytes });
    } finally {
      db.close();
    }
    store = openSqliteStore(dataDir);
    expect(store.raw(event.id)).toEqual({ bytes });
    expect(await store.delete(event.id)).toBe(true);
    expect(store.raw(event.id)).toBeNull();
  });

  it('opens a store of schema version 1 (before raw bytes in rows): its messages keep their files', async () => {
    const event = makeEvent();
    await commitWithRaw(event, 'stored by an older version');
    await store.close();
    // What version 1 looked like: no raw column, no log horizon.
    const db = new Database(join(dataDir, 'mailwire.db'));
    db.exec('DROP TRIGGER message_search_insert; DROP TRIGGER message_search_delete; DROP TABLE message_search; ALTER TABLE messages DROP COLUMN raw; DROP TABLE log_horizon; ALTER TABLE events DROP COLUMN logged_at');
    db.pragma('user_version = 1');
    db.close();
    store = openSqliteStore(dataDir);
    expect(store.raw(event.id)).toEqual({ path: join(dataDir, 'messages', `${event.id}.eml`) });
    // Migration 3: nothing trimmed yet.
    expect(store.logHorizon()).toBe(0);
    expect(store.lastEventSeq()).toBe(1);
    const next = makeEvent();
    expect(await store.commit(next, { bytes: Buffer.from('new') })).toBe('inserted');
    expect(store.raw(next.id)).toEqual({ bytes: Buffer.from('new') });
  });

  it('migrates a store of schema version 3: the messages it holds are found by q, and a delete leaves no search row', async () => {
    const old = makeEvent({ subject: 'Kept from version three' });
    await commitWithRaw(old, 'stored by version 3');
    await store.close();
    const db = new Database(join(dataDir, 'mailwire.db'));
    db.exec('DROP TRIGGER message_search_insert; DROP TRIGGER message_search_delete; DROP TABLE message_search');
    db.pragma('user_version = 3');
    db.close();
    store = openSqliteStore(dataDir);
    const fresh = makeEvent({ subject: 'Stored by version four' });
    await commitWithRaw(fresh, 'new');
    expect(store.list({ limit: 10, q: 'version three' }).items.map((i) => i.id)).toEqual([old.id]);
    expect(store.list({ limit: 10, q: 'version four' }).items.map((i) => i.id)).toEqual([fresh.id]);
    expect(store.list({ limit: 10, q: 'VERSION' }).items.map((i) => i.id)).toEqual([fresh.id, old.id]);
    expect(await store.delete(old.id)).toBe(true);
    await store.close();
    const check = new Database(join(dataDir, 'mailwire.db'), { readonly: true });
    try {
      expect(check.prepare('SELECT count(*) AS n FROM message_search').get()).toEqual({ n: 1 });
    } finally {
      check.close();
    }
    store = openSqliteStore(dataDir);
  });

  it('keeps an existing raw file from an earlier, interrupted attempt', async () => {
    const event = makeEvent();
    writeFileSync(join(dataDir, 'messages', `${event.id}.eml`), 'earlier');
    const { result } = await commitWithRaw(event, 'later');
    expect(result).toBe('inserted');
    expect(readFileSync(store.raw(event.id)!.path!, 'utf8')).toBe('earlier');
  });

  it('finds the raw file of a message stored with the older messages/<id>/message.eml layout', async () => {
    const event = makeEvent();
    await commitWithRaw(event, 'old layout');
    // What an older version left: the raw file in the message's own directory.
    mkdirSync(join(dataDir, 'messages', event.id));
    renameSync(join(dataDir, 'messages', `${event.id}.eml`), join(dataDir, 'messages', event.id, 'message.eml'));
    expect(store.raw(event.id)?.path).toBe(join(dataDir, 'messages', event.id, 'message.eml'));
    expect(readFileSync(store.raw(event.id)!.path!, 'utf8')).toBe('old layout');
    expect(await store.delete(event.id)).toBe(true);
    expect(existsSync(join(dataDir, 'messages', event.id))).toBe(false);
  });

  it('is idempotent by id: a second commit is a duplicate and changes nothing', async () => {
    const event = makeEvent({ subject: 'Original' });
    expect((await commitWithRaw(event, 'original bytes')).result).toBe('inserted');
    const again = { ...event, subject: 'Changed' };
    expect((await commitWithRaw(again, 'other bytes')).result).toBe('duplicate');
    expect(store.get(event.id)?.subject).toBe('Original');
    expect(readFileSync(store.raw(event.id)!.path!, 'utf8')).toBe('original bytes');
    const page = store.list({});
    expect(page.items.map((i) => i.id)).toEqual([event.id]);
    expect(store.eventsAfter({ seq: 0 }, 10)?.map((e) => e.event.type)).toEqual(['mail.received']);
  });

  it('concurrent commits of one id insert it once', async () => {
    const event = makeEvent();
    const rawPath = join(spoolDir, event.id);
    writeFileSync(rawPath, 'x');
    const results = await Promise.all([store.commit(event, { path: rawPath }), store.commit(event, { path: rawPath })]);
    expect(results.sort()).toEqual(['duplicate', 'inserted']);
    expect(store.list({}).items).toHaveLength(1);
  });

  it('rejects an event with an invalid id before touching the filesystem', async () => {
    const event = makeEvent({ id: '../../escape' });
    const rawPath = join(spoolDir, 'raw');
    writeFileSync(rawPath, 'x');
    await expect(store.commit(event, { path: rawPath })).rejects.toThrow('not a message id');
    expect(readdirSync(join(dataDir, 'messages'))).toEqual([]);
    expect(existsSync(join(dir, 'escape'))).toBe(false);
  });
});

describe('list', () => {
  it('returns summaries with exact fields', async () => {
    const event = makeEvent({
      subject: 'Summary',
      envelope: { mailFrom: 'sender@example.org', rcptTo: ['One@Example.net', 'two@example.net'] },
      from: [{ name: 'Sender', address: 'sender@example.org' }],
      size: 4321,
      messageId: '<m1@example.org>',
      spam: { status: 'spam', score: 7.5, threshold: 5, rules: [] },
      attachments: [makeAttachment({ index: 0 }), makeAttachment({ index: 1 })],
    });
    await commitWithRaw(event);
    expect(store.list({})).toEqual({
      items: [
        {
          id: event.id,
          receivedAt: '2026-11-22T10:00:00.000Z',
          mailFrom: 'sender@example.org',
          rcptTo: ['One@Example.net', 'two@example.net'],
          from: [{ name: 'Sender', address: 'sender@example.org' }],
          subject: 'Summary',
          size: 4321,
          spam: { status: 'spam', score: 7.5 },
          attachments: 2,
          messageId: '<m1@example.org>',
        },
      ],
      next: null,
    });
  });

  it('pages through 120 messages newest first, each exactly once', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 120; i++) {
      const event = makeEvent({ subject: `Message ${i}` });
      ids.push(event.id);
      await commitWithRaw(event);
    }
    const seen: string[] = [];
    const sizes: number[] = [];
    let before: string | undefined;
    for (;;) {
      const page = store.list(before === undefined ? { limit: 50 } : { limit: 50, before });
      sizes.push(page.items.length);
      seen.push(...page.items.map((i) => i.id));
      if (page.next === null) break;
      expect(typeof page.next).toBe('string');
      before = page.next;
    }
    expect(sizes).toEqual([50, 50, 20]);
    expect(seen).toEqual([...ids].reverse());
    expect(new Set(seen).size).toBe(120);
    // ULIDs sort by time, so newest first is also descending id order.
    expect(seen).toEqual([...seen].sort().reverse());
  });

  it('defaults to 50 items and ends with next null when the last page is exactly full', async () => {
    for (let i = 0; i < 55; i++) await commitWithRaw(makeEvent());
    const first = store.list({});
    expect(first.items).toHaveLength(50);
    expect(first.next).not.toBeNull();
    const all = store.list({ limit: 55 });
    expect(all.items).toHaveLength(55);
    expect(all.next).toBeNull();
  });

  it('accepts a cursor whose message has been deleted since', async () => {
    const events = [makeEvent(), makeEvent(), makeEvent()];
    for (const e of events) await commitWithRaw(e);
    const page = store.list({ limit: 1 });
    expect(page.items.map((i) => i.id)).toEqual([events[2]!.id]);
    await store.delete(events[2]!.id);
    expect(store.list({ before: page.next! }).items.map((i) => i.id)).toEqual([events[1]!.id, events[0]!.id]);
  });

  it('rejects bad limits and cursors with StoreQueryError', () => {
    for (const limit of [0, -1, 501, 1.5, Number.NaN]) {
      expect(() => store.list({ limit }), `limit ${limit}`).toThrow(StoreQueryError);
    }
    expect(() => store.list({ limit: 501 })).toThrow('limit must be an integer from 1 to 500');
    for (const before of ['abc', '0', '-1', '1.5', '01', '1e3', ' 1', '99999999999999999', newMessageId()]) {
      expect(() => store.list({ before }), `before ${before}`).toThrow(StoreQueryError);
    }
    expect(() => store.list({ q: 'x'.repeat(257) })).toThrow(StoreQueryError);
    expect(store.list({ limit: 500 }).items).toEqual([]);
    expect(store.list({ limit: 1, before: '1' })).toEqual({ items: [], next: null });
  });

  describe('search', () => {
    let ids: Record<string, string>;

    beforeEach(async () => {
      const events = {
        invoice: makeEvent({ subject: 'Your INVOICE for March' }),
        percent: makeEvent({ subject: 'Save 100% now_today' }),
        carol: makeEvent({
          subject: 'Lunch',
          from: [{ name: 'Carol Jones', address: 'carol@corp.example' }],
          to: [{ name: '', address: 'dave@elsewhere.example' }],
          envelope: { mailFrom: 'bounce@corp.example', rcptTo: ['Dave@Elsewhere.example'] },
        }),
        unicode: makeEvent({ subject: 'Grüße aus ZÜRICH' }),
        cc: makeEvent({ subject: 'Copy', cc: [{ name: 'Erin', address: 'erin@cc.example' }] }),
      };
      ids = {};
      for (const [name, event] of Object.entries(events)) {
        ids[name] = event.id;
        await commitWithRaw(event);
      }
    });

    const found = (q: string) => store.list({ q }).items.map((i) => i.id);

    it('matches the subject case-insensitively, ASCII and beyond', () => {
      expect(found('invoice')).toEqual([ids['invoice']]);
      expect(found('zürich')).toEqual([ids['unicode']]);
      expect(found('grÜße')).toEqual([ids['unicode']]);
    });

    it('matches from and to names and addresses, header and envelope', () => {
      expect(found('carol jones')).toEqual([ids['carol']]);
      expect(found('CORP.EXAMPLE')).toEqual([ids['carol']]);
      expect(found('dave@elsewhere')).toEqual([ids['carol']]);
      expect(found('erin@cc')).toEqual([ids['cc']]);
    });

    it('treats % and _ as plain characters', () => {
      expect(found('%')).toEqual([ids['percent']]);
      expect(found('100%')).toEqual([ids['percent']]);
      expect(found('w_t')).toEqual([ids['percent']]);
      expect(found('_')).toEqual([ids['percent']]);
      expect(found('L_nch')).toEqual([]);
    });

    it('filters by envelope recipient exactly and case-insensitively', () => {
      expect(store.list({ rcpt: 'dave@elsewhere.example' }).items.map((i) => i.id)).toEqual([ids['carol']]);
      expect(store.list({ rcpt: 'DAVE@ELSEWHERE.EXAMPLE' }).items.map((i) => i.id)).toEqual([ids['carol']]);
      expect(store.list({ rcpt: 'dave@elsewhere' }).items).toEqual([]);
      // Every other message went to the factory's default recipient.
      expect(store.list({ rcpt: 'bob@example.net' }).items.map((i) => i.id)).toEqual(
        [ids['cc'], ids['unicode'], ids['percent'], ids['invoice']],
      );
    });

    it('combines q, rcpt and pagination', () => {
      // "y" is in three of the subjects sent to bob, and in no address or name.
      const first = store.list({ rcpt: 'bob@example.net', q: 'Y', limit: 2 });
      expect(first.items.map((i) => i.id)).toEqual([ids['cc'], ids['percent']]);
      const second = store.list({ rcpt: 'bob@example.net', q: 'Y', limit: 2, before: first.next! });
      expect(second.items.map((i) => i.id)).toEqual([ids['invoice']]);
      expect(second.next).toBeNull();
    });
  });
});

describe('attachments', () => {
  it('attachmentsDir is messages/<id>/attachments and is not created by asking', () => {
    const id = newMessageId();
    expect(store.attachmentsDir(id)).toBe(join(dataDir, 'messages', id, 'attachments'));
    expect(existsSync(join(dataDir, 'messages', id))).toBe(false);
  });

  it('finds an attachment written before commit by its index', async () => {
    const event = makeEvent({
      attachments: [
        makeAttachment({ index: 0, filename: 'a.pdf' }),
        makeAttachment({ index: 1, filename: 'b.png', contentType: 'image/png', size: 3 }),
      ],
    });
    const attDir = store.attachmentsDir(event.id);
    mkdirSync(attDir, { recursive: true });
    writeFileSync(join(attDir, '0'), 'pdf!');
    writeFileSync(join(attDir, '1'), 'png');
    await commitWithRaw(event);

    const found = store.attachment(event.id, 1);
    expect(found).toEqual({
      meta: makeAttachment({ index: 1, filename: 'b.png', contentType: 'image/png', size: 3 }),
      path: join(attDir, '1'),
    });
    expect(readFileSync(found!.path, 'utf8')).toBe('png');
    expect(store.attachment(event.id, 2)).toBeNull();
    expect(store.attachment(event.id, -1)).toBeNull();
    expect(store.attachment(event.id, 0.5)).toBeNull();
    expect(store.attachment(newMessageId(), 0)).toBeNull();
  });
});

describe('delete', () => {
  it('removes the row, the recipient index, the files, and logs mail.deleted', async () => {
    const keep = makeEvent();
    const gone = makeEvent({ attachments: [makeAttachment()] });
    mkdirSync(store.attachmentsDir(gone.id), { recursive: true });
    writeFileSync(join(store.attachmentsDir(gone.id), '0'), 'pdf!');
    await commitWithRaw(keep);
    await commitWithRaw(gone);

    expect(await store.delete(gone.id)).toBe(true);
    expect(store.get(gone.id)).toBeNull();
    expect(store.raw(gone.id)).toBeNull();
    expect(store.attachment(gone.id, 0)).toBeNull();
    expect(existsSync(join(dataDir, 'messages', gone.id))).toBe(false);
    expect(existsSync(join(dataDir, 'messages', `${gone.id}.eml`))).toBe(false);
    expect(existsSync(store.raw(keep.id)!.path!)).toBe(true);
    expect(store.list({}).items.map((i) => i.id)).toEqual([keep.id]);
    expect(store.list({ rcpt: 'bob@example.net' }).items.map((i) => i.id)).toEqual([keep.id]);
    expect(store.get(keep.id)).toEqual(keep);

    const log = store.eventsAfter({ seq: 0 }, 10)!;
    // The received entry of the deleted message is left out; its deletion is there.
    expect(log.map((e) => [e.event.type, e.event.id])).toEqual([
      ['mail.received', keep.id],
      ['mail.deleted', gone.id],
    ]);
    const deleted = log[1]!.event;
    expect(deleted).toEqual({ type: 'mail.deleted', version: 1, id: gone.id, at: expect.any(String) });
    expect(Number.isNaN(Date.parse((deleted as { at: string }).at))).toBe(false);

    expect(await store.delete(gone.id)).toBe(false);
  });

  it('does not resurrect a deleted message when spool recovery commits it again', async () => {
    const event = makeEvent();
    await commitWithRaw(event);
    await store.delete(event.id);
    // Recovery re-runs the parser, which writes the attachments again, then commits.
    mkdirSync(store.attachmentsDir(event.id), { recursive: true });
    writeFileSync(join(store.attachmentsDir(event.id), '0'), 'again');
    expect((await commitWithRaw(event)).result).toBe('duplicate');
    expect(store.get(event.id)).toBeNull();
    expect(existsSync(join(dataDir, 'messages', event.id))).toBe(false);
    expect(existsSync(join(dataDir, 'messages', `${event.id}.eml`))).toBe(false);
  });

  it('returns false for unknown and invalid ids', async () => {
    expect(await store.delete(newMessageId())).toBe(false);
    expect(await store.delete('../../data')).toBe(false);
  });
});

describe('invalid ids', () => {
  const bad = ['', '..', '../mailwire.db', '01ARZ3NDEKTSV4RRFFQ69G5FA/', '01arz3ndektsv4rrffq69g5fav', '01ARZ3NDEKTSV4RRFFQ69G5FAV/../x'];

  it('never reach the filesystem', async () => {
    for (const id of bad) {
      expect(store.get(id), id).toBeNull();
      expect(store.raw(id), id).toBeNull();
      expect(store.attachment(id, 0), id).toBeNull();
      expect(await store.delete(id), id).toBe(false);
      expect(() => store.attachmentsDir(id), id).toThrow('not a message id');
    }
    expect(existsSync(join(dataDir, 'mailwire.db'))).toBe(true);
  });
});

describe('event log', () => {
  it('replays after a seq or a message id, in commit order', async () => {
    const a = makeEvent();
    const b = makeEvent();
    const c = makeEvent();
    for (const e of [a, b, c]) await commitWithRaw(e);
    await store.delete(a.id);

    const all = store.eventsAfter({ seq: 0 }, 100)!;
    expect(all.map((e) => `${e.event.type} ${e.event.id}`)).toEqual([`mail.received ${b.id}`, `mail.received ${c.id}`, `mail.deleted ${a.id}`]);
    expect(all.map((e) => e.seq)).toEqual([2, 3, 4]);
    expect(all[0]!.event).toEqual(b);
    expect(store.lastEventSeq()).toBe(4);

    // Resuming after a deleted message's id still works: its log entry remains.
    expect(store.eventsAfter({ id: a.id }, 100)!.map((e) => e.seq)).toEqual([2, 3, 4]);
    expect(store.eventsAfter({ id: b.id }, 1)!.map((e) => e.seq)).toEqual([3]);
    expect(store.eventsAfter({ seq: 4 }, 100)).toEqual([]);
    expect(store.eventsAfter({ id: newMessageId() }, 100)).toBeNull();
    expect(store.eventsAfter({ id: 'nonsense' }, 100)).toBeNull();
  });
});

describe('lifecycle', () => {
  it('keeps everything across close and reopen', async () => {
    const events = [makeEvent({ subject: 'one' }), makeEvent({ subject: 'two' })];
    for (const e of events) await commitWithRaw(e);
    await store.delete(events[0]!.id);
    await store.close();

    store = openSqliteStore(dataDir);
    expect(store.get(events[1]!.id)).toEqual(events[1]);
    expect(store.get(events[0]!.id)).toBeNull();
    expect(store.list({}).items.map((i) => i.id)).toEqual([events[1]!.id]);
    expect(store.lastEventSeq()).toBe(3);
    // The sequence continues; ids stay unique forever.
    const third = makeEvent();
    expect((await commitWithRaw(third)).result).toBe('inserted');
    expect(store.eventsAfter({ seq: 3 }, 10)!.map((e) => [e.seq, e.event.id])).toEqual([[4, third.id]]);
    expect((await commitWithRaw(events[0]!)).result).toBe('duplicate');
  });

  it('keeps the database in WAL mode', async () => {
    await commitWithRaw(makeEvent());
    expect(existsSync(join(dataDir, 'mailwire.db-wal'))).toBe(true);
    // journal_mode=WAL is a property of the database file; a second connection sees it.
    const other = new Database(join(dataDir, 'mailwire.db'), { readonly: true });
    try {
      expect(other.pragma('journal_mode', { simple: true })).toBe('wal');
      expect(other.pragma('user_version', { simple: true })).toBe(4);
    } finally {
      other.close();
    }
  });

  it('is healthy while open and not after close; close twice is fine', async () => {
    expect(store.healthy()).toBe(true);
    await store.close();
    expect(store.healthy()).toBe(false);
    await store.close();
  });
});
