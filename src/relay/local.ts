/**
 * Mailers that deliver nowhere else: File (an .eml per recipient in a directory), Screen (the
 * message printed to a stream, stdout by default) and Discard. Replies as Haineko gave them:
 * code 200, command DATA; File and Screen get dsn 2.0.0 (Haineko filled it in), Discard null.
 */
import { randomBytes } from 'node:crypto';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { isAbsolute, join } from 'node:path';
import type { Writable } from 'node:stream';
import type { Route } from '../routing/types.js';
import type { Delivery, ResponseEntry } from './types.js';

function ok(d: Delivery, mailer: string, dsn: string | null, message: string[]): ResponseEntry {
  return { dsn, code: 200, host: null, port: null, rcpt: d.rcpt, error: 0, mailer, command: 'DATA', message };
}

/** The File mailer's directory: `directory:` in the route, else an absolute `host:` (Haineko's way), else the OS temp dir. */
export function fileDirectory(route: Route): string {
  const dir = route.options['directory'];
  if (typeof dir === 'string' && dir.length > 0) return dir;
  if (isAbsolute(route.host)) return route.host;
  return tmpdir();
}

export async function deliverToFile(d: Delivery): Promise<ResponseEntry> {
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  // The queue id plus random bytes: several recipients of one submission never collide, and
  // 'wx' refuses to follow or overwrite anything already there.
  const path = join(fileDirectory(d.route), `mailwire.${stamp}.${d.message.queueid}.${randomBytes(4).toString('hex')}.eml`);
  try {
    const fh = await open(path, 'wx', 0o600);
    try {
      await fh.writeFile(d.message.raw(d.rcpt));
    } finally {
      await fh.close();
    }
    return ok(d, 'File', '2.0.0', [path, 'Successfully saved']);
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code ?? 'error';
    // A temporary local failure: 451 4.3.0 (Haineko sent a non-SMTP 400 here).
    return { dsn: '4.3.0', code: 451, host: null, port: null, rcpt: d.rcpt, error: 1, mailer: 'File', command: 'DATA', message: [path, `Failed to save: ${reason}`] };
  }
}

export function deliverToScreen(d: Delivery, out: Writable): Promise<ResponseEntry> {
  return new Promise((resolve) => {
    out.write(Buffer.concat([d.message.raw(d.rcpt), Buffer.from('\r\n')]), () => resolve(ok(d, 'Screen', '2.0.0', ['OK'])));
  });
}

export function discard(d: Delivery): Promise<ResponseEntry> {
  return Promise.resolve(ok(d, 'Discard', null, ['Discard']));
}
