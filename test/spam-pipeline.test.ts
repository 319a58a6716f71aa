/**
 * Spam scoring inside the whole pipeline, with the real spamd: the stored score equals what
 * spamc reports for the stored bytes, spamd down fails open, and action "reject" refuses spam
 * at the end of DATA with 550 5.7.1.
 */
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createServer, type AddressInfo } from 'node:net';
import { promisify } from 'node:util';
import nodemailer from 'nodemailer';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { MailEvent } from '../src/events/types.js';
import { queuedId, startTestApp, storedEvent, waitFor, type TestApp } from './helpers/app.js';
import { freePort } from './helpers/ports.js';

const SAMPLES = '/usr/share/doc/spamassassin/examples';
const sampleSpam = readFileSync(`${SAMPLES}/sample-spam.txt`);
const sampleHam = readFileSync(`${SAMPLES}/sample-nonspam.txt`);

function send(t: TestApp, raw: Buffer) {
  const transport = nodemailer.createTransport({ host: '127.0.0.1', port: t.smtpPort, secure: false, tls: { rejectUnauthorized: false } });
  return transport.sendMail({ envelope: { from: 'sender@example.org', to: ['rcpt@example.test'] }, raw });
}

async function stored(t: TestApp, response: string): Promise<{ event: MailEvent; raw: Buffer }> {
  const id = queuedId(response);
  const event = await storedEvent(t, id);
  const raw = Buffer.from(await (await fetch(`${t.httpUrl}/api/v1/messages/${id}/raw`)).arrayBuffer());
  return { event, raw };
}

async function spamcScore(raw: Buffer): Promise<{ score: number; threshold: number }> {
  const { host, port } = inject('spamd');
  const out = await new Promise<string>((resolve, reject) => {
    const child = execFile('spamc', ['-d', host, '-p', String(port), '-R'], (err, stdout) => {
      // spamc -R exits 1 for spam; that is not an error here.
      if (err && typeof err.code !== 'number') return reject(err);
      resolve(stdout);
    });
    child.stdin!.end(raw);
  });
  const [score, threshold] = out.split('\n')[0]!.split('/').map(Number);
  return { score: score!, threshold: threshold! };
}

describe('spam scoring in the pipeline (action: tag)', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => t.stop());

  it('tags the Debian sample spam as spam, with the score spamc gives the stored bytes', async () => {
    const info = await send(t, sampleSpam);
    const { event, raw } = await stored(t, info.response);
    expect(event.spam.status).toBe('spam');
    const ref = await spamcScore(raw);
    expect(event.spam.score).toBe(ref.score);
    expect(event.spam.threshold).toBe(ref.threshold);
    expect(event.spam.rules.map((r) => r.name)).toContain('GTUBE');
  });

  it('scores the Debian sample non-spam as ham, equal to spamc', async () => {
    const info = await send(t, sampleHam);
    const { event, raw } = await stored(t, info.response);
    expect(event.spam.status).toBe('ham');
    const ref = await spamcScore(raw);
    expect(event.spam.score).toBe(ref.score);
  });

  it('scores a message with 8-bit text and a binary attachment equal to spamc', async () => {
    const binary = Buffer.alloc(4096);
    for (let i = 0; i < binary.length; i++) binary[i] = (i * 131 + 7) & 0xff;
    const transport = nodemailer.createTransport({ streamTransport: true, buffer: true });
    const built = await transport.sendMail({
      from: 'Jürgen <j@example.org>',
      to: 'rcpt@example.test',
      subject: 'Grüße und Anhänge',
      text: 'Ünïcödé body — 8-bit\n',
      textEncoding: 'quoted-printable',
      attachments: [{ filename: 'blob.bin', content: binary, contentType: 'application/octet-stream' }],
    });
    const info = await send(t, built.message as Buffer);
    const { event, raw } = await stored(t, info.response);
    expect(['ham', 'spam']).toContain(event.spam.status);
    expect(event.spam.score).toBe((await spamcScore(raw)).score);
    expect(event.attachments[0]).toMatchObject({ filename: 'blob.bin', size: 4096 });
  });
});

