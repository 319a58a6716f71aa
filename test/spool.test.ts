/**
 * The spool's durability steps: coalesced directory fsyncs (pure logic, with an injected sync)
 * and Spool.commit(): a small message durable in its journal record, with no file; a larger one
 * synced and renamed into incoming/, incoming/ synced, and its record written, before it resolves.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import * as fsp from 'node:fs/promises';
import { appendFileSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { newMessageId } from '../src/events/id.js';
import type { Envelope } from '../src/events/types.js';
import { CoalescedSync } from '../src/spool/coalesced-sync.js';
import { SpoolJournal } from '../src/spool/journal.js';
import { INLINE_MAX, Spool } from '../src/spool/spool.js';
import { DirectorySync } from '../src/util/fs.js';

vi.mock('node:fs/promises', async (importOriginal) => {
  const actual = await importOriginal<typeof import('node:fs/promises')>();
  return { ...actual, open: vi.fn(actual.open), rename: vi.fn(actual.rename) };
});

const tick = () => new Promise((resolve) => setImmediate(resolve));

/** A sync function the test finishes by hand, recording when each sync started. */
function manualSync() {
  let clock = 0;
  const started: number[] = [];
  const completed: number[] = []; // start times of finished syncs
  const running: { start: number; resolve(): void; reject(err: Error): void }[] = [];
  const fn = () =>
    new Promise<void>((resolve, reject) => {
      const start = clock++;
      started.push(start);
      running.push({
        start,
        resolve: () => {
          completed.push(start);
          resolve();
        },
        reject,
      });
    });
  return {
    fn,
    started,
    completed,
    now: () => clock++,
    get running() {
      return running.length;
    },
    finish: () => running.shift()!.resolve(),
    fail: (err: Error) => running.shift()!.reject(err),
  };
}

describe('CoalescedSync', () => {
  it('starts at once when idle', async () => {
    const s = manualSync();
    const c = new CoalescedSync(s.fn);
    const p = c.sync();
    expect(s.started).toHaveLength(1);
    s.finish();
    await p;
  });

  it('callers arriving during a sync share the next one, which starts after the running one ends', async () => {
    const s = manualSync();
    const c = new CoalescedSync(s.fn);
    const first = c.sync();
    const resolved: number[] = [];
    const later = [1, 2, 3, 4].map((n) => c.sync().then(() => resolved.push(n)));
    // Still one fsync: never two at once.
    expect(s.started).toHaveLength(1);
    s.finish();
    await first;
    await tick();
    // The running fsync may have read the directory before their renames: not theirs.
    expect(resolved).toEqual([]);
    expect(s.started).toHaveLength(2);
    expect(s.running).toBe(1);
    s.finish();
    await Promise.all(later);
    expect(resolved).toEqual([1, 2, 3, 4]);
    expect(s.started).toHaveLength(2);
  });

  it('never resolves a caller with an fsync that started before its call (random interleavings)', async () => {
    for (let round = 0; round < 20; round++) {
      const s = manualSync();
      const c = new CoalescedSync(s.fn);
      const calls: Promise<void>[] = [];
      let seed = round + 1;
      const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
      for (let step = 0; step < 200; step++) {
        if (random() < 0.6 || s.running === 0) {
          const at = s.now();
          calls.push(
            c.sync().then(() => {
              // Some fsync that started after this call has finished.
              expect(s.completed.some((start) => start > at)).toBe(true);
            }),
          );
        } else {
          s.finish();
          await tick();
        }
      }
      while (s.running > 0) {
        s.finish();
        await tick();
      }
      await Promise.all(calls);
      expect(s.started.length).toBeLessThan(calls.length);
    }
  });

  it('a failed fsync rejects its own callers; those waiting for the next one get the next result', async () => {
    const s = manualSync();
    const c = new CoalescedSync(s.fn);
    const first = c.sync();
    const second = c.sync();
    s.fail(new Error('EIO'));
    await expect(first).rejects.toThrow('EIO');
    await tick();
    s.finish();
    await expect(second).resolves.toBeUndefined();
    // And a failure of that next one reaches every caller waiting for it.
    const a = c.sync();
    const b = c.sync();
    const d = c.sync();
    s.finish();
    await a;
    await tick();
    s.fail(new Error('EIO again'));
    await expect(b).rejects.toThrow('EIO again');
    await expect(d).rejects.toThrow('EIO again');
  });

  it('a sync function that throws synchronously rejects instead of throwing', async () => {
    const c = new CoalescedSync(() => {
      throw new Error('boom');
    });
    await expect(c.sync()).rejects.toThrow('boom');
    await expect(c.sync()).rejects.toThrow('boom');
  });
});

