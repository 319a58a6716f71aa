/**
 * The spool journal: the records of spooled messages, appended to a log and made durable in
 * groups.
 *
 * Each spooled message used to have its own envelope file next to its bytes, written with
 * O_DSYNC: a file create, a synchronous write (a file-system journal commit of its own), a
 * close, a rename and, later, an unlink, for every message. Here the records of every message
 * committed at the same time share one write and one fdatasync (GroupCommit):
 *
 *   journal/000000000001.log   {"id":…,"file":"<id>.eml","envelope":…}\n …   (one JSON line per record)
 *
 * Two kinds of entries:
 * - A message of up to 64 KiB carries its bytes in the record (`data`, base64): it has no file
 *   at all, so the 250 waits for no per-message create, sync, rename or directory entry, which
 *   on ext4 each wait for the file system's own journal. It is released by appending a
 *   tombstone (`released: true`) for its `file` name; recovery skips a record with a tombstone.
 *   The tombstone is not waited for: lost in a crash, it only makes recovery process the
 *   message again, which is idempotent (the store keeps one event per id).
 * - A larger message is a file in incoming/, and its record counts only while that file is
 *   there: the spool unlinks the file to release it.
 * Names (`<id>.eml`, `<id>.<n>.eml` after the n-th rewrite) are never reused for other bytes,
 * so a stale record or tombstone can never describe the wrong message.
 *
 * Segments: appends go to the current segment until it passes SEGMENT_MAX_BYTES, then to a new
 * one. Finished segments are deleted oldest first, each once every message it recorded is
 * released and every older segment is gone, with the directory synced after each deletion. The
 * order matters: a tombstone is in a newer segment than its record, and deleting the newer one
 * first (or a crash that kept the older deletion but not the newer one) would bring the released
 * message back at the next start, rejected mail included. A segment still holding a live record
 * (a message the store keeps failing to take, or one that takes long to process) holds back the
 * deletion of the newer ones; once more than COMPACT_AFTER segments wait behind it, its live
 * records are appended again to the current segment (compaction), so that it and the ones behind
 * it can go. At start, the live records of the previous run's segments are appended again to a
 * new segment, and the old segments deleted, so after a restart the journal holds only what is
 * live plus one segment.
 *
 * A crash can leave a torn last line (never one that was acknowledged: the fdatasync comes
 * first); a segment is never appended to after a failed write or after a restart, so a torn
 * line is always the last of its segment, and readers skip lines that do not parse.
 */
