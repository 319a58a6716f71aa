/**
 * The durable spool: nothing is answered 250 before its bytes are on disk.
 *
 *   DATA ─▶ tmp/<id>.eml (size + sha256 while streaming) ─▶ fdatasync ─▶ rename into incoming/
 *        ─▶ fsync(incoming/) and the envelope record appended to journal/ and fdatasynced,
 *           both shared with every message committed at the same time ─▶ the caller may answer
 *
 * An entry counts while its file is in incoming/ and its record is in the journal (journal.ts):
 * releasing a message is one unlink. Recovery on start processes every such entry again and
 * removes orphans. Events are idempotent by id. An entry rewritten before the reply (eom hook
 * edits) is replaced with replace(): the old file goes first, the new bytes get a new name.
 *
 * Cost per message on the way to the 250, which the client waits for and which occupies
 * libuv's threadpool: a typical message is one write; fdatasync, not fsync (it skips
 * timestamps, which nothing here reads, but still covers the file size); and the directory
 * fsync and the journal's write and fdatasync are shared by every message committed while the
 * previous ones ran (CoalescedSync, GroupCommit).
 */
import { createHash, type Hash } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm, unlink, type FileHandle } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { Writable } from 'node:stream';
import type { Envelope } from '../events/types.js';
import { isMessageId } from '../events/id.js';
import { DirectorySync, ignoreMissing, writeAll } from '../util/fs.js';
import { CoalescedSync } from './coalesced-sync.js';
import { parseSpoolFileName, spoolFileName, SpoolJournal, type JournalOptions, type JournalRecord } from './journal.js';
import { LineEndingScanner } from './line-endings.js';

export interface SpooledMessage {
  id: string;
  rawPath: string;
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
 * Data is written to the file in batches of at least this much (or at the end): a typical
 * message, trace header included, is one write syscall. Bounds the memory held per session.
 */
const WRITE_BATCH_BYTES = 64 * 1024;

/**
 * A message up to this size is also kept in memory until it is processed, so the parser need
 * not open and read back the file just written (a typical message; in the inbound bench those
 * reads were a tenth of the parse workers' time). The file stays the durable copy. Costs at
 * most 64 KiB more per session while DATA streams, and per message until it is processed.
 */
const MEMORY_COPY_MAX = 64 * 1024;

/** The in-memory copy of a committed message's bytes (see MEMORY_COPY_MAX); never serialised. */
const memoryCopies = new WeakMap<SpooledMessage, Buffer>();

/** The message's bytes when the spool still holds them in memory (small messages), else null. */
export function memoryCopy(msg: SpooledMessage): Buffer | null {
  return memoryCopies.get(msg) ?? null;
}

/**
 * Streams message data into a temp file, hashing and counting in the same pass. Once the size
 * limit is passed it stops writing (the disk never holds more than maxSize) but keeps
 * consuming, so the SMTP layer can read up to the terminator and reply.
 */
export class SpoolWriter extends Writable {
  #fh: FileHandle | null = null;
  #hash: Hash = createHash('sha256');
  #size = 0;
  #clientBytes = 0;
  #scanner = new LineEndingScanner();
  #tooBig = false;
  /** Hashed and counted, not yet written (see WRITE_BATCH_BYTES). */
  #pending: Buffer[] = [];
  #pendingBytes = 0;
  /** Everything appended while the message is at most MEMORY_COPY_MAX bytes; null beyond. */
  #copy: Buffer[] | null = [];
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
    open(this.tmpPath, 'wx', 0o600).then(
      (fh) => {
        this.#fh = fh;
        if (this.options.prefix?.length) this.#append(this.options.prefix);
        callback();
      },
      (err: Error) => callback(err),
    );
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
    if (this.#pendingBytes < WRITE_BATCH_BYTES) return callback();
    this.#flush().then(() => callback(), callback);
  }

  override _final(callback: (err?: Error | null) => void): void {
    const tail = this.#scanner.end(this.options.bareNewline === 'normalize');
    if (this.#rejected()) return callback();
    this.#append(tail);
    this.#flush().then(() => {
      // The sync starts now but is not awaited here: Spool.commit() writes the envelope record
      // meanwhile and waits for both before the renames, so no 250 comes before it.
      const synced = this.#fh!.datasync();
      synced.catch(() => {}); // observed by commit(); never an unhandled rejection
      this.#synced = synced;
      callback();
    }, callback);
  }

  /** Resolves once the data is on disk (after 'finish', for an 'ok' outcome). */
  synced(): Promise<void> {
    return this.#synced ?? Promise.reject(new Error(`spool file ${this.id} was not completed`));
  }

  #rejected(): boolean {
    return this.#tooBig || (this.#scanner.bare && this.options.bareNewline === 'reject');
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    const fh = this.#fh;
    this.#fh = null;
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
    if (this.#copy && this.#size <= MEMORY_COPY_MAX) this.#copy.push(data);
    else this.#copy = null;
    this.#pending.push(data);
    this.#pendingBytes += data.length;
  }

  async #flush(): Promise<void> {
    const buffers = this.#pending;
    this.#pending = [];
    this.#pendingBytes = 0;
    await writeAll(this.#fh!, buffers);
  }

