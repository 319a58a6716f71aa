/** The filesystem half of the store: putting raw messages in place durably. */
import { copyFile, link, rename } from 'node:fs/promises';
import { errCode, fsyncPath } from '../util/fs.js';

export { fsyncPath };

/**
 * Link failures that mean "this filesystem cannot hard-link here", where a copy is the
 * answer: EXDEV (spool and data on different filesystems), EPERM / ENOTSUP (filesystems
 * without hard links, e.g. some FUSE and SMB mounts), EMLINK (link count limit).
 */
const COPY_INSTEAD = new Set(['EXDEV', 'EPERM', 'ENOTSUP', 'EMLINK']);

/**
 * Put `src` at `dest` without reading it when possible. A hard link shares the spool file's
 * inode, which the spool has already fsynced, so only the directory entry is new (the caller
 * fsyncs the directory). An existing `dest` is kept: it is this message's raw file from an
 * earlier attempt that crashed before the database commit.
 * Sharing the inode means the spool must never write into a spool file in place after commit
 * (it does not: it writes a temp file and renames, and only ever unlinks afterwards).
 */
export async function linkOrCopy(src: string, dest: string): Promise<'linked' | 'copied' | 'existed'> {
  try {
    await link(src, dest);
    return 'linked';
  } catch (err) {
    const code = errCode(err);
    if (code === 'EEXIST') return 'existed';
    if (code === undefined || !COPY_INSTEAD.has(code)) throw err;
  }
  // Copy to a temporary name, fsync, rename: dest is either absent or complete, never a
  // half-written copy that a later attempt would mistake for the real thing.
  const tmp = `${dest}.partial`;
  await copyFile(src, tmp);
  await fsyncPath(tmp);
  await rename(tmp, dest);
  return 'copied';
}

/** fsync a file or directory by path (a directory fsync makes its entries durable). */

/** fsyncPath, where a missing path is fine. */
export async function fsyncIfExists(path: string): Promise<void> {
  try {
    await fsyncPath(path);
  } catch (err) {
    if (errCode(err) !== 'ENOENT') throw err;
  }
}
