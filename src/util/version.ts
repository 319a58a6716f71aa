/** mailwire's version from package.json: GET /api/v1/info, X-SMTP-Engine, the webhooks' User-Agent. */
import { readFileSync } from 'node:fs';

function readVersion(): string {
  // package.json sits two levels above src/util/ (tsx) and three above dist/src/util/ (built).
  for (const rel of ['../../package.json', '../../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as { name?: unknown; version?: unknown };
      if (pkg.name === 'mailwire' && typeof pkg.version === 'string') return pkg.version;
    } catch {
      // Not here, not ours or unreadable: try the next candidate.
    }
  }
  return 'unknown';
}

export const MAILWIRE_VERSION = readVersion();
