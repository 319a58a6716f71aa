/**
 * The durable spool: nothing is answered 250 before its bytes are on disk.
 *
 *   DATA ─▶ memory, up to 64 KiB (size + sha256 while streaming)
 *        └▶ beyond that: tmp/<id>.eml ─▶ fdatasync ─▶ rename into incoming/ ─▶ fsync(incoming/)
 *        ─▶ the message's record appended to journal/ and fdatasynced, shared with every message
 *           committed at the same time ─▶ the caller may answer
 *
 * A message of up to 64 KiB (INLINE_MAX: most mail) travels in its journal record (journal.ts),
 * so the way to its 250 holds no per-message file operation at all. On ext4 a file create,
 * rename, link or unlink each waits for the file system's own journal, which the constant
 * fsyncs of a busy server keep committing; with one file per message those waits, not the
 * work, set the rate. A larger message is a file, as DESIGN.md describes, and its record
 * counts while the file is in incoming/.
 *
 * Releasing a message is a tombstone in the journal, or the unlink of its file. Recovery on
 * start processes every live entry again and removes orphans. Events are idempotent by id. An
 * entry rewritten before the reply (eom hook edits) is replaced with replace(): the old entry
 * goes first, the new bytes get a new name.
 */
import { createHash, type Hash } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import type { Envelope } from '../events/types.js';
import { isMessageId } from '../events/id.js';
import { DirectorySync, ignoreMissing, writeAll } from '../util/fs.js';
import type { RawSource } from '../util/raw-source.js';
import { CoalescedSync } from './coalesced-sync.js';
import { parseSpoolFileName, spoolFileName, SpoolJournal, type JournalOptions, type JournalRecord } from './journal.js';
import { LineEndingScanner } from './line-endings.js';
import { InFlight } from '../util/in-flight.js';

export interface SpooledMessage {
  id: string;
  /** The entry's name (spoolFileName): its file in incoming/ for a file, its journal key otherwise. */
  file: string;
  /** Where the bytes are: in memory (and the journal) for a small message, else the file in incoming/. */
  raw: RawSource;
  receivedAt: string;
  envelope: Envelope;
  size: number;
  sha256: string;
  /**
   * Set for a message an SMTP client relays to a non-local recipient: it is handed to the relay
   * before the client gets any reply (the upstream's reply is the client's), so an entry found at
   * recovery was never answered 250 by us as local mail and must not be stored as such.
   */
  relay?: { rcpt: string };
}

export interface SpoolWriterOptions {
  /** Client bytes allowed (the trace header we add does not count). */
  maxSize: number;
  bareNewline: 'reject' | 'normalize';
  /** Written before the client's data: our Received: trace header (RFC 5321 4.4). */
  prefix?: Buffer;
}

export type SpoolWriteOutcome =
  | { kind: 'ok'; size: number; sha256: string }
  | { kind: 'too-big'; clientBytes: number }
  | { kind: 'bare-newline' };

/**
 * A message of up to this size (trace header included) is kept in memory and goes into its
 * journal record, with no file of its own; it stays in memory until it is processed. The 5 KB
 * of a typical message is far below; 64 KiB per session bounds what DATA holds in memory
 * (connections are limited), and keeps one record, base64 in a JSON line, at about 87 KiB.
 */
export const INLINE_MAX = 64 * 1024;

/**
 * Past INLINE_MAX, data is written to the file in batches of at least this much (or at the
 * end). Bounds the memory held per session.
 */
const WRITE_BATCH_BYTES = 64 * 1024;

/**
 * Receives message data, hashing and counting in the same pass: in memory while the message
 * fits INLINE_MAX, then into a temp file. Once the size limit is passed it stops keeping data
 * (the disk never holds more than maxSize) but keeps consuming, so the SMTP layer can read up
 * to the terminator and reply.
 */