describe('Spool.commit', () => {
  let dir: string;
  let spool: Spool;
  const envelope: Envelope = {
    mailFrom: 'a@example.org',
    rcptTo: ['b@example.net'],
    remoteAddress: '127.0.0.1',
    remotePort: 1,
    clientHostname: '',
    helo: 'x',
    tls: null,
    auth: null,
  };

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'mailwire-spool-'));
    spool = opened(new Spool(dir));
    await spool.init();
  });
  afterEach(async () => {
    vi.restoreAllMocks();
    vi.mocked(fsp.open).mockClear();
    // Their journal segments and directory handles: closed, not left to the garbage collector.
    await Promise.all(spools.splice(0).map((s) => s.close()));
    rmSync(dir, { recursive: true, force: true });
  });

  const spools: Spool[] = [];
  function opened(s: Spool): Spool {
    spools.push(s);
    return s;
  }

  async function write(body: string, prefix?: string) {
    const writer = spool.writer(newMessageId(), { maxSize: 1 << 20, bareNewline: 'reject', ...(prefix ? { prefix: Buffer.from(prefix) } : {}) });
    writer.end(Buffer.from(body));
    await once(writer, 'finish');
    const outcome = writer.outcome();
    if (outcome.kind !== 'ok') throw new Error(outcome.kind);
    return { writer, outcome };
  }

  /** What a new start finds (init, then recover, as the app does). */
  async function restart() {
    const next = opened(new Spool(dir));
    await next.init();
    return next.recover();
  }

  /** A body that makes the message larger than INLINE_MAX: it gets a file. */
  const BIG = 'x'.repeat(INLINE_MAX + 1000);

  function journalText(): string {
    return readdirSync(spool.journalDir)
      .sort()
      .map((name) => readFileSync(join(spool.journalDir, name), 'utf8'))
      .join('');
  }

  function journalLines(): Record<string, unknown>[] {
    return journalText()
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line) as Record<string, unknown>);
  }

  async function fileHandlePrototype() {
    const fh = await fsp.open(dir, 'r');
    await fh.close();
    return Object.getPrototypeOf(fh) as fsp.FileHandle;
  }

  it('keeps a message of up to 64 KiB in its journal record, with no file, in one journal write and one fdatasync', async () => {
    const proto = await fileHandlePrototype();
    const { writer, outcome } = await write('Subject: hi\r\n\r\nbody\r\n', 'Received: by test\r\n');
    vi.mocked(fsp.open).mockClear();
    const datasync = vi.spyOn(proto, 'datasync');
    const writev = vi.spyOn(proto, 'writev');
    const msg = await spool.commit(writer, outcome.size, outcome.sha256, envelope, '2026-01-01T00:00:00.000Z');
    const text = 'Received: by test\r\nSubject: hi\r\n\r\nbody\r\n';
    expect(msg.raw).toEqual({ bytes: Buffer.from(text) });
    expect(msg.file).toBe(`${msg.id}.eml`);
    // No file of its own: nothing opened but the journal's new segment (and journal/ to sync it).
    expect(vi.mocked(fsp.open).mock.calls.map(([p]) => String(p)).sort()).toEqual([spool.journalDir, join(spool.journalDir, '000000000001.log')]);
    expect(writev).toHaveBeenCalledTimes(1);
    expect(datasync).toHaveBeenCalledTimes(1);
    expect(readdirSync(spool.tmpDir)).toEqual([]);
    expect(readdirSync(spool.incomingDir)).toEqual([]);
    const { raw: _raw, ...fields } = msg;
    expect(journalLines()).toEqual([{ ...fields, data: Buffer.from(text).toString('base64') }]);
    expect(await restart()).toEqual([msg]);
  });

  it('gives a message over 64 KiB (trace header included) a file, and keeps its bytes out of the record', async () => {
    const exact = await write(`Subject: edge\r\n\r\n${'y'.repeat(INLINE_MAX - 'Subject: edge\r\n\r\n'.length)}`);
    expect(exact.outcome.size).toBe(INLINE_MAX);
    const edge = await spool.commit(exact.writer, exact.outcome.size, exact.outcome.sha256, envelope, 'now');
    expect(edge.raw.bytes?.length).toBe(INLINE_MAX);
    const over = await write(`Subject: big\r\n\r\n${'y'.repeat(INLINE_MAX - 'Subject: big\r\n\r\n'.length)}`, 'R: 1\r\n');
    const big = await spool.commit(over.writer, over.outcome.size, over.outcome.sha256, envelope, 'now');
    expect(big.raw).toEqual({ path: join(spool.incomingDir, `${big.id}.eml`) });
    expect(readFileSync(big.raw.path!).length).toBe(INLINE_MAX + 'R: 1\r\n'.length);
    expect(journalLines()[1]).not.toHaveProperty('data');
  });

  it('renames a large message into incoming/ and records the envelope in the journal, all synced, and recovery finds the entry', async () => {
    const proto = await fileHandlePrototype();
    const datasync = vi.spyOn(proto, 'datasync');
    const sync = vi.spyOn(proto, 'sync');
    const writev = vi.spyOn(proto, 'writev');
    const { writer, outcome } = await write(`Subject: hi\r\n\r\n${BIG}\r\n`, 'Received: by test\r\n');
    const msg = await spool.commit(writer, outcome.size, outcome.sha256, envelope, '2026-01-01T00:00:00.000Z');
    // Trace header and data in one write, the journal record in another; the message and the
    // journal fdatasynced; incoming/ fsynced, and journal/ once for its new segment.
    expect(writev).toHaveBeenCalledTimes(2);
    expect(datasync).toHaveBeenCalledTimes(2);
    expect(sync).toHaveBeenCalledTimes(2);
    expect(readdirSync(spool.tmpDir)).toEqual([]);
    expect(readdirSync(spool.incomingDir)).toEqual([`${msg.id}.eml`]);
    expect(readFileSync(msg.raw.path!, 'utf8')).toBe(`Received: by test\r\nSubject: hi\r\n\r\n${BIG}\r\n`);
    const { raw, ...record } = msg;
    expect(journalLines()).toEqual([record]);
    expect(raw.path).toBe(join(spool.incomingDir, `${msg.id}.eml`));
    expect(await restart()).toEqual([msg]);
  });

  it('writes everything, in order, through short writes and across write batches', async () => {
    const proto = await fileHandlePrototype();
    const realWritev = proto.writev;
    // Short writes: at most 1000 bytes per call, cut anywhere, even inside a buffer.
    let calls = 0;
    vi.spyOn(proto, 'writev').mockImplementation(function (this: fsp.FileHandle, buffers: readonly NodeJS.ArrayBufferView[]) {
      calls++;
      const head: Buffer[] = [];
      let room = 1000;
      for (const b of buffers as Buffer[]) {
        if (room === 0) break;
        head.push(b.subarray(0, room));
        room -= head.at(-1)!.length;
      }
      return realWritev.call(this, head);
    } as typeof proto.writev);
    const prefix = 'Received: by test\r\n';
    const writer = spool.writer(newMessageId(), { maxSize: 1 << 20, bareNewline: 'reject', prefix: Buffer.from(prefix) });
    const lines = Array.from({ length: 3000 }, (_, i) => `line ${i} ${'x'.repeat(i % 70)}\r\n`);
    // Many small chunks, more than one write batch (64 KiB) in all.
    for (const line of lines) writer.write(Buffer.from(line));
    writer.end();
    await once(writer, 'finish');
    const outcome = writer.outcome();
    if (outcome.kind !== 'ok') throw new Error(outcome.kind);
    const expected = prefix + lines.join('');
    expect(expected.length).toBeGreaterThan(128 * 1024);
    const msg = await spool.commit(writer, outcome.size, outcome.sha256, envelope, 'now');
    expect(readFileSync(msg.raw.path!, 'latin1')).toBe(expected);
    expect(outcome.size).toBe(expected.length);
    expect(outcome.sha256).toBe(createHash('sha256').update(expected).digest('hex'));
    expect(calls).toBeGreaterThan(expected.length / 1000);
  });

  it('shares journal writes between concurrent commits of small messages', async () => {
    const proto = await fileHandlePrototype();
    const written = await Promise.all(Array.from({ length: 30 }, (_, i) => write(`Subject: ${i}\r\n\r\nx\r\n`)));
    const journalWrites = vi.spyOn(proto, 'writev');
    const syncs = vi.spyOn(proto, 'datasync');
    const msgs = await Promise.all(written.map(({ writer, outcome }) => spool.commit(writer, outcome.size, outcome.sha256, envelope, 'now')));
    expect(journalLines().map((r) => r.id).sort()).toEqual(msgs.map((m) => m.id).sort());
    expect(journalWrites.mock.calls.length).toBeGreaterThanOrEqual(1);
    expect(journalWrites.mock.calls.length).toBeLessThan(30);
    expect(syncs.mock.calls.length).toBe(journalWrites.mock.calls.length);
    expect(await restart()).toHaveLength(30);
  });

  it('shares incoming/ fsyncs and journal writes between concurrent commits of large messages', async () => {
    const proto = await fileHandlePrototype();
    const written = await Promise.all(Array.from({ length: 30 }, (_, i) => write(`Subject: ${i}\r\n\r\n${BIG}\r\n`)));
    vi.mocked(fsp.open).mockClear();
    // The messages' own writes are done: every writev from here on is the journal's.
    const journalWrites = vi.spyOn(proto, 'writev');
    const dirSyncs = vi.spyOn(proto, 'sync');
    const msgs = await Promise.all(written.map(({ writer, outcome }) => spool.commit(writer, outcome.size, outcome.sha256, envelope, 'now')));
    expect(new Set(msgs.map((m) => m.id)).size).toBe(30);
    expect(journalLines().map((r) => r.id).sort()).toEqual(msgs.map((m) => m.id).sort());
    // incoming/ (and journal/, once, for its new segment), through one handle kept open.
    expect(dirSyncs.mock.calls.length).toBeGreaterThanOrEqual(2);
    expect(dirSyncs.mock.calls.length).toBeLessThan(30);
    expect(vi.mocked(fsp.open).mock.calls.filter(([p]) => p === spool.incomingDir)).toHaveLength(1);
    expect(journalWrites.mock.calls.length).toBeGreaterThanOrEqual(1);
    expect(journalWrites.mock.calls.length).toBeLessThan(30);
    expect(await restart()).toHaveLength(30);
  });

  it('does not resolve, and leaves no counted entry, when the envelope record cannot be written; the next commit uses a new segment', async () => {
    const proto = await fileHandlePrototype();
    const { writer, outcome } = await write('Subject: x\r\n\r\ny\r\n');
    // A small message has no sync of its own: the next one is the journal's.
    vi.spyOn(proto, 'datasync').mockRejectedValueOnce(Object.assign(new Error('EIO'), { code: 'EIO' }));
    await expect(spool.commit(writer, outcome.size, outcome.sha256, envelope, 'now')).rejects.toThrow('EIO');
    vi.restoreAllMocks();
    expect(readdirSync(spool.incomingDir)).toEqual([]);
    const second = await write('Subject: second\r\n\r\ny\r\n');
    const msg = await spool.commit(second.writer, second.outcome.size, second.outcome.sha256, envelope, 'now');
    // The failed segment may end in a torn line: nothing more goes into it, and as it holds no
    // live record it is gone.
    expect(readdirSync(spool.journalDir)).toEqual(['000000000002.log']);
    expect(await restart()).toEqual([msg]);
  });

  it('writes a tombstone again, into a new segment, when its batch fails', async () => {
    const proto = await fileHandlePrototype();
    const { writer, outcome } = await write('Subject: refused\r\n\r\ny\r\n');
    const msg = await spool.commit(writer, outcome.size, outcome.sha256, envelope, 'now');
    vi.spyOn(proto, 'datasync').mockRejectedValueOnce(Object.assign(new Error('EIO'), { code: 'EIO' }));
    await spool.release(msg);
    vi.restoreAllMocks();
    // Segment 1 (the record, perhaps a torn tombstone) is retired and, holding nothing live, deleted.
    await vi.waitFor(() => expect(readdirSync(spool.journalDir)).toEqual(['000000000002.log']));
    expect(readFileSync(join(spool.journalDir, '000000000002.log'), 'utf8')).toBe(`${JSON.stringify({ id: msg.id, file: msg.file, released: true })}\n`);
    expect(await restart()).toEqual([]);
  });

  it('a large message whose incoming/ sync fails holds no journal segment', async () => {
    const original = DirectorySync.prototype.sync;
    let failed = false;
    vi.spyOn(DirectorySync.prototype, 'sync').mockImplementation(async function (this: DirectorySync) {
      if (this.path === spool.incomingDir && !failed) {
        failed = true;
        throw Object.assign(new Error('EIO'), { code: 'EIO' });
      }
      return original.call(this);
    });
    const { writer, outcome } = await write(`Subject: x\r\n\r\n${BIG}\r\n`);
    await expect(spool.commit(writer, outcome.size, outcome.sha256, envelope, 'now')).rejects.toThrow('EIO');
    vi.restoreAllMocks();
    expect(failed).toBe(true);
    expect(readdirSync(spool.incomingDir)).toEqual([]);
    // Its record was written, but it counts for nothing: the segment goes once it is finished.
    await spool.close();
    await vi.waitFor(() => expect(readdirSync(spool.journalDir)).toEqual([]));
  });

  describe('recovery', () => {
    async function commitOne(subject: string, body = 'x') {
      const { writer, outcome } = await write(`Subject: ${subject}\r\n\r\n${body}\r\n`);
      return spool.commit(writer, outcome.size, outcome.sha256, envelope, 'now');
    }

    it('skips released messages, carries the live records over to a new segment and deletes the old ones', async () => {
      const [a, b, c, d] = [await commitOne('a'), await commitOne('b'), await commitOne('c', BIG), await commitOne('d', BIG)];
      await spool.release(b);
      await spool.release(d);
      await spool.close(); // writes b's tombstone
      expect(readdirSync(spool.journalDir)).toEqual(['000000000001.log']);
      expect(journalLines().at(-1)).toEqual({ id: b.id, file: b.file, released: true });
      const next = opened(new Spool(dir));
      await next.init();
      expect(await next.recover()).toEqual([a, c]);
      expect(readdirSync(spool.journalDir)).toEqual(['000000000002.log']);
      expect(journalLines().map((r) => r.id)).toEqual([a.id, c.id]);
      expect(readdirSync(spool.incomingDir)).toEqual([`${c.id}.eml`]);
      // Released after recovery: nothing is left to recover.
      await next.release(a);
      await next.release(c);
      await next.close();
      const third = opened(new Spool(dir));
      await third.init();
      expect(await third.recover()).toEqual([]);
    });

    it('skips a torn last line, removes files without a record, and ignores records without a file', async () => {
      const a = await commitOne('a');
      const b = await commitOne('b', BIG);
      const c = await commitOne('c', BIG);
      await spool.close();
      // A crash in the middle of an append, and a message renamed into incoming/ whose record
      // was never written (the client was not answered).
      appendFileSync(join(spool.journalDir, '000000000001.log'), '{"id":"01J');
      const orphan = `${newMessageId()}.eml`;
      writeFileSync(join(spool.incomingDir, orphan), 'Subject: never answered\r\n\r\n');
      rmSync(b.raw.path!);
      const next = opened(new Spool(dir));
      await next.init();
      expect(await next.recover()).toEqual([a, c]);
      expect(readdirSync(spool.incomingDir)).toEqual([`${c.id}.eml`]);
    });

    it('never trusts a record that names a file outside incoming/ or another message, or whose bytes do not match', async () => {
      const a = await commitOne('a', BIG);
      await spool.close();
      const other = newMessageId();
      const third = newMessageId();
      writeFileSync(join(spool.incomingDir, `${other}.eml`), 'x');
      const forged = [
        { ...journalLines()[0], file: '../tmp/x.eml' },
        { ...journalLines()[0], id: a.id, file: `${other}.eml` },
        // Bytes in the record that are not what its size and sha256 say.
        { ...journalLines()[0], id: third, file: `${third}.eml`, data: Buffer.from('Subject: forged\r\n\r\n').toString('base64') },
      ];
      appendFileSync(join(spool.journalDir, '000000000001.log'), forged.map((r) => `${JSON.stringify(r)}\n`).join(''));
      const next = opened(new Spool(dir));
      await next.init();
      expect(await next.recover()).toEqual([a]);
    });

    it('recovers an entry of a version before the journal (<id>.eml with <id>.json)', async () => {
      const id = newMessageId();
      const fields = { id, receivedAt: 'then', envelope, size: 3, sha256: 'x'.repeat(64) };
      writeFileSync(join(spool.incomingDir, `${id}.eml`), 'a\r\n');
      writeFileSync(join(spool.incomingDir, `${id}.json`), JSON.stringify({ ...fields, rawPath: '/elsewhere' }));
      const next = opened(new Spool(dir));
      await next.init();
      expect(await next.recover()).toEqual([{ ...fields, file: `${id}.eml`, raw: { path: join(spool.incomingDir, `${id}.eml`) } }]);
      expect(readdirSync(spool.incomingDir)).toEqual([`${id}.eml`]);
      expect(journalLines().map((r) => r.file)).toEqual([`${id}.eml`]);
    });

    it('rotates segments and deletes finished ones oldest first, never past one still holding a live record', async () => {
      spool = opened(new Spool(dir, { segmentMaxBytes: 1 }));
      await spool.init();
      const a = await commitOne('a');
      const b = await commitOne('b');
      expect(readdirSync(spool.journalDir).sort()).toEqual(['000000000001.log', '000000000002.log']);
      await spool.release(a); // its tombstone fills segment 3
      await spool.close();
      // Segment 1 goes; 3 (only a tombstone) stays behind 2, which b still needs.
      await vi.waitFor(() => expect(readdirSync(spool.journalDir).sort()).toEqual(['000000000002.log', '000000000003.log']));
      const next = opened(new Spool(dir));
      await next.init();
      expect(await next.recover()).toEqual([b]);
      expect(readdirSync(spool.journalDir)).toEqual(['000000000004.log']);
    });

    it('compacts a segment held back by one live record, so the journal stays small while that message stays', async () => {
      spool = opened(new Spool(dir, { segmentMaxBytes: 1 })); // a segment per batch
      await spool.init();
      const pinned = await commitOne('pinned'); // its store commit keeps failing, say
      for (let i = 0; i < 20; i++) await spool.release(await commitOne(`m${i}`));
      // Without compaction, all 41 segments would wait for the first one.
      await vi.waitFor(() => expect(readdirSync(spool.journalDir).length).toBeLessThanOrEqual(8));
      // The pinned record was copied forward, with its bytes.
      expect(journalLines().filter((r) => r.id === pinned.id && !r.released).length).toBeGreaterThanOrEqual(1);
      await spool.close();
      expect(await restart()).toEqual([pinned]);
    });

    it('a message released while compaction copies its record stays released: a second tombstone follows the copy', async () => {
      spool = opened(new Spool(dir, { segmentMaxBytes: 1 }));
      await spool.init();
      const pinned = await commitOne('pinned');
      const proto = await fileHandlePrototype();
      const writev = proto.writev;
      let releasing: Promise<void> | null = null;
      // Hold the write of the copy until the message is released.
      vi.spyOn(proto, 'writev').mockImplementation(async function (this: fsp.FileHandle, buffers: NodeJS.ArrayBufferView[], position?: number) {
        const text = Buffer.concat(buffers as Buffer[]).toString();
        if (!releasing && text.includes(`"file":"${pinned.file}"`) && text.includes('"data"')) releasing = spool.release(pinned);
        return writev.call(this, buffers, position);
      } as typeof writev);
      for (let i = 0; i < 8; i++) await spool.release(await commitOne(`m${i}`));
      await vi.waitFor(() => expect(releasing).not.toBeNull());
      await releasing;
      await spool.close();
      vi.restoreAllMocks();
      // The copy was not counted as live (nothing holds a segment), and a tombstone follows it.
      await vi.waitFor(() => expect(readdirSync(spool.journalDir)).toEqual([]));
      expect(await restart()).toEqual([]);
    });

    it('keeps a tombstone while the record it releases is on disk: a released message never comes back', async () => {
      spool = opened(new Spool(dir, { segmentMaxBytes: 1 }));
      await spool.init();
      // One batch, so both records share segment 1; then `pinned` stays live (its store commit failed).
      const [rejected, pinned] = await Promise.all([commitOne('rejected'), commitOne('pinned')]);
      expect(readdirSync(spool.journalDir)).toEqual(['000000000001.log']);
      await spool.release(rejected); // answered 550: its tombstone is segment 2, retired at once
      const later = await commitOne('later'); // segment 3
      await spool.release(later); // tombstone: segment 4
      await spool.close();
      // Without the tombstone in segment 2, the next start would store the rejected message.
      expect(readdirSync(spool.journalDir).sort()).toEqual(['000000000001.log', '000000000002.log', '000000000003.log', '000000000004.log']);
      const next = opened(new Spool(dir));
      await next.init();
      expect(await next.recover()).toEqual([pinned]);
    });

    it('release() resolves once the tombstone is written, so a crash right after a 4xx/5xx reply cannot bring the message back', async () => {
      const m = await commitOne('refused');
      await spool.release(m);
      // Not closed: what a SIGKILL now would leave on disk.
      expect(journalLines().at(-1)).toEqual({ id: m.id, file: m.file, released: true });
      const recovered = await restart();
      expect(recovered).toEqual([]);
    });

    it('releaseStored() does not wait for the tombstone; close() writes it', async () => {
      const [m, kept] = await Promise.all([commitOne('stored'), commitOne('kept')]);
      spool.releaseStored(m);
      expect(journalLines().map((r) => r.released ?? false)).toEqual([false, false]);
      await spool.close();
      expect(journalLines().at(-1)).toEqual({ id: m.id, file: m.file, released: true });
      expect(await restart()).toEqual([kept]);
    });

    it('skips a record whose envelope or fields have the wrong types, bytes verified or not', async () => {
      const a = await commitOne('a');
      const b = await commitOne('b');
      await spool.close();
      const lines = journalLines();
      const broken = [
        { ...lines[0], envelope: { ...envelope, rcptTo: 'not-a-list' } },
        { ...lines[1], envelope: undefined },
      ];
      // Later records of the same ids supersede the good ones.
      appendFileSync(join(spool.journalDir, '000000000001.log'), broken.map((r) => `${JSON.stringify(r)}\n`).join(''));
      expect([a.id, b.id]).toEqual([lines[0]!.id, lines[1]!.id]);
      expect(await restart()).toEqual([]);
    });
  });

  describe('replace (an eom hook edited the message, before any reply)', () => {
    const edited: Envelope = { ...envelope, rcptTo: ['kept@example.net'] };

    async function rewrite(id: string, body: string) {
      const writer = spool.writer(id, { maxSize: 1 << 20, bareNewline: 'reject' });
      writer.end(Buffer.from(body));
      await once(writer, 'finish');
      const outcome = writer.outcome();
      if (outcome.kind !== 'ok') throw new Error(outcome.kind);
      return { writer, outcome };
    }

    it('leaves one consistent entry: the new bytes with the new envelope', async () => {
      const { writer, outcome } = await write('Subject: old\r\n\r\nx\r\n');
      const first = await spool.commit(writer, outcome.size, outcome.sha256, envelope, 'now');
      const again = await rewrite(first.id, 'Subject: new\r\n\r\nx\r\n');
      const msg = await spool.replace(first, again.writer, again.outcome.size, again.outcome.sha256, edited);
      expect(readdirSync(spool.tmpDir)).toEqual([]);
      // A new name; the old record has its tombstone, written before the new record.
      expect(msg.file).toBe(`${msg.id}.1.eml`);
      expect(journalLines().map((r) => [r.file, r.released ?? false])).toEqual([
        [first.file, false],
        [first.file, true],
        [msg.file, false],
      ]);
      expect(await restart()).toEqual([msg]);
      expect(msg.raw.bytes?.toString()).toBe('Subject: new\r\n\r\nx\r\n');
      expect(msg).toMatchObject({ envelope: edited, sha256: again.outcome.sha256 });
    });

    it('replaces a large message: a new file, the old one gone', async () => {
      const { writer, outcome } = await write(`Subject: old\r\n\r\n${BIG}\r\n`);
      const first = await spool.commit(writer, outcome.size, outcome.sha256, envelope, 'now');
      const again = await rewrite(first.id, `Subject: new\r\n\r\n${BIG}\r\n`);
      const msg = await spool.replace(first, again.writer, again.outcome.size, again.outcome.sha256, edited);
      // The old record, still in the journal, names a file that is gone.
      expect(readdirSync(spool.incomingDir)).toEqual([`${msg.id}.1.eml`]);
      expect(await restart()).toEqual([msg]);
      expect(readFileSync(msg.raw.path!, 'utf8')).toBe(`Subject: new\r\n\r\n${BIG}\r\n`);
    });

    it('a crash before the new record is written never pairs the new bytes with the old envelope record', async () => {
      const { writer, outcome } = await write(`Subject: old\r\n\r\n${BIG}\r\n`);
      const first = await spool.commit(writer, outcome.size, outcome.sha256, envelope, 'now');
      const again = await rewrite(first.id, `Subject: new, for fewer recipients\r\n\r\n${BIG}\r\n`);
      // The process dies right after the message file is renamed into incoming/: the rename
      // happens, nothing after it does.
      const realRename = (await vi.importActual<typeof import('node:fs/promises')>('node:fs/promises')).rename;
      vi.mocked(fsp.rename).mockImplementationOnce(async (from, to) => {
        await realRename(from, to);
        expect(String(to)).toBe(join(spool.incomingDir, `${first.id}.1.eml`));
        throw new Error('simulated crash');
      });
      await expect(spool.replace(first, again.writer, again.outcome.size, again.outcome.sha256, edited)).rejects.toThrow('simulated crash');
      // The next start: the client was never answered (eom runs before the reply), so dropping
      // the entry is right; recovering the old envelope with the edited bytes is not.
      const recovered = await restart();
      for (const m of recovered) {
        expect(createHash('sha256').update(readFileSync(m.raw.path!)).digest('hex')).toBe(m.sha256);
      }
      expect(recovered).toEqual([]);
      expect(readdirSync(spool.incomingDir)).toEqual([]);
    });
  });

  it('does not resolve when a large message file cannot be synced', async () => {
    const proto = await fileHandlePrototype();
    vi.spyOn(proto, 'datasync').mockRejectedValueOnce(Object.assign(new Error('EIO'), { code: 'EIO' }));
    const { writer, outcome } = await write(`Subject: x\r\n\r\n${BIG}\r\n`);
    await expect(spool.commit(writer, outcome.size, outcome.sha256, envelope, 'now')).rejects.toThrow('EIO');
    expect(readdirSync(spool.incomingDir)).toEqual([]);
    await spool.discard(writer.id);
    expect(readdirSync(spool.tmpDir)).toEqual([]);
  });
});

