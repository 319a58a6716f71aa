/**
 * The durable spool: nothing is answered 250 before its bytes are on disk.
 *
 *   DATA ─▶ tmp/<id>.eml (size + sha256 while streaming) ─▶ fdatasync ─┐ both at once
 *           tmp/<id>.json (envelope), written with O_DSYNC ────────────────┘
 *        ─▶ rename .eml, then .json, into incoming/ ─▶ fsync(incoming/) ─▶ the caller may answer
 *
 * An entry counts only once its .json is in incoming/ (renamed last); recovery on start
 * processes every such entry again and removes orphans. Events are idempotent by id. An entry
 * rewritten before the reply (eom hook edits) is replaced with replace(): old .json out first.
 *
 * Cost per message on the way to the 250, which the client waits for and which occupies
 * libuv's threadpool: fdatasync or O_DSYNC, not fsync (they skip timestamps, which nothing here
 * reads, but still cover the file size); a typical message is one write; the two files are
 * synced concurrently; and the fsync of incoming/ is shared by every message renamed while the
 * previous one ran (CoalescedSync).
 */
import { createHash, type Hash } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, rm, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import type { Envelope } from '../events/types.js';
import { isMessageId } from '../events/id.js';
import { fsyncPath } from '../util/fs.js';
import { CoalescedSync } from './coalesced-sync.js';
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
  readonly #incomingSync: CoalescedSync;

  constructor(dataDir: string) {
    this.tmpDir = join(dataDir, 'spool', 'tmp');
    this.incomingDir = join(dataDir, 'spool', 'incoming');
    this.#incomingSync = new CoalescedSync(() => fsyncPath(this.incomingDir));
  }

  async init(): Promise<void> {
    await mkdir(this.tmpDir, { recursive: true, mode: 0o700 });
    await mkdir(this.incomingDir, { recursive: true, mode: 0o700 });
    // Anything in tmp/ was never answered 250: it is safe (and right) to drop.
    for (const name of await readdir(this.tmpDir)) await rm(join(this.tmpDir, name), { force: true, recursive: true });
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
    return this.#commit(writer, { id: writer.id, rawPath: join(this.incomingDir, `${writer.id}.eml`), receivedAt, envelope, size, sha256, ...(extra.relay ? { relay: extra.relay } : {}) }, false);
  }

  /**
   * Replaces a committed entry with a rewritten one of the same id (eom hook edits). Only for a
   * message not yet answered: the old entry stops counting first (its .json goes, durably), then
   * the new files take the names. A crash in between leaves no entry (the client, never
   * answered, sends again) and never the edited bytes under the old envelope record: recovery
   * would store those for recipients a hook removed, with a wrong size and sha256.
   */
  async replace(writer: SpoolWriter, size: number, sha256: string, envelope: Envelope, receivedAt: string): Promise<SpooledMessage> {
    return this.#commit(writer, { id: writer.id, rawPath: join(this.incomingDir, `${writer.id}.eml`), receivedAt, envelope, size, sha256 }, true);
  }

  async #commit(writer: SpoolWriter, msg: SpooledMessage, replacing: boolean): Promise<SpooledMessage> {
    const json = join(this.incomingDir, `${msg.id}.json`);
    const tmpJson = join(this.tmpDir, `${msg.id}.json`);
    // Both files durable (the message's own sync runs since the end of DATA)...
    await settleBoth(writer.synced(), writeSynced(tmpJson, JSON.stringify(msg)));
    if (replacing) {
      // The old entry no longer counts, on disk, before its .eml is overwritten.
      await unlink(json).catch(ignoreMissing);
      await this.#incomingSync.sync();
    }
    // ...then both names, the .json last: it is what makes the entry count.
    await rename(writer.tmpPath, msg.rawPath);
    await rename(tmpJson, json);
    await this.#incomingSync.sync();
    const copy = writer.memoryCopy();
    if (copy) memoryCopies.set(msg, copy);
    return msg;
  }

  /** Drops a message that was not accepted (rejected, too big, client gone). */
  async discard(id: string): Promise<void> {
    await rm(join(this.tmpDir, `${id}.eml`), { force: true });
    await rm(join(this.tmpDir, `${id}.json`), { force: true });
  }

  /** Removes a spooled message: after the store committed it, or after a 4xx/5xx at end of data. */
  async release(msg: Pick<SpooledMessage, 'id'>): Promise<void> {
    // The .json goes first: without it the entry no longer counts, even if we crash here.
    await unlink(join(this.incomingDir, `${msg.id}.json`)).catch(ignoreMissing);
    await unlink(join(this.incomingDir, `${msg.id}.eml`)).catch(ignoreMissing);
  }

  /** Every message left in incoming/ by a previous run, oldest first. */
  async recover(): Promise<SpooledMessage[]> {
    const names = await readdir(this.incomingDir);
    const out: SpooledMessage[] = [];
    const withJson = new Set(names.filter((n) => n.endsWith('.json')).map((n) => n.slice(0, -5)));
    for (const name of names) {
      const id = name.replace(/\.(eml|json)$/, '');
      if (!isMessageId(id)) continue;
      if (name.endsWith('.eml') && !withJson.has(id)) {
        // Renamed .eml but no .json: the crash came before the reply, so the client retries.
        await unlink(join(this.incomingDir, name)).catch(ignoreMissing);
      }
    }
    for (const id of [...withJson].filter(isMessageId).sort()) {
      try {
        const msg = JSON.parse(await readFile(join(this.incomingDir, `${id}.json`), 'utf8')) as SpooledMessage;
        msg.rawPath = join(this.incomingDir, `${id}.eml`);
        out.push(msg);
      } catch {
        // A torn .json cannot happen (written and synced in tmp/ before the rename); skip defensively.
      }
    }
    return out;
  }
}