export class SpoolWriter extends Writable {
  #fh: FileHandle | null = null;
  /** The file's open, while it runs (a destroy meanwhile must close what it returns). */
  #opening: Promise<FileHandle> | null = null;
  #hash: Hash = createHash('sha256');
  #size = 0;
  #clientBytes = 0;
  #scanner = new LineEndingScanner();
  #tooBig = false;
  /** Hashed and counted, not yet written: everything while the message fits INLINE_MAX. */
  #pending: Buffer[] = [];
  #pendingBytes = 0;
  /** At the end of a message that fit INLINE_MAX: all of it, and there is no file. */
  #inline: Buffer | null = null;
  /** The file's fdatasync, started at the end of the data; Spool.commit() waits for it. */
  #synced: Promise<void> | null = null;

  constructor(
    readonly id: string,
    readonly tmpPath: string,
    private readonly options: SpoolWriterOptions,
  ) {
    // 64 KiB chunks: fewer write syscalls for large messages, bounded memory per session.
    super({ highWaterMark: 64 * 1024 });
  }

  override _construct(callback: (err?: Error | null) => void): void {
    if (this.options.prefix?.length) this.#append(this.options.prefix);
    callback();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, callback: (err?: Error | null) => void): void {
    this.#clientBytes += chunk.length;
    if (this.#tooBig || this.#clientBytes > this.options.maxSize) {
      this.#tooBig = true;
      return callback();
    }
    const data = this.#scanner.scan(chunk, this.options.bareNewline === 'normalize');
    if (this.#scanner.bare && this.options.bareNewline === 'reject') return callback();
    this.#append(data);
    // The file exists only once the message is too big to stay in memory.
    if (this.#size <= INLINE_MAX || this.#pendingBytes < WRITE_BATCH_BYTES) return callback();
    this.#flush().then(() => callback(), callback);
  }

  override _final(callback: (err?: Error | null) => void): void {
    const tail = this.#scanner.end(this.options.bareNewline === 'normalize');
    if (this.#rejected()) return callback();
    this.#append(tail);
    if (this.#size <= INLINE_MAX) {
      // Durable with its journal record (Spool.commit).
      this.#inline = Buffer.concat(this.#pending, this.#pendingBytes);
      this.#pending = [];
      this.#synced = Promise.resolve();
      return callback();
    }
    this.#flush().then(() => {
      // The sync starts now but is not awaited here: Spool.commit() writes the envelope record
      // meanwhile and waits for both before the renames, so no 250 comes before it.
      const synced = this.#fh!.datasync();
      synced.catch(() => {}); // observed by commit(); never an unhandled rejection
      this.#synced = synced;
      callback();
    }, callback);
  }

  /** Resolves once a file's data is on disk (after 'finish', for an 'ok' outcome). */
  synced(): Promise<void> {
    return this.#synced ?? Promise.reject(new Error(`spool file ${this.id} was not completed`));
  }

  #rejected(): boolean {
    return this.#tooBig || (this.#scanner.bare && this.options.bareNewline === 'reject');
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    const fh = this.#fh;
    this.#fh = null;
    if (!fh && this.#opening) {
      // Destroyed (the client went away, a deadline) while the file was being created: the
      // message never finished, so the file is closed and removed once the open returns (the
      // caller's discard may have run before the file existed).
      const opening = this.#opening;
      opening
        .then((late) => late.close())
        .then(() => unlink(this.tmpPath))
        .catch(() => {})
        .then(() => callback(err));
      return;
    }
    if (!fh) return callback(err);
    // Streams destroy themselves right after 'finish': let a running sync end before the close.
    const synced = this.#synced ?? Promise.resolve();
    synced
      .catch(() => {})
      .then(() => fh.close())
      .then(() => callback(err), () => callback(err));
  }