describe('spam scoring fails open', () => {
  it('accepts mail with spam.status "error" when spamd is down', async () => {
    const port = await freePort();
    const t = await startTestApp({ config: { spamd: { enabled: true, host: '127.0.0.1', port, timeout_ms: 2000 } } });
    try {
      const info = await send(t, sampleHam);
      expect(info.response).toMatch(/^250 2\.0\.0 /);
      const { event } = await stored(t, info.response);
      expect(event.spam).toMatchObject({ status: 'error', score: null, threshold: null, rules: [] });
      expect(event.spam.reason).toBeTruthy();
    } finally {
      await t.stop();
    }
  });

  it('accepts mail with spam.status "error" when spamd never answers (deadline)', async () => {
    // A fake is right here: a real spamd cannot be made to hang. It accepts and stays silent.
    const silent = createServer({ allowHalfOpen: true }, (sock) => sock.on('data', () => {}));
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const port = (silent.address() as AddressInfo).port;
    const t = await startTestApp({ config: { spamd: { enabled: true, host: '127.0.0.1', port, timeout_ms: 500 } } });
    try {
      const info = await send(t, sampleHam);
      expect(info.response).toMatch(/^250 2\.0\.0 /);
      const { event } = await stored(t, info.response);
      expect(event.spam).toMatchObject({ status: 'error', score: null });
      expect(event.spam.reason).toMatch(/deadline|timed out|500 ms/);
    } finally {
      await t.stop();
      silent.close();
    }
  });

  it('skips messages larger than spamd.max_size', async () => {
    const t = await startTestApp({ config: { spamd: { max_size: 100 } } });
    try {
      const info = await send(t, sampleHam);
      const { event } = await stored(t, info.response);
      expect(event.spam.status).toBe('skipped');
    } finally {
      await t.stop();
    }
  });
});

describe('spam action: reject', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ config: { spamd: { action: 'reject' } } });
  });
  afterAll(async () => t.stop());

  it('refuses spam at the end of DATA with 550 5.7.1 and stores nothing', async () => {
    await expect(send(t, sampleSpam)).rejects.toMatchObject({ responseCode: 550, response: '550 5.7.1 Message rejected as spam' });
    const list = (await (await fetch(`${t.httpUrl}/api/v1/messages`)).json()) as { items: unknown[] };
    expect(list.items).toEqual([]);
  });

  it('leaves no file behind for refused spam with an attachment', async () => {
    // sample-spam.txt's body (the GTUBE line) in a text part, and a file the parser writes out.
    const body = sampleSpam.toString('latin1').split(/\r?\n\r?\n/).slice(1).join('\n\n');
    const raw = Buffer.from(
      [
        'From: spammer@example.org',
        'To: rcpt@example.test',
        'Subject: with a file',
        'MIME-Version: 1.0',
        'Content-Type: multipart/mixed; boundary="b"',
        '',
        '--b',
        'Content-Type: text/plain; charset=us-ascii',
        '',
        body,
        '--b',
        'Content-Type: application/octet-stream; name="f.bin"',
        'Content-Disposition: attachment; filename="f.bin"',
        'Content-Transfer-Encoding: base64',
        '',
        Buffer.alloc(4096, 7).toString('base64'),
        '--b--',
        '',
      ].join('\r\n'),
      'latin1',
    );
    await expect(send(t, raw)).rejects.toMatchObject({ responseCode: 550, response: '550 5.7.1 Message rejected as spam' });
    expect(readdirSync(join(t.dir, 'data', 'messages'))).toEqual([]);
  });

  it('still accepts ham', async () => {
    const info = await send(t, sampleHam);
    expect(info.response).toMatch(/^250 2\.0\.0 /);
  });

  it('counts both outcomes in /metrics', async () => {
    const text = await waitFor(async () => {
      const body = await (await fetch(`${t.httpUrl}/metrics`)).text();
      return body.includes('result="accepted"') ? body : null;
    });
    expect(text).toContain('mailwire_messages_total{result="rejected-spam",spam="spam"} 2');
    expect(text).toContain('mailwire_messages_total{result="accepted",spam="ham"} 1');
    expect(text).toMatch(/^mailwire_message_processing_seconds_count 3$/m);
  });
});
