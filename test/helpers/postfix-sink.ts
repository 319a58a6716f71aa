/** Postfix's smtp-sink on a free loopback port (a real, independent SMTP server; never as daemon). */
import { spawn, type ChildProcess } from 'node:child_process';
import { connect } from 'node:net';
import { freePort } from './ports.js';

export const SMTP_SINK = '/usr/sbin/smtp-sink';

export interface PostfixSink {
  port: number;
  stop(): Promise<void>;
}

function greets(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    const timer = setTimeout(() => done(false), 1000);
    function done(ok: boolean) {
      clearTimeout(timer);
      s.destroy();
      resolve(ok);
    }
    s.on('data', (d) => done(/^220/.test(d.toString())));
    s.on('error', () => done(false));
  });
}

export async function startPostfixSink(): Promise<PostfixSink> {
  const port = await freePort();
  // smtp-sink refuses to run as root without dropping privileges (-u).
  const user = process.getuid?.() === 0 ? ['-u', 'nobody'] : [];
  const child: ChildProcess = spawn(SMTP_SINK, [...user, `127.0.0.1:${port}`, '100'], { stdio: 'ignore' });
  const deadline = Date.now() + 10_000;
  while (!(await greets(port))) {
    if (Date.now() > deadline || child.exitCode !== null) {
      child.kill('SIGKILL');
      throw new Error('smtp-sink did not start');
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    port,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}