  /** Hashes and counts data in order; it reaches the file with the next #flush(). */
  #append(data: Buffer): void {
    if (data.length === 0) return;
    this.#hash.update(data);
    this.#size += data.length;
    this.#pending.push(data);
    this.#pendingBytes += data.length;
  }

  async #flush(): Promise<void> {
    if (!this.#fh) {
      this.#opening = open(this.tmpPath, 'wx', 0o600);
      const fh = await this.#opening;
      this.#opening = null;
      if (this.destroyed) {
        // _destroy ran while the open was in flight: it closes this handle.
        throw new Error('spool writer destroyed');
      }
      this.#fh = fh;
    }
    const buffers = this.#pending;
    this.#pending = [];
    this.#pendingBytes = 0;
    await writeAll(this.#fh!, buffers);
  }

  /** After 'finish': the whole message when it fit INLINE_MAX (it then has no file), else null. */
  inlineBytes(): Buffer | null {
    return this.#rejected() ? null : this.#inline;
  }

  /** After 'finish': what was received (an 'ok' file is on disk once synced() resolves). */
  outcome(): SpoolWriteOutcome {
    if (this.#tooBig) return { kind: 'too-big', clientBytes: this.#clientBytes };
    if (this.#scanner.bare && this.options.bareNewline === 'reject') return { kind: 'bare-newline' };
    return { kind: 'ok', size: this.#size, sha256: this.#hash.copy().digest('hex') };
  }
}

export class Spool {
  readonly tmpDir: string;
  readonly incomingDir: string;
  readonly #incomingDirSync: DirectorySync;
  readonly #incomingSync: CoalescedSync;
  readonly #journal: SpoolJournal;
  /** releaseStored() unlinks still running (close() waits for them). */
  readonly #unlinking = new InFlight();

  constructor(dataDir: string, options: JournalOptions = {}) {
    this.tmpDir = join(dataDir, 'spool', 'tmp');
    this.incomingDir = join(dataDir, 'spool', 'incoming');
    this.#incomingDirSync = new DirectorySync(this.incomingDir);
    this.#incomingSync = new CoalescedSync(() => this.#incomingDirSync.sync());
    this.#journal = new SpoolJournal(join(dataDir, 'spool', 'journal'), options);
  }

  get journalDir(): string {
    return this.#journal.dir;
  }

  /** See SpoolJournal.oldestRecordTime(): no message still in the spool began to arrive before this. */
  oldestRecordTime(): number {
    return this.#journal.oldestRecordTime();
  }

  async init(): Promise<void> {
    for (const dir of [this.tmpDir, this.incomingDir, this.#journal.dir]) await mkdir(dir, { recursive: true, mode: 0o700 });
    // Anything in tmp/ was never answered 250: it is safe (and right) to drop.
    for (const name of await readdir(this.tmpDir)) await rm(join(this.tmpDir, name), { force: true, recursive: true });
    await this.#journal.init();
  }

  /** Closes the journal's open segment (at shutdown). */
  async close(): Promise<void> {
    await this.#unlinking.settled();
    await this.#journal.close();
    await this.#incomingDirSync.close();
  }

  writer(id: string, options: SpoolWriterOptions): SpoolWriter {
    if (!isMessageId(id)) throw new Error(`invalid spool id ${id}`);
    return new SpoolWriter(id, join(this.tmpDir, `${id}.eml`), options);
  }

  /** Makes a written message durable. Only after this resolves may the client get 250. */
  async commit(
    writer: SpoolWriter,
    size: number,
    sha256: string,
    envelope: Envelope,
    receivedAt: string,
    extra: Pick<SpooledMessage, 'relay'> = {},
  ): Promise<SpooledMessage> {
    return this.#commit(writer, 0, { id: writer.id, receivedAt, envelope, size, sha256, ...(extra.relay ? { relay: extra.relay } : {}) });
  }

  /**
   * Replaces a committed entry with a rewritten one of the same id (eom hook edits). Only for a
   * message not yet answered: the old entry goes first, durably, then the new one is committed
   * under a new name. A crash in between leaves no entry (the client, never answered, sends
   * again), and never the edited bytes under the old envelope record: recovery would store
   * those for recipients a hook removed, with a wrong size and sha256.
   */
  async replace(old: SpooledMessage, writer: SpoolWriter, size: number, sha256: string, envelope: Envelope): Promise<SpooledMessage> {
    if (writer.id !== old.id) throw new Error(`replace: ${writer.id} is not ${old.id}`);
    const generation = (parseSpoolFileName(old.file)?.generation ?? 0) + 1;
    await writer.synced();
    await this.release(old);
    return this.#commit(writer, generation, { id: old.id, receivedAt: old.receivedAt, envelope, size, sha256 });
  }

  async #commit(writer: SpoolWriter, generation: number, fields: Omit<SpooledMessage, 'file' | 'raw'>): Promise<SpooledMessage> {
    const file = spoolFileName(writer.id, generation);
    const bytes = writer.inlineBytes();
    if (bytes) {
      // One record holds the bytes and the envelope: durable together, in one shared sync.
      const msg: SpooledMessage = { ...fields, file, raw: { bytes } };
      await this.#journal.append(journalRecord(msg));
      return msg;
    }
    // The bytes durable (their sync runs since the end of DATA), then under their name in
    // incoming/, and that name durable together with the envelope record in the journal. The
    // two may finish in any order: a record whose file is not in incoming/ does not count.
    const path = join(this.incomingDir, file);
    const msg: SpooledMessage = { ...fields, file, raw: { path } };
    await writer.synced();
    await rename(writer.tmpPath, path);
    try {
      await settleBoth(this.#incomingSync.sync(), this.#journal.append(journalRecord(msg)));
    } catch (err) {
      // Not answered: the caller refuses the message. Without its file the entry never counts,
      // and it must not hold its segment either (a record written before the sync failed).
      await unlink(path).catch(() => {});
      this.#journal.forget(file);
      throw err;
    }
    return msg;
  }

  /** Drops a message that was not accepted (rejected, too big, client gone). */
  async discard(id: string): Promise<void> {
    await rm(join(this.tmpDir, `${id}.eml`), { force: true });
  }

  /**
   * Removes a spooled message that is not going to the store (refused at end of data, discarded
   * by a hook, relayed, replaced by its edited version), durably: recovery would otherwise store
   * it after a crash, mail the client was told was refused included.
   */
  async release(msg: Pick<SpooledMessage, 'id' | 'file' | 'raw'>): Promise<void> {
    if (msg.raw.bytes) return this.#journal.release(msg.id, msg.file);
    // Once its file is gone, the entry's journal record no longer counts.
    await unlink(msg.raw.path).catch(ignoreMissing);
    this.#journal.forget(msg.file);
    await this.#incomingSync.sync();
  }

  /**
   * Removes a spooled message the store has committed. Not waited for: lost in a crash, the
   * release only makes recovery commit the message again, which the store ignores (one event per
   * id), so the store commit's own sync is the only one on the way.
   */
  releaseStored(msg: Pick<SpooledMessage, 'id' | 'file' | 'raw'>): void {
    if (msg.raw.bytes) {
      this.#journal.release(msg.id, msg.file).catch(() => {});
      return;
    }
    void this.#unlinking.track(
      unlink(msg.raw.path)
        .catch(ignoreMissing)
        .then(() => this.#journal.forget(msg.file))
        .catch(() => {}),
    );
  }

  /**
   * Every message left in the spool by a previous run, oldest first. Their records are written
   * again to this run's journal and the previous segments deleted; files with no record (the
   * crash came before the reply, so the client retries) are removed.
   */
  async recover(): Promise<SpooledMessage[]> {
    const names = await readdir(this.incomingDir);
    const present = new Set(names);
    const byId = new Map<string, SpooledMessage>();
    for (const record of await this.#journal.readPrevious()) {
      if (record.released) {
        if (byId.get(record.id)?.file === record.file) byId.delete(record.id);
        continue;
      }
      const msg = this.#fromRecord(record, present);
      if (msg) byId.set(record.id, msg);
    }
    // Entries of versions before the journal: <id>.eml with its envelope in <id>.json.
    for (const name of names) {
      const id = name.endsWith('.json') ? name.slice(0, -5) : '';
      if (!isMessageId(id) || !present.has(`${id}.eml`) || byId.has(id)) continue;
      try {
        const { rawPath: _rawPath, ...fields } = JSON.parse(await readFile(join(this.incomingDir, name), 'utf8')) as Record<string, unknown>;
        const msg = { ...fields, id };
        if (hasEntryFields(msg)) byId.set(id, { ...msg, file: `${id}.eml`, raw: { path: join(this.incomingDir, `${id}.eml`) } });
      } catch {
        // A torn .json cannot happen (it was synced before its rename); skip defensively.
      }
    }
    const out = [...byId.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    await Promise.all(out.map((msg) => this.#journal.append(journalRecord(msg))));
    await this.#journal.dropPrevious();
    const live = new Set(out.filter((m) => m.raw.path).map((m) => m.file));
    // Now that the live records are in this run's journal: everything else in incoming/ goes
    // (files without a record, and the .json files of older versions).
    for (const name of names) {
      if (!live.has(name)) await unlink(join(this.incomingDir, name)).catch(ignoreMissing);
    }
    return out;
  }

  /** A live message from a previous run's record, or null (released, never answered, or damaged). */
  #fromRecord(record: JournalRecord, present: ReadonlySet<string>): SpooledMessage | null {
    const { file, data, released: _released, ...fields } = record;
    if (!hasEntryFields(fields)) return null;
    const msg = fields;
    if (data === undefined) return present.has(file) ? { ...msg, file, raw: { path: join(this.incomingDir, file) } } : null;
    const bytes = Buffer.from(data, 'base64');
    // The line parsed, so it is whole; the check guards against anything else having changed it.
    if (bytes.length !== msg.size || createHash('sha256').update(bytes).digest('hex') !== msg.sha256) return null;
    return { ...msg, file, raw: { bytes } };
  }
}

/**
 * Whether a record's fields are what a SpooledMessage needs, with the right types. A record that
 * parses but does not have them (damaged, or not ours) is skipped rather than handed to the
 * pipeline, where it would fail at every start.
 */
function hasEntryFields(f: Record<string, unknown>): f is Omit<SpooledMessage, 'file' | 'raw'> {
  const env = f.envelope as Partial<Envelope> | null | undefined;
  return (
    typeof f.id === 'string' &&
    typeof f.receivedAt === 'string' &&
    Number.isSafeInteger(f.size) &&
    typeof f.sha256 === 'string' &&
    typeof env === 'object' &&
    env !== null &&
    typeof env.mailFrom === 'string' &&
    Array.isArray(env.rcptTo) &&
    env.rcptTo.every((r) => typeof r === 'string') &&
    typeof env.remoteAddress === 'string' &&
    (f.relay === undefined || (typeof f.relay === 'object' && f.relay !== null && typeof (f.relay as { rcpt?: unknown }).rcpt === 'string'))
  );
}

/** The journal record of a spooled message: its bytes when it has no file. */
function journalRecord(msg: SpooledMessage): JournalRecord {
  const { raw, ...rest } = msg;
  return raw.bytes ? { ...rest, data: raw.bytes.toString('base64') } : rest;
}

/**
 * Like Promise.all for two, but waits for both to settle before rejecting: the caller's clean-up
 * after a failure never runs alongside the other operation.
 */
async function settleBoth(a: Promise<void>, b: Promise<void>): Promise<void> {
  const results = await Promise.allSettled([a, b]);
  for (const r of results) if (r.status === 'rejected') throw r.reason;
}
