/** mailwire's version, for the User-Agent of webhook requests. */
import { readFileSync } from 'node:fs';

function readVersion(): string {
  // package.json sits two levels above src/webhooks/ (tsx) and three above dist/src/webhooks/.
  for (const rel of ['../../package.json', '../../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as { name?: unknown; version?: unknown };
      if (pkg.name === 'mailwire' && typeof pkg.version === 'string') return pkg.version;
    } catch {
      // not here; try the next candidate
    }
  }
  return '0.0.0';
}

export const MAILWIRE_VERSION = readVersion();
