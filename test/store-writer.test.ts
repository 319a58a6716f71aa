/**
 * The store's writer (writer.ts) and the thread it runs on (writer-thread.ts): every write goes
 * through it, a failed item of a batch fails alone, and a writer thread that dies fails only
 * what it held; the next one takes over.
 */
import { existsSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { MailEvent } from '../src/events/types.js';
import { openSqliteStore, type SqliteMessageStore } from '../src/store/sqlite-store.js';
import { StoreWriter } from '../src/store/writer.js';
import { waitFor } from './helpers/app.js';
import { makeEvent } from './helpers/events.js';

let dir: string;
let store: SqliteMessageStore;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'mailwire-writer-'));
  store = openSqliteStore(dir);
});

afterEach(async () => {
  vi.restoreAllMocks();
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

const item = (event: MailEvent) => ({ json: JSON.stringify(event), raw: Buffer.from(`Subject: ${event.subject}\r\n\r\nx\r\n`) });

describe('StoreWriter', () => {
  it('commits a batch in one transaction; when it fails, each item alone, and says why', () => {
    const writer = new StoreWriter(join(dir, 'mailwire.db'));
    try {
      const good = [makeEvent({ subject: 'one' }), makeEvent({ subject: 'two' })];
      const broken = makeEvent({ from: null as unknown as [] });
      expect(writer.insertBatch(good.map(item))).toEqual({
        outcomes: [
          { ok: true, value: 'inserted' },
          { ok: true, value: 'inserted' },
        ],
        batchError: null,
      });
      const next = makeEvent({ subject: 'three' });
      const result = writer.insertBatch([item(good[0]!), item(broken), item(next)]);
      expect(result.outcomes[0]).toEqual({ ok: true, value: 'duplicate' });
      expect(result.outcomes[1]).toEqual({ ok: false, error: { message: expect.stringMatching(/Cannot read properties of null/), code: null } });
      expect(result.outcomes[2]).toEqual({ ok: true, value: 'inserted' });
      expect(result.batchError?.message).toMatch(/Cannot read properties of null/);
      // The main thread's connection sees what the writer committed, in commit order.
      expect(store.list({}).items.map((m) => m.subject)).toEqual(['three', 'two', 'one']);
      expect(store.lastEventSeq()).toBe(3);
    } finally {
      writer.close();
    }
  });

  it('a constraint error keeps its SQLite code across the thread boundary', async () => {
    const event = makeEvent();
    expect(await store.commit(event, { bytes: Buffer.from('x') })).toBe('inserted');
    // A trigger makes every further insert fail the way a full disk or a broken file would.
    const db = new Database(join(dir, 'mailwire.db'));
    db.exec("CREATE TRIGGER refuse BEFORE INSERT ON messages BEGIN SELECT RAISE(ABORT, 'refused by test'); END");
    db.close();
    const err = await store.commit(makeEvent(), { bytes: Buffer.from('y') }).catch((e: unknown) => e as NodeJS.ErrnoException);
    expect(err).toBeInstanceOf(Error);
    expect(err).toMatchObject({ message: 'refused by test', code: 'SQLITE_CONSTRAINT_TRIGGER' });
  });
});

describe('the writer thread', () => {
  it('dies: what it held fails, /readyz-health is false until a new thread is up, then writes work again', async () => {
    const first = makeEvent({ subject: 'first' });
    expect(await store.commit(first, { bytes: Buffer.from('1') })).toBe('inserted');
    expect(store.healthy()).toBe(true);

    // Hold the next request inside the thread (never delivered), then kill the thread.
    let thread: Worker | undefined;
    vi.spyOn(Worker.prototype, 'postMessage').mockImplementation(function (this: Worker) {
      thread = this;
    });
    const held = makeEvent({ subject: 'held' });
    const pending = store.commit(held, { bytes: Buffer.from('2') });
    await waitFor(async () => thread);
    vi.restoreAllMocks();
    await thread!.terminate();

    await expect(pending).rejects.toThrow(/the store writer thread exited \(code 1\)/);
    expect(store.healthy()).toBe(false);
    await waitFor(async () => store.healthy());
    // Not stored by the dead thread; stored now, as the pipeline's retry would.
    expect(store.get(held.id)).toBeNull();
    expect(await store.commit(held, { bytes: Buffer.from('2') })).toBe('inserted');
    expect(await store.delete(first.id)).toBe(true);
    expect(store.list({}).items.map((m) => m.subject)).toEqual(['held']);
  });

  it('a delete the writer committed before dying (its answer lost) is finished: true, files removed, so the caller publishes it', async () => {
    const event = makeEvent({ subject: 'big', size: 200_000 });
    const rawFile = join(dir, 'raw.eml');
    writeFileSync(rawFile, 'x'.repeat(200_000));
    expect(await store.commit(event, { path: rawFile })).toBe('inserted');
    const stored = join(dir, 'messages', `${event.id}.eml`);
    expect(existsSync(stored)).toBe(true);
    // The transaction commits (as the thread would), then the thread dies before answering.
    const writer = new StoreWriter(join(dir, 'mailwire.db'));
    let thread: Worker | undefined;
    vi.spyOn(Worker.prototype, 'postMessage').mockImplementation(function (this: Worker) {
      thread = this;
      writer.delete(event.id, new Date().toISOString());
    });
    const deleting = store.delete(event.id);
    await waitFor(async () => thread);
    vi.restoreAllMocks();
    await thread!.terminate();
    writer.close();
    expect(await deleting).toBe(true);
    expect(existsSync(stored)).toBe(false);
    expect(store.get(event.id)).toBeNull();
    await waitFor(async () => store.healthy());
    // Nothing was deleted when the thread died before the transaction: the error stands.
    const kept = makeEvent({ subject: 'kept' });
    expect(await store.commit(kept, { bytes: Buffer.from('k') })).toBe('inserted');
    vi.spyOn(Worker.prototype, 'postMessage').mockImplementation(function (this: Worker) {
      thread = this;
    });
    thread = undefined;
    const failing = store.delete(kept.id);
    await waitFor(async () => thread);
    vi.restoreAllMocks();
    await thread!.terminate();
    await expect(failing).rejects.toThrow(/the store writer thread exited/);
    expect(store.get(kept.id)?.subject).toBe('kept');
  });

  it('close waits for the writes already asked for, even those still waiting for their batch; after it, writes are refused', async () => {
    const events = [makeEvent({ subject: 'a' }), makeEvent({ subject: 'b' })];
    // In the same turn of the loop as the commits: neither has reached the writer thread yet.
    const commits = events.map((e) => store.commit(e, { bytes: Buffer.from('x') }));
    const closed = store.close();
    expect(store.healthy()).toBe(false);
    await expect(store.commit(makeEvent(), { bytes: Buffer.from('x') })).rejects.toThrow(/the store is closed/);
    await closed;
    expect(await Promise.all(commits)).toEqual(['inserted', 'inserted']);
    await expect(store.delete(events[0]!.id)).rejects.toThrow(/the store is closed/);
    store = openSqliteStore(dir);
    expect(store.list({}).items.map((m) => m.subject)).toEqual(['b', 'a']);
  });

  it('a writer thread that cannot open the database fails the write with its SQLite code; close still closes', async () => {
    const file = join(dir, 'mailwire.db');
    expect(await store.commit(makeEvent(), { bytes: Buffer.from('x') })).toBe('inserted');
    // The file goes from under the store (the connections keep theirs open), then the thread dies:
    // the one started in its place cannot open the database.
    let thread: Worker | undefined;
    const post = Worker.prototype.postMessage;
    vi.spyOn(Worker.prototype, 'postMessage').mockImplementation(function (this: Worker, ...args: Parameters<Worker['postMessage']>) {
      thread = this;
      post.apply(this, args);
    });
    expect(await store.commit(makeEvent(), { bytes: Buffer.from('y') })).toBe('inserted');
    vi.restoreAllMocks();
    renameSync(file, `${file}.moved`);
    await thread!.terminate();
    await waitFor(async () => !store.healthy());
    const err = await store.commit(makeEvent(), { bytes: Buffer.from('z') }).catch((e: unknown) => e as Error);
    expect(String(err)).toMatch(/the store writer thread exited \(code 1\): SQLITE_CANTOPEN/);
    expect(store.healthy()).toBe(false);
    await store.close();
    expect(() => store.count()).toThrow(/not open/);
    renameSync(`${file}.moved`, file);
    store = openSqliteStore(dir);
    expect(store.count()).toBe(2);
  });
});