/** Writes every buffer, in order, with as few writev calls as the kernel allows (usually one). */
async function writeAll(fh: FileHandle, buffers: Buffer[]): Promise<void> {
  let rest = buffers;
  while (rest.length > 0) {
    const { bytesWritten } = await fh.writev(rest);
    if (bytesWritten === 0) throw new Error('write made no progress');
    rest = skipBytes(rest, bytesWritten);
  }
}

/** The buffers after the first n bytes (after a short write). */
function skipBytes(buffers: Buffer[], n: number): Buffer[] {
  let i = 0;
  while (i < buffers.length && n >= buffers[i]!.length) n -= buffers[i++]!.length;
  const rest = buffers.slice(i);
  if (n > 0 && rest.length > 0) rest[0] = rest[0]!.subarray(n);
  return rest;
}

/**
 * Like Promise.all for two, but waits for both to settle before rejecting: the caller discards
 * the temp files on failure, and must not do so while the other write is still creating one.
 */
async function settleBoth(a: Promise<void>, b: Promise<void>): Promise<void> {
  const results = await Promise.allSettled([a, b]);
  for (const r of results) if (r.status === 'rejected') throw r.reason;
}

/**
 * 'w' plus O_DSYNC where the platform has it: each write returns once its data is on disk (as
 * if followed by fdatasync), so a small file takes open, write, close: one call less.
 */
const SYNCED_WRITE_FLAGS =
  fsConstants.O_DSYNC === undefined ? null : fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_TRUNC | fsConstants.O_DSYNC;

/** Writes a small file and makes its data durable (its name is the caller's business). */
async function writeSynced(path: string, text: string): Promise<void> {
  const fh = await open(path, SYNCED_WRITE_FLAGS ?? 'w', 0o600);
  try {
    await fh.writeFile(text);
    if (SYNCED_WRITE_FLAGS === null) await fh.datasync();
  } finally {
    await fh.close();
  }
}

function ignoreMissing(err: NodeJS.ErrnoException): void {
  if (err.code !== 'ENOENT') throw err;
}