describe('SpoolWriter destroyed mid-message', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'mailwire-spool-writer-'));
  });
  afterEach(() => {
    vi.mocked(fsp.open).mockClear();
    rmSync(dir, { recursive: true, force: true });
  });

  /** The descriptors of this process open on `path` (deleted or not). */
  function handlesOn(path: string): string[] {
    return readdirSync('/proc/self/fd')
      .map((fd) => {
        try {
          return readlinkSync(`/proc/self/fd/${fd}`);
        } catch {
          return '';
        }
      })
      .filter((target) => target.startsWith(path));
  }

  it('while its file is being created (a client gone as the message passes 64 KiB): the file is closed and removed', async () => {
    const spool = new Spool(dir);
    await spool.init();
    const actual = await vi.importActual<typeof import('node:fs/promises')>('node:fs/promises');
    let letOpen!: () => void;
    const gate = new Promise<void>((r) => (letOpen = r));
    vi.mocked(fsp.open).mockImplementationOnce(async (...args: Parameters<typeof actual.open>) => {
      await gate;
      return actual.open(...args);
    });
    const writer = spool.writer(newMessageId(), { maxSize: 1 << 20, bareNewline: 'reject' });
    await tick();
    writer.write(Buffer.alloc(INLINE_MAX + 1, 0x61)); // past the in-memory limit: the file is opened
    expect(vi.mocked(fsp.open).mock.calls.map((c) => c[0])).toEqual([writer.tmpPath]);
    writer.destroy();
    letOpen();
    await once(writer, 'close');
    expect(handlesOn(writer.tmpPath)).toEqual([]);
    expect(readdirSync(spool.tmpDir)).toEqual([]);
    await spool.close();
  });
});

