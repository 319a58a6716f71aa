/**
 * How every bench scenario starts mailwire: `node <flags> dist/src/cli.js start --config-dir DIR`,
 * with the Node flags `npm start` uses (package.json config.node_flags), so that the figures are
 * those of mailwire as users run it.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const MAILWIRE_CLI = join(ROOT, 'dist/src/cli.js');

/** package.json config.node_flags, split on spaces (flags only, no quoting needed). */
export function nodeFlags() {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
  return String(pkg.config?.node_flags ?? '').split(/\s+/).filter(Boolean);
}

/** Arguments for process.execPath; `extraNodeArgs` go before the script (e.g. --cpu-prof). */
export function mailwireStartArgs(configDir, extraNodeArgs = []) {
  return [...nodeFlags(), ...extraNodeArgs, MAILWIRE_CLI, 'start', '--config-dir', configDir];
}
