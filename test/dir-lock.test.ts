import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DataDirLockedError, lockDataDir } from '../src/util/dir-lock.js';

describe('data directory lock', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'mailwire-lock-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('writes our pid and removes the file on release', () => {
    const lock = lockDataDir(dir);
    expect(readFileSync(join(dir, 'mailwire.lock'), 'utf8')).toBe(`${process.pid}\n`);
    lock.release();
    expect(existsSync(join(dir, 'mailwire.lock'))).toBe(false);
  });

  it('refuses a directory locked by another live process', async () => {
    const other = spawn('sleep', ['30'], { stdio: 'ignore' });
    try {
      writeFileSync(join(dir, 'mailwire.lock'), `${other.pid}\n`);
      expect(() => lockDataDir(dir)).toThrow(DataDirLockedError);
      expect(() => lockDataDir(dir)).toThrow(`in use by another mailwire (pid ${other.pid})`);
      // The other owner's lock is left alone.
      expect(readFileSync(join(dir, 'mailwire.lock'), 'utf8')).toBe(`${other.pid}\n`);
    } finally {
      other.kill('SIGKILL');
    }
  });

  it('takes over the lock of a process that is gone (killed earlier run)', async () => {
    const gone = spawn('true', { stdio: 'ignore' });
    await new Promise((resolve) => gone.once('exit', resolve));
    writeFileSync(join(dir, 'mailwire.lock'), `${gone.pid}\n`);
    const lock = lockDataDir(dir);
    expect(readFileSync(join(dir, 'mailwire.lock'), 'utf8')).toBe(`${process.pid}\n`);
    lock.release();
  });

  it('takes over a lock file with garbage in it', () => {
    writeFileSync(join(dir, 'mailwire.lock'), 'not a pid');
    lockDataDir(dir).release();
    expect(existsSync(join(dir, 'mailwire.lock'))).toBe(false);
  });
});
