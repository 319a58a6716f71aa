/**
 * One mailwire per data directory. Two instances on one directory would each treat the other's
 * spool/tmp files as leftovers of a crash and delete them, and interleave SQLite writers.
 * The lock is a file holding the owner's pid, created with O_EXCL; a lock whose pid is gone
 * (the previous run was killed) is taken over.
 */
import { readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { errCode } from './fs.js';

export class DataDirLockedError extends Error {
  constructor(
    readonly dir: string,
    readonly pid: number,
  ) {
    super(`data directory ${dir} is in use by another mailwire (pid ${pid}); use another storage.data_dir`);
    this.name = 'DataDirLockedError';
  }
}

export interface DirLock {
  release(): void;
}

const LOCK_FILE = 'mailwire.lock';

export function lockDataDir(dir: string): DirLock {
  const file = join(dir, LOCK_FILE);
  // Two rounds at most: the second after removing a stale lock.
  for (let round = 0; round < 2; round++) {
    try {
      writeFileSync(file, `${process.pid}\n`, { flag: 'wx', mode: 0o600 });
      let released = false;
      return {
        release() {
          if (released) return;
          released = true;
          try {
            if (ownerPid(file) === process.pid) unlinkSync(file);
          } catch {
            // Already gone: nothing to release.
          }
        },
      };
    } catch (err) {
      if (errCode(err) !== 'EEXIST') throw err;
      const pid = ownerPid(file);
      // Our own pid: a second app in this process (tests restart on the same dir after a stop
      // that released; a leftover from a crashed earlier run that had our pid is also stale).
      if (pid !== null && pid !== process.pid && alive(pid)) throw new DataDirLockedError(dir, pid);
      try {
        unlinkSync(file);
      } catch (e) {
        if (errCode(e) !== 'ENOENT') throw e;
      }
    }
  }
  throw new Error(`cannot take the lock ${file}`);
}

function ownerPid(file: string): number | null {
  try {
    const pid = Number.parseInt(readFileSync(file, 'utf8'), 10);
    return Number.isSafeInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: the process exists but belongs to someone else.
    return errCode(err) === 'EPERM';
  }
}
