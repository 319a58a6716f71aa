/**
 * The durable spool: nothing is answered 250 before its bytes are on disk.
 *
 *   DATA ─▶ tmp/<id>.eml (size + sha256 while streaming) ─▶ fsync ─▶ tmp/<id>.json (envelope) ─▶ fsync
 *        ─▶ rename .eml, then .json, into incoming/ ─▶ fsync(incoming/) ─▶ the caller may answer
 *
 * An entry counts only once its .json is in incoming/ (renamed last); recovery on start
 * processes every such entry again and removes orphans. Events are idempotent by id.
 */
import { createHash, type Hash } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import type { Envelope } from '../events/types.js';
import { isMessageId } from '../events/id.js';
import { LineEndingScanner } from './line-endings.js';

export interface SpooledMessage {
  id: string;
  rawPath: string;
  receivedAt: string;
  envelope: Envelope;
  size: number;
  sha256: string;
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
      async (fh) => {
        this.#fh = fh;
        if (this.options.prefix?.length) await this.#append(this.options.prefix);
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
    this.#append(data).then(() => callback(), callback);
  }

  override _final(callback: (err?: Error | null) => void): void {
    const tail = this.#scanner.end(this.options.bareNewline === 'normalize');
    if (this.#rejected()) return callback();
    // fsync here, before 'finish': the file must be on disk before anyone can answer 250.
    (tail.length ? this.#append(tail) : Promise.resolve()).then(() => this.#fh!.sync()).then(() => callback(), callback);
  }

  #rejected(): boolean {
    return this.#tooBig || (this.#scanner.bare && this.options.bareNewline === 'reject');
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    const fh = this.#fh;
    this.#fh = null;
    if (!fh) return callback(err);
    fh.close().then(() => callback(err), () => callback(err));
  }

  async #append(data: Buffer): Promise<void> {
    this.#hash.update(data);
    this.#size += data.length;
    let off = 0;
    while (off < data.length) {
      const { bytesWritten } = await this.#fh!.write(data, off, data.length - off);
      off += bytesWritten;
    }
  }

  /** After 'finish': what was received (an 'ok' file is already synced to disk). */
  outcome(): SpoolWriteOutcome {
    if (this.#tooBig) return { kind: 'too-big', clientBytes: this.#clientBytes };
    if (this.#scanner.bare && this.options.bareNewline === 'reject') return { kind: 'bare-newline' };
    return { kind: 'ok', size: this.#size, sha256: this.#hash.copy().digest('hex') };
  }
}

export class Spool {
  readonly tmpDir: string;
  readonly incomingDir: string;

  constructor(dataDir: string) {
    this.tmpDir = join(dataDir, 'spool', 'tmp');
    this.incomingDir = join(dataDir, 'spool', 'incoming');
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
  async commit(writer: SpoolWriter, size: number, sha256: string, envelope: Envelope, receivedAt: string): Promise<SpooledMessage> {
    const id = writer.id;
    const msg: SpooledMessage = { id, rawPath: join(this.incomingDir, `${id}.eml`), receivedAt, envelope, size, sha256 };
    const tmpJson = join(this.tmpDir, `${id}.json`);
    await writeSynced(tmpJson, JSON.stringify(msg));
    await rename(writer.tmpPath, msg.rawPath);
    await rename(tmpJson, join(this.incomingDir, `${id}.json`));
    await syncDir(this.incomingDir);
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

async function writeSynced(path: string, text: string): Promise<void> {
  const fh = await open(path, 'w', 0o600);
  try {
    await fh.writeFile(text);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

function ignoreMissing(err: NodeJS.ErrnoException): void {
  if (err.code !== 'ENOENT') throw err;
}