import { open, readdir, readFile, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { isMessageId } from '../events/id.js';
import { DirectorySync, ignoreMissing, writeAll } from '../util/fs.js';
import { GroupCommit } from '../util/group-commit.js';
import { InFlight } from '../util/in-flight.js';

/** What a record says about a message (its envelope and so on), and where its bytes are. */
export interface JournalRecord {
  id: string;
  /** The message's name (see spoolFileName): its file in incoming/, unless `data` is set. */
  file: string;
  /** The message's bytes, base64, for a message kept in the journal (it has no file). */
  data?: string;
  /** A tombstone: the message recorded under `file` was released. */
  released?: true;
  /** When the message began to arrive (ISO time): see oldestRecordTime(). */
  receivedAt?: string;
  [field: string]: unknown;
}

/** A segment is rotated once it passes this size: few segments, each quickly deleted. */
const SEGMENT_MAX_BYTES = 4 * 1024 * 1024;
/**
 * ...or, at the next write, once it has been open this long. On a quiet server 4 MiB takes days
 * to fill, and the open segment holds back oldestRecordTime(), so the event-log trim, for as
 * long. (With no write at all the open segment stays; it then holds back at most the entries
 * logged since its oldest record, and nothing new arrives to be trimmed but deletions.)
 */
const SEGMENT_MAX_AGE_MS = 60 * 60_000;
const SEGMENT_NAME = /^(\d{12})\.log$/;
/** Bounds one batch (and so one write) under load. */
const MAX_BATCH = 256;
/** Finished segments allowed to wait behind one still holding a live record before it is compacted. */
const COMPACT_AFTER = 4;
/**
 * Compaction copies a head segment's live records only when they are at most this share of the
 * bytes it frees (the head's released records and the finished segments right behind it that
 * would go with it). Live records behind live records (the store is down, a large backlog) free
 * nothing: copying them would only move them to the tail, again and again.
 */
const COMPACT_MAX_COPY_SHARE = 0.25;
/** After a compaction failed (disk full), none is tried for this long. */
const COMPACT_BACKOFF_MS = 5000;

/**
 * A message's file name in incoming/: `<id>.eml`, and `<id>.<n>.eml` for its n-th rewrite (eom
 * hook edits). Anything else found there is not ours to trust.
 */
const SPOOL_FILE = /^([0-9A-Z]{26})(?:\.([1-9]\d{0,2}))?\.eml$/;

export function spoolFileName(id: string, generation: number): string {
  return generation === 0 ? `${id}.eml` : `${id}.${generation}.eml`;
}

/** The id and generation a spool file name stands for, or null when it is not one. */
export function parseSpoolFileName(name: string): { id: string; generation: number } | null {
  const m = SPOOL_FILE.exec(name);
  if (!m || !isMessageId(m[1]!)) return null;
  return { id: m[1]!, generation: m[2] ? Number(m[2]) : 0 };
}

interface Segment {
  name: string;
  fh: FileHandle;
  bytes: number;
  /** A batch is being written into it: not to be deleted before it is counted. */
  writing: boolean;
  /** Records appended to it whose message is not released yet. */
  live: number;
  /** Their bytes (lines) in the segment. */
  liveBytes: number;
  /** No more appends: full, failed, or closed. Deleted once live reaches 0 and every older segment is gone. */
  retired: boolean;
  /**
   * The oldest receivedAt of the records written to it (ms since the epoch; 0 for a record
   * without one, Infinity while there is none). A record copied by compaction or rewritten at
   * recovery keeps its receivedAt, so this is never younger than the messages in the file.
   */
  oldestRecord: number;
  /** performance.now() when it was opened (rotation by age). */
  openedAt: number;
}

export interface JournalOptions {
  /** For tests: rotate sooner. */
  segmentMaxBytes?: number;
  /** For tests: rotate sooner. */
  segmentMaxAgeMs?: number;
}

export class SpoolJournal {
  readonly dir: string;
  readonly #segmentMax: number;
  readonly #segmentMaxAge: number;
  /** 0 until init() ran. */
  #nextSeq = 0;
  /** Segment files of a previous run, read by readPrevious() and deleted by dropPrevious(). */
  #previous: string[] = [];
  #current: Segment | null = null;
  /** This run's segments, oldest first, until deleted (see #collect). */
  readonly #segments: Segment[] = [];
  #collecting: Promise<void> | null = null;
  #collectAgain = false;
  /** A compaction in progress (close() waits for it). */
  #compacting: Promise<void> | null = null;
  /** performance.now() before which no compaction is started (after a failure). */
  #compactNotBefore = 0;
  #closing = false;
  /** close() has written what was asked for: nothing more is written. */
  #closed = false;
  /** Records appended again by compaction ─▶ the segment they are copied from. */
  readonly #moves = new WeakMap<JournalRecord, Segment>();
  readonly #dirSync: DirectorySync;
  /** Each live message's file name ─▶ the segment holding its record. */
  readonly #segmentOf = new Map<string, Segment>();
  /** Each live message's file name ─▶ the length of its record's line. */
  readonly #lineBytes = new Map<string, number>();
  /** Records and tombstones submitted and not yet written (see close()). */
  readonly #unwritten = new InFlight();
  readonly #batches = new GroupCommit<JournalRecord, void>((records) => this.#writeBatch(records), { maxBatch: MAX_BATCH });

  constructor(dir: string, options: JournalOptions = {}) {
    this.dir = dir;
    this.#dirSync = new DirectorySync(dir);
    this.#segmentMax = options.segmentMaxBytes ?? SEGMENT_MAX_BYTES;
    this.#segmentMaxAge = options.segmentMaxAgeMs ?? SEGMENT_MAX_AGE_MS;
  }

  /** Notes the previous run's segments; new records never go into them. */
  async init(): Promise<void> {
    const seqs = (await readdir(this.dir))
      .map((name) => SEGMENT_NAME.exec(name))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => Number(m[1]))
      .sort((a, b) => a - b);
    this.#previous = seqs.map(segmentName);
    this.#nextSeq = (seqs.at(-1) ?? 0) + 1;
  }

  /**
   * The live records of the previous run's segments: for each id its last record, unless a
   * tombstone released that record. Lines that do not parse (a torn last line) are skipped.
   * Two passes, one segment in memory at a time: the first collects the tombstones, the second
   * keeps only records without one, so memory holds what is live, not everything ever spooled.
   */
  async readPrevious(): Promise<JournalRecord[]> {
    if (this.#nextSeq === 0) throw new Error('spool journal: init() first');
    const released = new Set<string>();
    await this.#eachPrevious((r) => {
      if (r.released) released.add(recordKey(r));
    });
    const live = new Map<string, JournalRecord>();
    await this.#eachPrevious((r) => {
      if (r.released) return;
      // A later record of an id supersedes the earlier ones; a released one leaves none.
      if (released.has(recordKey(r))) live.delete(r.id);
      else live.set(r.id, r);
    });
    return [...live.values()];
  }

  async #eachPrevious(fn: (record: JournalRecord) => void): Promise<void> {
    for (const name of this.#previous) {
      // Gone since init(): a segment deleted once it held no live record (a late unlink).
      const text = await readFile(join(this.dir, name), 'utf8').catch((err: unknown) => (ignoreMissing(err), ''));
      for (const line of text.split('\n')) {
        const record = parseRecord(line);
        if (record) fn(record);
      }
    }
  }

  /** Deletes the previous run's segments (after their live records were appended again), oldest first. */
  async dropPrevious(): Promise<void> {
    for (const name of this.#previous) await this.#unlinkInOrder(name);
    this.#previous = [];
  }

  /**
   * Deletes a segment and makes that durable before the caller deletes a newer one: after a
   * crash, a newer segment's deletion (its tombstones gone) must never have survived without
   * the older one's (its records).
   */
  async #unlinkInOrder(name: string): Promise<void> {
    await unlink(join(this.dir, name)).catch(ignoreMissing);
    await this.#dirSync.sync();
  }

  /** Resolves once the record is durable. */
  append(record: JournalRecord): Promise<void> {
    if (this.#closing) return Promise.reject(new Error('spool journal is closed'));
    // close() waits for it: a batch written after close() would open a segment nobody closes.
    return this.#unwritten.track(this.#batches.submit(record));
  }

  /**
   * Releases a message whose bytes are in its record: appends a tombstone. Resolves once that is
   * durable, which only a caller about to write the same message again needs to wait for.
   */
  release(id: string, file: string): Promise<void> {
    this.forget(file);
    return this.#tombstone({ id, file, released: true });
  }

  #tombstone(tombstone: JournalRecord): Promise<void> {
    // After close(), a tombstone is not written: recovery processes the message again (idempotent).
    if (this.#closed) return Promise.reject(new Error('spool journal is closed'));
    // Once more when the batch failed (that segment is retired; the retry goes into a new one):
    // a tombstone not written lets a crash bring back a message the client was told was refused.
    return this.#unwritten.track(this.#batches.submit(tombstone).catch(() => this.#batches.submit(tombstone)));
  }

  /**
   * The oldest receivedAt (ms since the epoch) of any message record still on disk, released or
   * not; 0 while a previous run's segments remain (not known until they are gone); Infinity
   * when there is none. A record can outlive its message's release (a tombstone that could not
   * be written), and recovery would then commit that message again: the store's event-log trim
   * keeps the entries that make such a commit a no-op until this moves past them.
   */
  oldestRecordTime(): number {
    if (this.#previous.length > 0) return 0;
    return this.#segments.reduce((oldest, s) => Math.min(oldest, s.oldestRecord), Infinity);
  }

  /** The message whose record named `file` is released (its file is gone, or a tombstone is written). */
  forget(file: string): void {
    const segment = this.#segmentOf.get(file);
    if (!segment) return;
    this.#segmentOf.delete(file);
    segment.live--;
    segment.liveBytes -= this.#lineBytes.get(file) ?? 0;
    this.#lineBytes.delete(file);
    if (segment.live === 0) this.#collect();
  }

  /**
   * Refuses new records, then closes the current segment once the records and tombstones asked
   * for are written (at shutdown nobody waits for the tombstones otherwise); its file stays
   * while it holds records of unreleased messages.
   */
  async close(): Promise<void> {
    this.#closing = true;
    await this.#compacting;
    // Tombstones are still taken while closing (a release racing the stop): wait for those too.
    await this.#unwritten.settled();
    // From here a tombstone is refused: written after this, it would open a segment nobody closes.
    this.#closed = true;
    if (this.#current) await this.#retire(this.#current);
    while (this.#collecting) await this.#collecting;
    await this.#dirSync.close();
  }

  async #writeBatch(records: readonly JournalRecord[]): Promise<{ ok: true; value: undefined }[]> {
    const segment = await this.#segmentFor();
    // Before the write: from the moment the bytes may be on disk, the bound covers them.
    for (const r of records) if (!r.released) segment.oldestRecord = Math.min(segment.oldestRecord, receivedTime(r));
    const lines = records.map((r) => `${JSON.stringify(r)}\n`);
    const data = Buffer.from(lines.join(''));
    segment.writing = true;
    try {
      // The file is open with O_APPEND: every write goes to its end.
      await writeAll(segment.fh, [data]);
      await segment.fh.datasync();
    } catch (err) {
      segment.writing = false;
      // The segment may now end in a torn line: nothing more goes into it.
      void this.#retire(segment);
      throw err;
    }
    segment.writing = false;
    segment.bytes += data.length;
    for (const [i, r] of records.entries()) {
      if (r.released) continue;
      const from = this.#moves.get(r);
      if (from && this.#segmentOf.get(r.file) !== from) {
        // A compaction copy whose record is no longer where it was copied from. Released
        // meanwhile: the copy may be newer than the tombstone and would outlive it, so a second
        // tombstone follows it. Moved (another copy was counted first): this one just does not count.
        if (!this.#segmentOf.has(r.file)) void this.#tombstone({ id: r.id, file: r.file, released: true }).catch(() => {});
        continue;
      }
      // A re-append of the same file (a retry, a compaction) moves its record; the old one stays counted nowhere.
      this.forget(r.file);
      const bytes = Buffer.byteLength(lines[i]!);
      this.#segmentOf.set(r.file, segment);
      this.#lineBytes.set(r.file, bytes);
      segment.live++;
      segment.liveBytes += bytes;
    }
    if (segment.bytes >= this.#segmentMax) void this.#retire(segment);
    // Retired while this batch was written (close()): it may be done with now.
    if (segment.retired) this.#collect();
    return records.map(() => ({ ok: true, value: undefined }));
  }

  /** The segment the next batch goes into: a new one is created, and its name made durable. */
  async #segmentFor(): Promise<Segment> {
    const current = this.#current;
    if (current && !current.retired) {
      if (performance.now() - current.openedAt < this.#segmentMaxAge) return current;
      void this.#retire(current);
    }
    if (this.#nextSeq === 0) throw new Error('spool journal: init() first');
    const name = segmentName(this.#nextSeq++);
    const fh = await open(join(this.dir, name), 'ax', 0o600);
    const segment: Segment = { name, fh, bytes: 0, writing: false, live: 0, liveBytes: 0, retired: false, oldestRecord: Infinity, openedAt: performance.now() };
    // Listed before the sync: if that fails, the (empty) segment is retired and deleted in turn.
    this.#segments.push(segment);
    try {
      await this.#dirSync.sync();
    } catch (err) {
      void this.#retire(segment);
      throw err;
    }
    this.#current = segment;
    return segment;
  }

  /** No more appends go to the segment: its handle is closed now, its file kept while live. */
  #retire(segment: Segment): Promise<void> {
    if (segment.retired) return Promise.resolve();
    segment.retired = true;
    if (this.#current === segment) this.#current = null;
    const closed = segment.fh.close().catch(() => {});
    this.#collect();
    return closed;
  }

  /**
   * Deletes the finished segments at the old end of the journal: each retired one with no live
   * record, oldest first, stopping at the first that must stay (see the header). One run at a time.
   */
  #collect(): void {
    if (this.#collecting) {
      this.#collectAgain = true;
      return;
    }
    this.#collecting = (async () => {
      do {
        this.#collectAgain = false;
        for (let oldest = this.#segments[0]; oldest && oldest.retired && !oldest.writing && oldest.live === 0; oldest = this.#segments[0]) {
          try {
            await this.#unlinkInOrder(oldest.name);
          } catch {
            // Kept, and so are the newer ones; the next release tries again, the next start at the latest.
            return;
          }
          this.#segments.shift();
        }
      } while (this.#collectAgain);
      const head = this.#segments[0];
      if (head && head.retired && head.live > 0 && this.#segments.length > COMPACT_AFTER + 1 && head.liveBytes <= this.#freedByCompacting(head) * COMPACT_MAX_COPY_SHARE) {
        this.#compact(head);
      }
    })().finally(() => {
      this.#collecting = null;
      // Asked for between the last check of the loop and here: run again.
      if (this.#collectAgain) this.#collect();
    });
  }

  /** The bytes deleted once the head holds nothing live: its released records, and the finished segments behind it. */
  #freedByCompacting(head: Segment): number {
    let freed = head.bytes - head.liveBytes;
    for (let i = 1; i < this.#segments.length; i++) {
      const s = this.#segments[i]!;
      if (!s.retired || s.writing || s.live > 0) break;
      freed += s.bytes;
    }
    return freed;
  }

  /**
   * Appends the live records of a finished segment again, to the current one: a message whose
   * store commit keeps failing, or that takes long to process, must not keep every newer segment
   * on disk. The copies count instead of the originals once written (#writeBatch); the segment
   * then holds nothing live and is deleted in turn.
   */
  #compact(segment: Segment): void {
    if (this.#compacting || this.#closing || performance.now() < this.#compactNotBefore) return;
    this.#compacting = (async () => {
      const text = await readFile(join(this.dir, segment.name), 'utf8');
      const live = new Map<string, JournalRecord>();
      for (const line of text.split('\n')) {
        const r = parseRecord(line);
        if (r && !r.released && this.#segmentOf.get(r.file) === segment) live.set(r.file, r);
      }
      // Settled, not failed fast: the next compaction must not start while copies are still queued.
      const written = await Promise.allSettled(
        [...live.values()].map((r) => {
          this.#moves.set(r, segment);
          return this.#batches.submit(r);
        }),
      );
      if (written.some((w) => w.status === 'rejected')) throw new Error('compaction: a copy was not written');
    })().then(
      () => {
        this.#compacting = null;
        this.#collect();
      },
      () => {
        // Tried again at a later collection, not at once: a full disk would make this spin.
        this.#compacting = null;
        this.#compactNotBefore = performance.now() + COMPACT_BACKOFF_MS;
      },
    );
  }
}

/** What a tombstone names: one record of one message. */
/** A record's receivedAt in ms; 0 (the oldest possible) when it has none or it does not parse. */
function receivedTime(r: JournalRecord): number {
  const t = typeof r.receivedAt === 'string' ? Date.parse(r.receivedAt) : NaN;
  return Number.isFinite(t) ? t : 0;
}

function recordKey(r: JournalRecord): string {
  return `${r.id}/${r.file}`;
}

function segmentName(seq: number): string {
  return `${String(seq).padStart(12, '0')}.log`;
}

/** A record with the fields recovery relies on, or null. */
function parseRecord(line: string): JournalRecord | null {
  if (line.length === 0) return null;
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return null;
  }
  if (typeof value !== 'object' || value === null) return null;
  const r = value as JournalRecord;
  if (typeof r.id !== 'string' || typeof r.file !== 'string') return null;
  if (r.data !== undefined && typeof r.data !== 'string') return null;
  if (r.released !== undefined && r.released !== true) return null;
  const named = parseSpoolFileName(r.file);
  return named && named.id === r.id ? r : null;
}
