/**
 * Starts a real SpamAssassin spamd on a loopback port, local tests only (-L: no network rules),
 * so tests exercise the real protocol and the real scores.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { connect } from 'node:net';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './ports.js';

export interface SpamdHandle {
  host: string;
  port: number;
  stop(): Promise<void>;
}

export async function startSpamd(): Promise<SpamdHandle> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'mailwire-spamd-'));
  const args = [
    '-L', // local tests only: no DNS blocklists, no network
    '--listen', `127.0.0.1:${port}`,
    '--max-children', '4',
    '--syslog', 'stderr',
    '--pidfile', join(dir, 'spamd.pid'),
    '--siteconfigpath', '/etc/spamassassin',
  ];
  if (process.getuid?.() === 0) args.push('-u', 'nobody', '--virtual-config-dir', dir, '-x');
  const child: ChildProcess = spawn('/usr/sbin/spamd', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-4000);
  });
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`spamd exited with ${child.exitCode}: ${stderr}`);
    if (await ping('127.0.0.1', port)) {
      return {
        host: '127.0.0.1',
        port,
        stop: () =>
          new Promise<void>((resolve) => {
            if (child.exitCode !== null) return resolve();
            child.once('exit', () => resolve());
            child.kill('SIGTERM');
          }),
      };
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  child.kill('SIGKILL');
  throw new Error(`spamd did not answer PING within 60 s: ${stderr}`);
}

function ping(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = connect(port, host);
    let buf = '';
    const done = (ok: boolean) => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(2000, () => done(false));
    sock.on('error', () => done(false));
    sock.on('connect', () => sock.write('PING SPAMC/1.5\r\n\r\n'));
    sock.on('data', (d) => {
      buf += d.toString();
      if (buf.includes('PONG')) done(true);
    });
    sock.on('end', () => done(buf.includes('PONG')));
  });
}
