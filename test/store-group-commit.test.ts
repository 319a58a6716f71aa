/**
 * Group commit: concurrent commits share one messages/ directory fsync and one SQLite
 * transaction, and every caller still gets its own result or its own error.
 */
import { afterEach, beforeEach, describe, expect, it, vi, type MockInstance } from 'vitest';
import * as fsp from 'node:fs/promises';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { MailEvent } from '../src/events/types.js';
import * as files from '../src/store/files.js';
import { DirectorySync } from '../src/util/fs.js';
import { GroupCommit, type ItemOutcome } from '../src/util/group-commit.js';
import { openSqliteStore, type SqliteMessageStore } from '../src/store/sqlite-store.js';
import { makeAttachment, makeEvent } from './helpers/events.js';

vi.mock('node:fs/promises', async (importOriginal) => {
  const actual = await importOriginal<typeof import('node:fs/promises')>();
  return { ...actual, link: vi.fn(actual.link) };
});
vi.mock('../src/store/files.js', async (importOriginal) => {
  const actual = await importOriginal<typeof import('../src/store/files.js')>();
  return { ...actual, fsyncPath: vi.fn(actual.fsyncPath) };
});

const tick = () => new Promise((resolve) => setImmediate(resolve));

describe('GroupCommit', () => {
  /** A runner that records its batches and finishes each when the test says so. */
  function recordingRunner() {
    const batches: number[][] = [];
    const finishers: (() => void)[] = [];
    const run = (items: readonly number[]) => {
      batches.push([...items]);
      return new Promise<ItemOutcome<string>[]>((resolve) => {
        finishers.push(() => resolve(items.map((n) => ({ ok: true, value: `r${n}` }))));
      });
    };
    return { batches, finish: () => finishers.shift()!(), run };
  }

  it('batches what is submitted in one turn, and what arrives during a batch into the next', async () => {
    const r = recordingRunner();
    const gc = new GroupCommit(r.run);
    const first = [1, 2, 3].map((n) => gc.submit(n));
    await tick();
    expect(r.batches).toEqual([[1, 2, 3]]);
    // Submitted while [1, 2, 3] is being written: they wait, no second batch runs alongside.
    const second = [4, 5].map((n) => gc.submit(n));
    await tick();
    expect(r.batches).toEqual([[1, 2, 3]]);
    expect(gc.pending).toBe(2);
    r.finish();
    expect(await Promise.all(first)).toEqual(['r1', 'r2', 'r3']);
    while (r.batches.length < 2) await tick();
    expect(r.batches).toEqual([[1, 2, 3], [4, 5]]);
    r.finish();
    expect(await Promise.all(second)).toEqual(['r4', 'r5']);
  });

  it('bounds a batch by maxBatch', async () => {
    const r = recordingRunner();
    const gc = new GroupCommit(r.run, { maxBatch: 2 });
    const all = [1, 2, 3, 4, 5].map((n) => gc.submit(n));
    for (let batch = 1; batch <= 3; batch++) {
      while (r.batches.length < batch) await tick();
      r.finish();
    }
    expect(await Promise.all(all)).toEqual(['r1', 'r2', 'r3', 'r4', 'r5']);
    expect(r.batches).toEqual([[1, 2], [3, 4], [5]]);
  });

  describe('lingering', () => {
    const immediateRunner = async (items: readonly number[]) => items.map((n): ItemOutcome<number> => ({ ok: true, value: n }));

    it('never makes a lone caller wait', async () => {
      const gc = new GroupCommit(immediateRunner, { lingerMs: 5000 });
      const started = performance.now();
      for (let n = 0; n < 20; n++) expect(await gc.submit(n)).toBe(n);
      expect(performance.now() - started).toBeLessThan(1000);
    });

    it('while callers arrive concurrently, lets the next batch wait for more', async () => {
      const batches: number[][] = [];
      const gc = new GroupCommit<number, number>(
        async (items) => {
          batches.push([...items]);
          return immediateRunner(items);
        },
        { lingerMs: 400 },
      );
      await Promise.all([gc.submit(1), gc.submit(2)]);
      // The last batch held two: the next one lingers, and what arrives meanwhile joins it.
      const started = performance.now();
      const next = [gc.submit(3)];
      await new Promise((resolve) => setTimeout(resolve, 20));
      next.push(gc.submit(4), gc.submit(5));
      expect(await Promise.all(next)).toEqual([3, 4, 5]);
      expect(performance.now() - started).toBeGreaterThanOrEqual(390);
      expect(batches).toEqual([[1, 2], [3, 4, 5]]);
      // A batch of one ends the lingering: the caller after it does not wait.
      await Promise.all([gc.submit(6), gc.submit(7)]);
      await gc.submit(8);
      const t = performance.now();
      await gc.submit(9);
      expect(performance.now() - t).toBeLessThan(390);
    });

    it('with lingerFrom, a batch smaller than it does not make the next one wait; one that size does', async () => {
      const gc = new GroupCommit(immediateRunner, { lingerMs: 400, lingerFrom: 3 });
      await Promise.all([gc.submit(1), gc.submit(2)]);
      let t = performance.now();
      await gc.submit(3);
      expect(performance.now() - t).toBeLessThan(390);
      await Promise.all([gc.submit(4), gc.submit(5), gc.submit(6)]);
      t = performance.now();
      await gc.submit(7);
      expect(performance.now() - t).toBeGreaterThanOrEqual(390);
    });

    it('a full batch does not wait for the linger', async () => {
      const gc = new GroupCommit(immediateRunner, { lingerMs: 60_000, maxBatch: 3 });
      await Promise.all([gc.submit(1), gc.submit(2)]);
      expect(await Promise.all([gc.submit(3), gc.submit(4), gc.submit(5)])).toEqual([3, 4, 5]);
    });
  });

  it('gives each caller its own outcome, and fails every caller when the runner throws', async () => {
    let fail = false;
    const gc = new GroupCommit<number, number>(async (items) => {
      if (fail) throw new Error('disk on fire');
      return items.map((n) => (n % 2 ? { ok: true, value: n * 10 } : { ok: false, error: new Error(`bad ${n}`) }));
    });
    const results = await Promise.allSettled([1, 2, 3].map((n) => gc.submit(n)));
    expect(results.map((r) => (r.status === 'fulfilled' ? r.value : (r.reason as Error).message))).toEqual([10, 'bad 2', 30]);
    fail = true;
    const failed = await Promise.allSettled([4, 5].map((n) => gc.submit(n)));
    expect(failed.map((r) => r.status === 'rejected' && (r.reason as Error).message)).toEqual(['disk on fire', 'disk on fire']);
    // The queue keeps working afterwards.
    fail = false;
    expect(await gc.submit(7)).toBe(70);
  });

  it('fails a batch whose runner reports the wrong number of outcomes', async () => {
    const gc = new GroupCommit<number, number>(async () => [{ ok: true, value: 1 }]);
    const results = await Promise.allSettled([gc.submit(1), gc.submit(2)]);
    expect(results.every((r) => r.status === 'rejected')).toBe(true);
  });
});