describe('SpoolJournal compaction', () => {
  let dir: string;
  let journal: SpoolJournal;
  let writes = 0;
  let failWrite: (lines: number) => boolean = () => false;

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'mailwire-journal-'));
    writes = 0;
    failWrite = () => false;
    const fh = await fsp.open(dir, 'r');
    const proto = Object.getPrototypeOf(fh) as fsp.FileHandle;
    await fh.close();
    const writev = proto.writev;
    vi.spyOn(proto, 'writev').mockImplementation(async function (this: fsp.FileHandle, buffers: NodeJS.ArrayBufferView[], position?: number) {
      writes++;
      if (failWrite(Buffer.concat(buffers as Buffer[]).toString().split('\n').length - 1)) throw Object.assign(new Error('EIO'), { code: 'EIO' });
      return writev.call(this, buffers, position);
    } as typeof writev);
  });
  afterEach(async () => {
    failWrite = () => false;
    await journal.close();
    vi.restoreAllMocks();
    rmSync(dir, { recursive: true, force: true });
  });

  async function open(segmentMaxBytes: number) {
    journal = new SpoolJournal(dir, { segmentMaxBytes });
    await journal.init();
  }
  const record = (data: string) => {
    const id = newMessageId();
    return { id, file: `${id}.eml`, data };
  };
  async function liveAfterRestart(): Promise<Set<string>> {
    await journal.close();
    const next = new SpoolJournal(dir);
    await next.init();
    return new Set((await next.readPrevious()).map((r) => r.id));
  }

  it('close waits for records still waiting for their batch, then refuses new ones', async () => {
    await open(1_000_000);
    // Same turn of the loop: the batch holding it has not started when close() is called.
    const r = record('late');
    const appended = journal.append(r);
    let written = false;
    void appended.then(() => (written = true));
    const closed = journal.close();
    await expect(journal.append(record('after'))).rejects.toThrow(/spool journal is closed/);
    await closed;
    expect(written).toBe(true);
    await appended;
    // Written into a segment close() then closed: readable by the next start, and no handle left
    // open (the directory holds that one segment only).
    expect(readdirSync(dir).length).toBe(1);
    expect(await liveAfterRestart()).toEqual(new Set([r.id]));
  });

  it('a release once close has written what was asked for is refused, not written into a segment nobody closes', async () => {
    await open(1_000_000);
    const r = record('x');
    await journal.append(r);
    const closed = journal.close();
    await new Promise((resolve) => setImmediate(resolve));
    await expect(journal.release(r.id, r.file)).rejects.toThrow(/spool journal is closed/);
    await closed;
    // No tombstone (and no new segment for it); the segment held only this record, so the
    // release still took effect by removing it.
    expect(readdirSync(dir)).toEqual([]);
    expect(await liveAfterRestart()).toEqual(new Set());
  });

  it('oldestRecordTime: the oldest receivedAt of any record on disk, kept across compaction and recovery', async () => {
    await open(1_000);
    expect(journal.oldestRecordTime()).toBe(Infinity);
    const day1 = '2026-12-01T00:00:00.000Z';
    const day2 = '2026-12-02T00:00:00.000Z';
    // Each record fills a segment: the second goes into a new one.
    const first = { ...record('x'.repeat(1500)), receivedAt: day1 };
    const second = { ...record('y'.repeat(1500)), receivedAt: day2 };
    await journal.append(first);
    expect(journal.oldestRecordTime()).toBe(Date.parse(day1));
    await journal.append(second);
    expect(readdirSync(dir).length).toBe(2);
    expect(journal.oldestRecordTime()).toBe(Date.parse(day1));
    // The first segment goes once its record is released; its tombstone does not count.
    await journal.release(first.id, first.file);
    await vi.waitFor(() => expect(journal.oldestRecordTime()).toBe(Date.parse(day2)));
    // At the next start the old segments count as oldest (0) until recovery rewrote and deleted
    // them; the rewritten record keeps its receivedAt, not the time it was written again.
    await journal.close();
    journal = new SpoolJournal(dir);
    await journal.init();
    expect(journal.oldestRecordTime()).toBe(0);
    const live = await journal.readPrevious();
    expect(live.map((r) => r.id)).toEqual([second.id]);
    for (const r of live) await journal.append(r);
    expect(journal.oldestRecordTime()).toBe(0);
    await journal.dropPrevious();
    expect(journal.oldestRecordTime()).toBe(Date.parse(day2));
    // A record without a readable receivedAt counts as the oldest possible.
    await journal.append(record('z'));
    expect(journal.oldestRecordTime()).toBe(0);
  });

  it('rotates a segment open longer than its maximum age, so a quiet server does not keep one for days', async () => {
    journal = new SpoolJournal(dir, { segmentMaxAgeMs: 1000 });
    await journal.init();
    const a = { ...record('a'), receivedAt: '2026-12-01T00:00:00.000Z' };
    const b = { ...record('b'), receivedAt: '2026-12-02T00:00:00.000Z' };
    const c = { ...record('c'), receivedAt: '2026-12-02T00:00:01.000Z' };
    await journal.append(a);
    await journal.append(b);
    const [first] = readdirSync(dir);
    expect(readdirSync(dir)).toEqual([first]);
    await new Promise((r) => setTimeout(r, 1100));
    await journal.append(c);
    expect(readdirSync(dir)).toHaveLength(2);
    // The old segment goes once what it holds is released, and the bound moves with it.
    await journal.release(a.id, a.file);
    await journal.release(b.id, b.file);
    await vi.waitFor(() => expect(journal.oldestRecordTime()).toBe(Date.parse(c.receivedAt)));
    expect(readdirSync(dir)).not.toContain(first);
  });

  it('leaves segments whose records are all live alone: copying them would free nothing', async () => {
    await open(10_000);
    for (let i = 0; i < 80; i++) await journal.append(record('x'.repeat(1000)));
    const before = writes;
    await new Promise((r) => setTimeout(r, 300));
    expect(writes).toBe(before);
    expect(readdirSync(dir).length).toBeGreaterThanOrEqual(8);
  });

  it('a failed batch of copies never turns a live record into a released one', async () => {
    await open(60_000);
    // 300 messages accepted together: two batches (256 + 44) in segment 1, none stored yet.
    const live = Array.from({ length: 300 }, () => record('x'.repeat(60)));
    await Promise.all(live.map((r) => journal.append(r)));
    let armed = true; // one write error, on the first batch of compaction copies
    failWrite = (lines) => {
      if (!armed || lines < 200) return false;
      armed = false;
      return true;
    };
    // Segment 1 fills up and 5 more follow, their messages released: compaction starts.
    for (let i = 0; i < 14; i++) {
      const r = record('p'.repeat(59_000));
      if (await journal.append(r).then(() => true, () => false)) await journal.release(r.id, r.file);
    }
    await vi.waitFor(() => expect(armed).toBe(false));
    await new Promise((r) => setTimeout(r, 300));
    const recovered = await liveAfterRestart();
    expect(live.filter((r) => !recovered.has(r.id))).toEqual([]);
  });

  it('after a failed compaction, waits before trying again (a full disk does not make it spin)', async () => {
    await open(1);
    const pinned = record('pinned');
    await journal.append(pinned);
    for (let i = 0; i < 6; i++) {
      const r = record('m');
      await journal.append(r);
      await journal.release(r.id, r.file);
    }
    failWrite = () => true; // the disk fills up
    const r = record('m');
    await journal.append(r).catch(() => {});
    const [w0, files0] = [writes, readdirSync(dir).length];
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(writes - w0).toBeLessThanOrEqual(2);
    expect(readdirSync(dir).length - files0).toBeLessThanOrEqual(2);
    failWrite = () => false;
    expect(await liveAfterRestart()).toEqual(new Set([pinned.id]));
  });
});
