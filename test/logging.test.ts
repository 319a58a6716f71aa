/**
 * Logs: one info line per message outcome with the fields operators need, and never a body or
 * a credential.
 */
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import nodemailer from 'nodemailer';
import { afterAll, describe, expect, it } from 'vitest';
import { createApp } from '../src/app.js';
import { createLogger } from '../src/log/logger.js';
import { queuedId, testConfig, waitFor } from './helpers/app.js';
import { RawSmtp } from './helpers/raw-smtp.js';

describe('logging', () => {
  const dir = mkdtempSync(join(tmpdir(), 'mailwire-log-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('writes one line per message outcome and no body', async () => {
    mkdirSync(join(dir, 'config'));
    const lines: Record<string, unknown>[] = [];
    const sink = new Writable({
      write(chunk, _enc, cb) {
        for (const line of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(line));
        cb();
      },
    });
    const config = testConfig(dir, { spamd: false, config: { smtp: { limits: { max_message_size: 500 } } } });
    const app = createApp(config, { logger: createLogger('info', sink) });
    const addresses = await app.start();
    try {
      const transport = nodemailer.createTransport({ host: '127.0.0.1', port: addresses.smtp.port, secure: false, tls: { rejectUnauthorized: false } });
      const info = await transport.sendMail({
        from: 'alice@example.org',
        to: ['bob@example.test', 'carol@example.test'],
        subject: 'logged',
        text: 'SECRET-BODY-TEXT',
      });
      const id = queuedId(info.response);
      const line = await waitFor(async () => lines.find((l) => l.msg === 'message' && l.id === id));
      expect(line).toMatchObject({ level: 30, from: 'alice@example.org', rcpts: 2, ip: '127.0.0.1', spam: 'skipped', result: 'accepted' });
      expect(typeof line.size).toBe('number');
      expect(typeof line.ms).toBe('number');

      // A refused message gets its line too.
      const c = await RawSmtp.connect(addresses.smtp.port);
      await c.read();
      await c.command('EHLO client.test');
      await c.command('MAIL FROM:<big@example.org>');
      await c.command('RCPT TO:<bob@example.test>');
      await c.command('DATA');
      c.write(`Subject: too big\r\n\r\n${'SECRET-BODY-TEXT '.repeat(60)}\r\n.\r\n`);
      expect((await c.read()).code).toBe(552);
      c.close();
      const refused = await waitFor(async () => lines.find((l) => l.msg === 'message' && l.result === 'rejected-too-big'));
      expect(refused).toMatchObject({ from: 'big@example.org', rcpts: 1 });

      expect(lines.filter((l) => l.msg === 'message')).toHaveLength(2);
      expect(JSON.stringify(lines)).not.toContain('SECRET-BODY-TEXT');
    } finally {
      await app.stop();
    }
  });

  it('redacts credentials whatever object carries them', () => {
    const out: string[] = [];
    const logger = createLogger('info', new Writable({ write: (c, _e, cb) => (out.push(c.toString()), cb()) }));
    logger.info({ user: 'u', password: 'hunter2', auth: { pass: 'hunter3' }, headers: { authorization: 'Basic xyz' } }, 'login');
    expect(out.join('')).not.toMatch(/hunter2|hunter3|Basic xyz/);
  });
});
