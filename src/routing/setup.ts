/**
 * `mailwire setup --dest DIR`: writes a starter config directory, like `hainekoctl setup`:
 * mailwire.yml, domains and the six Haineko tables, copied from the shipped config/ (every
 * key commented out, so the defaults apply until an operator edits them). Existing files are
 * never overwritten: the whole setup is refused before anything is written.
 */
import { constants, copyFileSync, existsSync, mkdirSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CONFIG_FILE } from '../config/load.js';
import { TABLE_NAMES } from './routing.js';

// config/ at the repository root: two levels up from src/routing/setup.ts (tsx), three from dist/src/routing/setup.js.
export const SHIPPED_CONFIG_DIR = [fileURLToPath(new URL('../../config', import.meta.url)), fileURLToPath(new URL('../../../config', import.meta.url))].find(
  (dir) => existsSync(join(dir, CONFIG_FILE)),
);

export const SETUP_FILES: readonly string[] = [CONFIG_FILE, 'domains', ...TABLE_NAMES];
// Files with credentials (authinfo) or password hashes: owner only.
const PRIVATE_FILES = new Set(['authinfo', 'password']);

export class SetupError extends Error {
  override name = 'SetupError';
}

/** Copies the starter files into dest; returns the paths written. */
export function setupConfigDir(dest: string, source: string | undefined = SHIPPED_CONFIG_DIR): string[] {
  if (!source) throw new SetupError('the shipped config/ directory was not found next to the program');
  const existing = SETUP_FILES.filter((name) => existsSync(join(dest, name)));
  if (existing.length) throw new SetupError(`${dest} already has ${existing.join(', ')}; nothing was written (remove them or choose another --dest)`);
  mkdirSync(dest, { recursive: true });
  const written: string[] = [];
  for (const name of SETUP_FILES) {
    const target = join(dest, name);
    // COPYFILE_EXCL: a file appearing meanwhile is still not overwritten.
    copyFileSync(join(source, name), target, constants.COPYFILE_EXCL);
    chmodSync(target, PRIVATE_FILES.has(name) ? 0o600 : 0o644);
    written.push(target);
  }
  return written;
}