describe('store group commit', () => {
  let dir: string;
  let dataDir: string;
  let store: SqliteMessageStore;
  let dirSyncs: MockInstance<DirectorySync['sync']>;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'mailwire-store-gc-'));
    dataDir = join(dir, 'data');
    mkdirSync(join(dir, 'spool'));
    store = openSqliteStore(dataDir);
    vi.mocked(files.fsyncPath).mockClear();
    dirSyncs = vi.spyOn(DirectorySync.prototype, 'sync');
  });
  afterEach(async () => {
    dirSyncs.mockRestore();
    await store.close();
    vi.mocked(fsp.link).mockReset();
    vi.mocked(files.fsyncPath).mockClear();
    rmSync(dir, { recursive: true, force: true });
  });

  function spoolFile(event: MailEvent): string {
    const path = join(dir, 'spool', `${event.id}.eml`);
    writeFileSync(path, `Subject: ${event.subject}\r\n\r\nbody\r\n`);
    return path;
  }
  const messagesDirSyncs = () => dirSyncs.mock.contexts.filter((d) => (d as DirectorySync).path === join(dataDir, 'messages')).length;

  it('stores many concurrent commits once each, with far fewer directory fsyncs than messages', async () => {
    const events = Array.from({ length: 200 }, (_, i) => makeEvent({ subject: `m${i}` }));
    const results = await Promise.all(events.map((e) => store.commit(e, { path: spoolFile(e) })));
    expect(results).toEqual(events.map(() => 'inserted'));
    const ids = store.list({ limit: 500 }).items.map((i) => i.id);
    expect(ids.sort()).toEqual(events.map((e) => e.id).sort());
    for (const e of events) expect(store.get(e.id)).toEqual(e);
    // One per batch, and 200 commits issued together make only a few batches.
    expect(messagesDirSyncs()).toBeGreaterThanOrEqual(2); // at most 128 per batch
    expect(messagesDirSyncs()).toBeLessThan(50);
    expect(store.eventsAfter({ seq: 0 }, 500)).toHaveLength(200);
  });

  it('syncs messages/ for a message kept in its row only when it has attachments (their directory entry is there)', async () => {
    const plain = makeEvent({ subject: 'plain' });
    expect(await store.commit(plain, { bytes: Buffer.from('Subject: plain\r\n\r\nx\r\n') })).toBe('inserted');
    expect(messagesDirSyncs()).toBe(0);
    const withAttachment = makeEvent({ subject: 'with attachment', attachments: [makeAttachment({ index: 0 })] });
    mkdirSync(store.attachmentsDir(withAttachment.id), { recursive: true });
    writeFileSync(join(store.attachmentsDir(withAttachment.id), '0'), 'data');
    expect(await store.commit(withAttachment, { bytes: Buffer.from('Subject: with attachment\r\n\r\nx\r\n') })).toBe('inserted');
    expect(messagesDirSyncs()).toBe(1);
  });

  it('answers duplicates within one batch: one inserted, the others duplicate', async () => {
    const twice = makeEvent({ subject: 'twice' });
    const others = [makeEvent(), makeEvent()];
    const path = spoolFile(twice);
    // Which of the three commits of one id comes first depends on which link finishes first.
    const results = await Promise.all([
      store.commit(twice, { path: path }),
      store.commit(others[0]!, { path: spoolFile(others[0]!) }),
      store.commit(twice, { path: path }),
      store.commit(others[1]!, { path: spoolFile(others[1]!) }),
      store.commit(twice, { path: path }),
    ]);
    expect([results[0], results[2], results[4]].sort()).toEqual(['duplicate', 'duplicate', 'inserted']);
    expect([results[1], results[3]]).toEqual(['inserted', 'inserted']);
    expect(store.get(twice.id)).toEqual(twice);
    expect(store.list({}).items).toHaveLength(3);
    expect(store.eventsAfter({ seq: 0 }, 10)!.filter((e) => e.event.id === twice.id)).toHaveLength(1);
    expect(existsSync(store.raw(twice.id)!.path!)).toBe(true);
  });

  it('a failing link rejects that caller only; the others of the batch are stored', async () => {
    const events = [makeEvent(), makeEvent(), makeEvent()];
    const paths = events.map(spoolFile);
    const actualLink = (await vi.importActual<typeof import('node:fs/promises')>('node:fs/promises')).link;
    vi.mocked(fsp.link).mockImplementation(async (src, dest) => {
      if (String(src) === paths[1]) throw Object.assign(new Error('EIO: link failed'), { code: 'EIO' });
      return actualLink(src, dest);
    });
    const results = await Promise.allSettled(events.map((e, i) => store.commit(e, { path: paths[i]! })));
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect((results[1] as PromiseRejectedResult).reason).toMatchObject({ code: 'EIO' });
    expect(store.get(events[0]!.id)).not.toBeNull();
    expect(store.get(events[1]!.id)).toBeNull();
    expect(store.get(events[2]!.id)).not.toBeNull();
    // The failed one can be committed again later (its spool entry stays for the next run).
    vi.mocked(fsp.link).mockImplementation(actualLink);
    expect(await store.commit(events[1]!, { path: paths[1]! })).toBe('inserted');
  });

  it('an event that breaks the transaction fails alone; the rest of its batch is stored', async () => {
    const good = [makeEvent(), makeEvent()];
    // JSON.stringify cannot serialise a BigInt: the insert throws inside the transaction.
    const poisoned = makeEvent({ headers: [{ name: 'X-Bad', value: 1n as unknown as string }] });
    const all = [good[0]!, poisoned, good[1]!];
    const results = await Promise.allSettled(all.map((e) => store.commit(e, { path: spoolFile(e) })));
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect((results[1] as PromiseRejectedResult).reason).toBeInstanceOf(TypeError);
    expect(store.list({}).items.map((i) => i.id).sort()).toEqual(good.map((e) => e.id).sort());
    expect(store.get(poisoned.id)).toBeNull();
  });

  it('an event the writer thread cannot insert fails alone; the rest of its batch is stored', async () => {
    const good = [makeEvent(), makeEvent()];
    // Serialises, but the insert throws inside the writer's transaction (no From list to index).
    const broken = makeEvent({ from: null as unknown as [] });
    const all = [good[0]!, broken, good[1]!];
    const results = await Promise.allSettled(all.map((e) => store.commit(e, { path: spoolFile(e) })));
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect(String((results[1] as PromiseRejectedResult).reason)).toMatch(/Cannot read properties of null/);
    expect(store.list({}).items.map((i) => i.id).sort()).toEqual(good.map((e) => e.id).sort());
    expect(store.get(broken.id)).toBeNull();
    // Nothing of it was left behind: fixed, it commits.
    expect(await store.commit({ ...broken, from: [] }, { path: spoolFile(broken) })).toBe('inserted');
  });

  it('a failing messages/ fsync rejects every caller of the batch and stores none of them', async () => {
    const events = [makeEvent(), makeEvent(), makeEvent()];
    // Every batch fails, however the three commits happen to be grouped.
    dirSyncs.mockRejectedValue(Object.assign(new Error('EIO: fsync failed'), { code: 'EIO' }));
    const results = await Promise.allSettled(events.map((e) => store.commit(e, { path: spoolFile(e) })));
    dirSyncs.mockRestore();
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected', 'rejected']);
    expect(results.map((r) => (r as PromiseRejectedResult).reason.code)).toEqual(['EIO', 'EIO', 'EIO']);
    expect(store.list({}).items).toEqual([]);
    // Nothing was half-done: committing again (as spool recovery would) stores all three.
    expect(await Promise.all(events.map((e) => store.commit(e, { path: spoolFile(e) })))).toEqual(['inserted', 'inserted', 'inserted']);
  });
});
