/** Small filesystem helpers shared by the spool, the store and the HTTP layer. */
import { open, type FileHandle } from 'node:fs/promises';

/** The errno code of a Node error (ENOENT, EXDEV, …), or undefined. */
export function errCode(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err ? String((err as { code: unknown }).code) : undefined;
}

/** fsyncs a file or directory (a directory fsync makes renames and links in it durable). */
export async function fsyncPath(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } catch (err) {
    // Windows cannot fsync a directory handle; there is nothing better to do there.
    if (!(process.platform === 'win32' && errCode(err) === 'EPERM')) throw err;
  } finally {
    await handle.close();
  }
}

/**
 * fsyncs one directory again and again through a handle kept open: one call per sync instead
 * of open, fsync and close (each a round trip through libuv's threadpool, on the way to every
 * 250 for the spool). A handle that failed is dropped, and the next sync opens a fresh one.
 */
export class DirectorySync {
  #handle: Promise<FileHandle> | null = null;

  constructor(readonly path: string) {}

  async sync(): Promise<void> {
    this.#handle ??= open(this.path, 'r');
    const handle = this.#handle;
    try {
      await (await handle).sync();
    } catch (err) {
      if (this.#handle === handle) this.#handle = null;
      void handle.then((h) => h.close()).catch(() => {});
      // Windows cannot fsync a directory handle; there is nothing better to do there.
      if (!(process.platform === 'win32' && errCode(err) === 'EPERM')) throw err;
    }
  }

  async close(): Promise<void> {
    const handle = this.#handle;
    this.#handle = null;
    if (handle) await handle.then((h) => h.close()).catch(() => {});
  }
}

/** Writes every buffer, in order, with as few writev calls as the kernel allows (usually one). */
export async function writeAll(fh: FileHandle, buffers: Buffer[]): Promise<void> {
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

/** For .catch() after an unlink or rm: a file that is already gone is fine. */
export function ignoreMissing(err: unknown): void {
  if (errCode(err) !== 'ENOENT') throw err;
}
