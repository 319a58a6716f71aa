/** The store's copy fallback when the spool and the data directory cannot share a hard link. */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import * as fsp from 'node:fs/promises';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { linkOrCopy } from '../src/store/files.js';
import { openSqliteStore } from '../src/store/sqlite-store.js';
import { makeEvent } from './helpers/events.js';

vi.mock('node:fs/promises', async (importOriginal) => {
  const actual = await importOriginal<typeof import('node:fs/promises')>();
  return { ...actual, link: vi.fn(actual.link) };
});

function failWith(code: string): void {
  vi.mocked(fsp.link).mockRejectedValueOnce(Object.assign(new Error(`${code}: link failed`), { code }));
}

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'mailwire-store-files-'));
});
afterEach(() => {
  vi.mocked(fsp.link).mockClear();
  rmSync(dir, { recursive: true, force: true });
});

describe('linkOrCopy', () => {
  it('links when it can', async () => {
    writeFileSync(join(dir, 'src'), 'bytes');
    expect(await linkOrCopy(join(dir, 'src'), join(dir, 'dest'))).toBe('linked');
    expect(statSync(join(dir, 'dest')).ino).toBe(statSync(join(dir, 'src')).ino);
  });

  it('copies across filesystems (EXDEV), leaving no temporary file', async () => {
    writeFileSync(join(dir, 'src'), 'cross-device bytes');
    failWith('EXDEV');
    expect(await linkOrCopy(join(dir, 'src'), join(dir, 'dest'))).toBe('copied');
    expect(readFileSync(join(dir, 'dest'), 'utf8')).toBe('cross-device bytes');
    expect(statSync(join(dir, 'dest')).ino).not.toBe(statSync(join(dir, 'src')).ino);
    expect(existsSync(join(dir, 'dest.partial'))).toBe(false);
  });

  it('keeps an existing destination', async () => {
    writeFileSync(join(dir, 'src'), 'new');
    writeFileSync(join(dir, 'dest'), 'old');
    expect(await linkOrCopy(join(dir, 'src'), join(dir, 'dest'))).toBe('existed');
    expect(readFileSync(join(dir, 'dest'), 'utf8')).toBe('old');
  });

  it('passes other errors on', async () => {
    await expect(linkOrCopy(join(dir, 'missing'), join(dir, 'dest'))).rejects.toMatchObject({ code: 'ENOENT' });
    writeFileSync(join(dir, 'src'), 'x');
    failWith('EIO');
    await expect(linkOrCopy(join(dir, 'src'), join(dir, 'dest'))).rejects.toMatchObject({ code: 'EIO' });
    expect(existsSync(join(dir, 'dest'))).toBe(false);
  });
});

describe('commit across filesystems', () => {
  it('stores a copy of the raw message that outlives the spool file', async () => {
    const store = openSqliteStore(join(dir, 'data'));
    try {
      const event = makeEvent();
      mkdirSync(join(dir, 'spool'));
      const rawPath = join(dir, 'spool', event.id);
      writeFileSync(rawPath, 'Subject: copied\r\n\r\nbody\r\n');
      failWith('EXDEV');
      expect(await store.commit(event, { path: rawPath })).toBe('inserted');
      rmSync(rawPath);
      expect(readFileSync(store.raw(event.id)!.path!, 'utf8')).toBe('Subject: copied\r\n\r\nbody\r\n');
    } finally {
      await store.close();
    }
  });
});
