/** Small filesystem helpers shared by the spool, the store and the HTTP layer. */
import { open } from 'node:fs/promises';

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