  /** After 'finish': the bytes of the file when small enough to be kept (MEMORY_COPY_MAX), else null. */
  memoryCopy(): Buffer | null {
    return this.#copy && !this.#rejected() ? Buffer.concat(this.#copy) : null;
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

  async init(): Promise<void> {
    for (const dir of [this.tmpDir, this.incomingDir, this.#journal.dir]) await mkdir(dir, { recursive: true, mode: 0o700 });
    // Anything in tmp/ was never answered 250: it is safe (and right) to drop.
    for (const name of await readdir(this.tmpDir)) await rm(join(this.tmpDir, name), { force: true, recursive: true });
    await this.#journal.init();
  }

  /** Closes the journal's open segment (at shutdown). */
  async close(): Promise<void> {
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
    const msg: SpooledMessage = { id: writer.id, rawPath: join(this.incomingDir, spoolFileName(writer.id, 0)), receivedAt, envelope, size, sha256, ...(extra.relay ? { relay: extra.relay } : {}) };
    return this.#commit(writer, msg);
  }

  /**
   * Replaces a committed entry with a rewritten one of the same id (eom hook edits). Only for a
   * message not yet answered: the old file goes first, durably, then the new one is committed
   * under a new name. A crash in between leaves no entry (the client, never answered, sends
   * again), and never the edited bytes under the old envelope record: recovery would store
   * those for recipients a hook removed, with a wrong size and sha256.
   */
  async replace(old: SpooledMessage, writer: SpoolWriter, size: number, sha256: string, envelope: Envelope): Promise<SpooledMessage> {
    if (writer.id !== old.id) throw new Error(`replace: ${writer.id} is not ${old.id}`);
    const generation = (parseSpoolFileName(basename(old.rawPath))?.generation ?? 0) + 1;
    await writer.synced();
    await this.release(old);
    await this.#incomingSync.sync();
    const msg: SpooledMessage = { id: old.id, rawPath: join(this.incomingDir, spoolFileName(old.id, generation)), receivedAt: old.receivedAt, envelope, size, sha256 };
    return this.#commit(writer, msg);
  }

  async #commit(writer: SpoolWriter, msg: SpooledMessage): Promise<SpooledMessage> {
    // The bytes durable (their sync runs since the end of DATA), then under their name in
    // incoming/, and that name durable together with the envelope record in the journal. The
    // two may finish in any order: a record whose file is not in incoming/ does not count.
    await writer.synced();
    await rename(writer.tmpPath, msg.rawPath);
    try {
      await settleBoth(this.#incomingSync.sync(), this.#journal.append(journalRecord(msg)));
    } catch (err) {
      // Not answered: the caller refuses the message. Without its file the entry never counts.
      await unlink(msg.rawPath).catch(() => {});
      throw err;
    }
    const copy = writer.memoryCopy();
    if (copy) memoryCopies.set(msg, copy);
    return msg;
  }

  /** Drops a message that was not accepted (rejected, too big, client gone). */
  async discard(id: string): Promise<void> {
    await rm(join(this.tmpDir, `${id}.eml`), { force: true });
  }

  /** Removes a spooled message: after the store committed it, or after a 4xx/5xx at end of data. */
  async release(msg: Pick<SpooledMessage, 'rawPath'>): Promise<void> {
    // Once its file is gone, the entry's journal record no longer counts.
    await unlink(msg.rawPath).catch(ignoreMissing);
    this.#journal.forget(basename(msg.rawPath));
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
      if (!present.has(record.file)) continue; // released, or never answered
      const { file, ...msg } = record;
      byId.set(record.id, { ...(msg as unknown as SpooledMessage), rawPath: join(this.incomingDir, file) });
    }
    // Entries of versions before the journal: <id>.eml with its envelope in <id>.json.
    for (const name of names) {
      const id = name.endsWith('.json') ? name.slice(0, -5) : '';
      if (!isMessageId(id) || !present.has(`${id}.eml`) || byId.has(id)) continue;
      try {
        const msg = JSON.parse(await readFile(join(this.incomingDir, name), 'utf8')) as SpooledMessage;
        byId.set(id, { ...msg, id, rawPath: join(this.incomingDir, `${id}.eml`) });
      } catch {
        // A torn .json cannot happen (it was synced before its rename); skip defensively.
      }
    }
    const out = [...byId.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    await Promise.all(out.map((msg) => this.#journal.append(journalRecord(msg))));
    await this.#journal.dropPrevious();
    const live = new Set(out.map((m) => basename(m.rawPath)));
    // Now that the live records are in this run's journal: everything else in incoming/ goes
    // (files without a record, and the .json files of older versions).
    for (const name of names) {
      if (!live.has(name)) await unlink(join(this.incomingDir, name)).catch(ignoreMissing);
    }
    return out;
  }
}

/** The journal record of a spooled message: where its bytes are is the file name alone. */
function journalRecord(msg: SpooledMessage): JournalRecord {
  const { rawPath, ...rest } = msg;
  return { ...rest, file: basename(rawPath) };
}

/**
 * Like Promise.all for two, but waits for both to settle before rejecting: the caller's clean-up
 * after a failure never runs alongside the other operation.
 */
async function settleBoth(a: Promise<void>, b: Promise<void>): Promise<void> {
  const results = await Promise.allSettled([a, b]);
  for (const r of results) if (r.status === 'rejected') throw r.reason;
}
