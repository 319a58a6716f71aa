/**
 * The SMTP listener end to end: the real app on port 0, real clients (nodemailer, swaks, and a
 * raw socket for what real clients never send), every reply code asserted with its enhanced code.
 */
import { execFile } from 'node:child_process';
import { readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import nodemailer from 'nodemailer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MailEvent } from '../src/events/types.js';
import { openSqliteStore } from '../src/store/sqlite-store.js';
import { queuedId, startTestApp, storedEvent, waitFor, type TestApp } from './helpers/app.js';
import { RawSmtp } from './helpers/raw-smtp.js';

const run = promisify(execFile);

async function getJson<T>(url: string): Promise<T> {
  const res = await fetch(url);
  expect(res.status).toBe(200);
  return (await res.json()) as T;
}

async function messages(t: TestApp): Promise<{ items: { id: string; subject: string | null }[] }> {
  return getJson(`${t.httpUrl}/api/v1/messages`);
}

/** Opens n connections, each greeted with 220. */
async function openGreeted(port: number, n: number): Promise<RawSmtp[]> {
  const open: RawSmtp[] = [];
  for (let i = 0; i < n; i++) {
    const c = await RawSmtp.connect(port);
    expect((await c.read()).code).toBe(220);
    open.push(c);
  }
  return open;
}

/** Waits until a new connection is greeted again: slots free up once the server saw the sockets close. */
async function waitForSlot(port: number): Promise<void> {
  await waitFor(async () => {
    const c = await RawSmtp.connect(port);
    const r = await c.read();
    c.close();
    return r.code === 220;
  });
}

/** Opens a session up to an accepted RCPT. */
async function transaction(t: TestApp, rcpt = 'user@example.test'): Promise<RawSmtp> {
  const c = await RawSmtp.connect(t.smtpPort);
  expect((await c.read()).code).toBe(220);
  expect((await c.command('EHLO client.test')).code).toBe(250);
  expect((await c.command('MAIL FROM:<sender@client.test>')).code).toBe(250);
  expect((await c.command(`RCPT TO:<${rcpt}>`)).code).toBe(250);
  return c;
}

describe('SMTP with the default policy (loopback catch-all)', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => t.stop());

  it('delivers over STARTTLS with nodemailer and stores the event', async () => {
    const transport = nodemailer.createTransport({
      host: '127.0.0.1',
      port: t.smtpPort,
      secure: false,
      requireTLS: true,
      tls: { rejectUnauthorized: false },
      name: 'client.example.test',
    });
    const info = await transport.sendMail({
      from: 'Alice <alice@example.org>',
      to: 'bob@example.test',
      subject: 'Hello over TLS',
      text: 'Plain text body\n',
      html: '<p>HTML body</p>',
      attachments: [{ filename: 'note.txt', content: 'attached bytes' }],
    });
    expect(info.response).toMatch(/^250 2\.0\.0 Ok: queued as [0-9A-Z]{26}$/);
    const id = queuedId(info.response);
    const event = await storedEvent(t, id);
    expect(event).toMatchObject({
      type: 'mail.received',
      version: 1,
      id,
      subject: 'Hello over TLS',
      from: [{ name: 'Alice', address: 'alice@example.org' }],
      to: [{ name: '', address: 'bob@example.test' }],
      envelope: {
        mailFrom: 'alice@example.org',
        rcptTo: ['bob@example.test'],
        remoteAddress: '127.0.0.1',
        helo: 'client.example.test',
        auth: null,
      },
      parseError: null,
    });
    expect(event.envelope.tls).toEqual({ protocol: 'TLSv1.3', cipher: expect.stringMatching(/^TLS_/) });
    expect(event.text).toBe('Plain text body\n');
    expect(event.html).toBe('<p>HTML body</p>');
    expect(event.attachments).toEqual([
      expect.objectContaining({ index: 0, filename: 'note.txt', contentType: 'text/plain', size: 14 }),
    ]);
    expect(['ham', 'spam']).toContain(event.spam.status);
    expect(typeof event.spam.score).toBe('number');
    // Our trace header comes first in the stored bytes.
    expect(event.headers[0]!.name.toLowerCase()).toBe('received');
    expect(event.headers[0]!.value).toContain(`id ${id}`);
  });

  it('delivers with swaks --tls', async () => {
    const { stdout } = await run('swaks', [
      '--to', 'swaks@example.test', '--from', 'tester@example.org', '--server', `127.0.0.1:${t.smtpPort}`,
      '--tls', '--header', 'Subject: swaks test', '--body', 'sent by swaks', '--helo', 'swaks.test',
    ]);
    const match = /<~ {2}250 2\.0\.0 Ok: queued as ([0-9A-Z]{26})/.exec(stdout);
    expect(match).not.toBeNull();
    const event = await storedEvent(t, match![1]!);
    expect(event.subject).toBe('swaks test');
    expect(event.envelope.tls?.protocol).toMatch(/^TLSv1\.[23]$/);
  });

  it('does not offer AUTH on the inbound listener by default', async () => {
    const c = await RawSmtp.connect(t.smtpPort);
    await c.read();
    const ehlo = await c.command('EHLO client.test');
    expect(ehlo.lines.some((l) => /AUTH/i.test(l))).toBe(false);
    expect(ehlo.lines).toContain('250-STARTTLS');
    expect(ehlo.lines).toContain('250-ENHANCEDSTATUSCODES');
    expect(ehlo.lines.some((l) => l.startsWith('250-SIZE 26214400') || l === '250 SIZE 26214400')).toBe(true);
    expect((await c.command('AUTH PLAIN AGZvbwBiYXI=')).raw).toBe('500 5.5.2 Error: command not recognized\r\n');
    c.close();
  });

  it('cuts off a command line longer than the limit', async () => {
    const c = await RawSmtp.connect(t.smtpPort);
    await c.read();
    await c.command('EHLO client.test');
    c.write(`MAIL FROM:<${'a'.repeat(3000)}@client.test>\r\n`);
    const r = await c.read();
    // Permanent: the client would only send the same line again.
    expect(r.raw).toBe('500 5.5.2 Error: command line too long\r\n');
    expect(await c.waitClosed()).toBe(true);
  });

  it('does not act on commands pipelined before the TLS handshake', async () => {
    const c = await RawSmtp.connect(t.smtpPort);
    await c.read();
    await c.command('EHLO client.test');
    c.write('STARTTLS\r\nMAIL FROM:<injected@evil.test>\r\n');
    const r = await c.read();
    expect(r.code).toBe(220);
    await c.startTls();
    expect((await c.command('EHLO client.test')).code).toBe(250);
    // Had the injected MAIL been acted on, a second MAIL would be 503 nested MAIL.
    expect((await c.command('MAIL FROM:<real@client.test>')).code).toBe(250);
    c.close();
  });

  it('survives a broken TLS handshake and keeps serving', async () => {
    const c = await RawSmtp.connect(t.smtpPort);
    await c.read();
    await c.command('EHLO client.test');
    expect((await c.command('STARTTLS')).code).toBe(220);
    c.write(Buffer.from('this is not a TLS ClientHello\r\n\r\n'));
    expect(await c.waitClosed(5000)).toBe(true);
    const d = await RawSmtp.connect(t.smtpPort);
    expect((await d.read()).code).toBe(220);
    d.close();
  });

  it('rejects a message with bare LF in DATA (no smuggling) and stores nothing', async () => {
    const before = (await messages(t)).items.length;
    for (const end of ['\n.\r\n', '\r\n.\n', '\n.\n', '\r.\r\n', '\n.\r']) {
      const c = await transaction(t);
      expect((await c.command('DATA')).code).toBe(354);
      c.write(
        `Subject: outer\r\n\r\nbody${end}MAIL FROM:<evil@evil.test>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nsmuggled\r\n.\r\n`,
      );
      const r = await c.read();
      expect(r.raw).toBe('550 5.5.2 Message contains bare CR or LF (RFC 5321 2.3.8), not accepted\r\n');
      // The session is still in step: the next command gets its own reply.
      expect((await c.command('RSET')).code).toBe(250);
      c.close();
    }
    const after = await messages(t);
    expect(after.items.length).toBe(before);
    expect(after.items.some((m) => m.subject === 'smuggled')).toBe(false);
  });

  it('accepts a dot-stuffed line and a lone dot inside the body as content', async () => {
    const c = await transaction(t);
    expect((await c.command('DATA')).code).toBe(354);
    c.write('Subject: dots\r\n\r\n..leading dot\r\n.. \r\nend\r\n.\r\n');
    const r = await c.read();
    expect(r.code).toBe(250);
    const id = queuedId(r.text);
    await storedEvent(t, id);
    const raw = await (await fetch(`${t.httpUrl}/api/v1/messages/${id}/raw`)).text();
    expect(raw.endsWith('Subject: dots\r\n\r\n.leading dot\r\n. \r\nend\r\n')).toBe(true);
    c.close();
  });
});

describe('early-talker test (postscreen-style)', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ spamd: false });
  });
  afterAll(async () => t.stop());

  async function greetingDelay(): Promise<number> {
    const started = performance.now();
    const c = await RawSmtp.connect(t.smtpPort);
    expect((await c.read()).code).toBe(220);
    const ms = performance.now() - started;
    await c.command('QUIT');
    c.close();
    return ms;
  }

  it('refuses an unknown client that talks first, then greets it at once once it has passed', async () => {
    const early = await RawSmtp.connect(t.smtpPort);
    early.write('EHLO early.test\r\n');
    const reply = await early.read();
    expect(reply.code).toBe(421);
    expect(reply.text).toContain('You talk too soon');
    early.close();
    // Waiting for the greeting passes the test; smtp-server holds unknown clients 100 ms.
    expect(await greetingDelay()).toBeGreaterThanOrEqual(99);
    // Now remembered: greeted without the hold. The fastest of three attempts, so a busy
    // machine cannot make one slow connection look like the 100 ms hold.
    const fast = Math.min(await greetingDelay(), await greetingDelay(), await greetingDelay());
    expect(fast).toBeLessThan(90);
  });
});

describe('SMTP with a domains table and tight limits', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({
      spamd: false,
      files: {
        domains: [
          'accept:',
          '  - example.test',
          '  - known@known.test',
          'reject_recipients:',
          '  - noreply@',
          'reject_senders:',
          '  - spammer@bad.test',
          '  - "@blocked.test"',
        ].join('\n'),
      },
      config: {
        smtp: {
          limits: {
            max_recipients: 2,
            max_message_size: 2000,
            max_connections_per_ip: 3,
            data_timeout_ms: 1500,
          },
        },
      },
    });
  });
  afterAll(async () => t.stop());

  async function session(): Promise<RawSmtp> {
    // The per-address limit here is 3, and the server frees a slot only when it has seen a
    // closed connection go (asynchronously, later under load): a 421 4.7.0 from the limit test
    // just before is retried; any other greeting fails the test.
    const c = await waitFor(async () => {
      const candidate = await RawSmtp.connect(t.smtpPort);
      const greeting = await candidate.read();
      if (greeting.code === 220) return candidate;
      candidate.close();
      expect(greeting.raw).toBe('421 4.7.0 Too many connections from your address, try again later\r\n');
      return null;
    });
    expect((await c.command('EHLO client.test')).code).toBe(250);
    return c;
  }

  it('answers each recipient and sender decision with its exact code', async () => {
    const c = await session();
    expect((await c.command('MAIL FROM:<spammer@bad.test>')).raw).toBe('550 5.7.1 Sender rejected\r\n');
    expect((await c.command('MAIL FROM:<anyone@BLOCKED.test>')).raw).toBe('550 5.7.1 Sender rejected\r\n');
    expect((await c.command('MAIL FROM:<ok@client.test>')).code).toBe(250);
    expect((await c.command('RCPT TO:<stranger@other.org>')).raw).toBe('554 5.7.1 Relay access denied\r\n');
    expect((await c.command('RCPT TO:<nobody@known.test>')).raw).toBe('550 5.1.1 No such user here\r\n');
    expect((await c.command('RCPT TO:<noreply@example.test>')).raw).toBe('550 5.1.1 Mailbox unavailable\r\n');
    expect((await c.command('RCPT TO:<KNOWN@Known.Test>')).code).toBe(250);
    expect((await c.command('RCPT TO:<anyone@EXAMPLE.test>')).code).toBe(250);
    expect((await c.command('RCPT TO:<third@example.test>')).raw).toBe('452 4.5.3 Too many recipients\r\n');
    c.close();
  });

  it('with smtp.starttls off, STARTTLS is neither offered nor accepted', async () => {
    const u = await startTestApp({ spamd: false, config: { smtp: { starttls: false } } });
    try {
      const c = await RawSmtp.connect(u.smtpPort);
      // The greeting names mailwire once.
      expect((await c.read()).raw).toMatch(/^220 \S+ ESMTP mailwire\r\n$/);
      expect((await c.command('EHLO client.test')).lines.some((l) => l.includes('STARTTLS'))).toBe(false);
      const reply = await c.command('STARTTLS');
      expect(reply.code).toBe(500);
      expect(reply.raw).toMatch(/^500 5\.5\.2 /);
      // Still plain text: the session goes on.
      expect((await c.command('NOOP')).code).toBe(250);
      c.close();
    } finally {
      await u.stop();
    }
  });

  it('matches IDNA domains in either form', async () => {
    const u = await startTestApp({ spamd: false, files: { domains: 'accept: [bücher.example]\n' } });
    try {
      const c = await RawSmtp.connect(u.smtpPort);
      await c.read();
      await c.command('EHLO client.test');
      await c.command('MAIL FROM:<a@client.test>');
      expect((await c.command('RCPT TO:<shop@xn--bcher-kva.example>')).code).toBe(250);
      expect((await c.command('RCPT TO:<shop@other.example>')).code).toBe(554);
      c.close();
    } finally {
      await u.stop();
    }
  });

  it('refuses an oversized message with 552 5.3.4 and keeps nothing on disk', async () => {
    const c = await session();
    await c.command('MAIL FROM:<ok@client.test>');
    await c.command('RCPT TO:<a@example.test>');
    expect((await c.command('DATA')).code).toBe(354);
    c.write('Subject: big\r\n\r\n' + 'x'.repeat(78).concat('\r\n').repeat(100) + '.\r\n');
    const r = await c.read();
    expect(r.code).toBe(552);
    expect(r.raw.startsWith('552 5.3.4 ')).toBe(true);
    c.close();
    const spoolDir = join(t.config.storage.data_dir, 'spool');
    expect(readdirSync(join(spoolDir, 'tmp'))).toEqual([]);
    expect(readdirSync(join(spoolDir, 'incoming'))).toEqual([]);
  });

  it('limits connections per client address with 421 4.7.0', async () => {
    const open = await openGreeted(t.smtpPort, 3);
    const extra = await RawSmtp.connect(t.smtpPort);
    expect((await extra.read()).raw).toBe('421 4.7.0 Too many connections from your address, try again later\r\n');
    expect(await extra.waitClosed()).toBe(true);
    open.forEach((c) => c.close());
    await waitForSlot(t.smtpPort);
  });

  it('frees the slot of a connection that used STARTTLS when it closes: more STARTTLS sessions in turn than the per-address limit are all greeted', async () => {
    // smtp-server's STARTTLS removes every listener from the plain socket; the slot used to be
    // freed by one of them, so each STARTTLS session kept its slot until the restart.
    for (let i = 1; i <= 3 + 2; i++) {
      await waitForSlot(t.smtpPort);
      const c = await RawSmtp.connect(t.smtpPort);
      expect((await c.read()).raw, `session ${i}`).toMatch(/^220 /);
      expect((await c.command('EHLO client.test')).code).toBe(250);
      expect((await c.command('STARTTLS')).code).toBe(220);
      await c.startTls();
      expect((await c.command('EHLO client.test')).code).toBe(250);
      expect((await c.command('QUIT')).code).toBe(221);
      expect(await c.waitClosed()).toBe(true);
    }
    // And the three slots are all free again at once.
    await waitFor(async () => {
      const open = await Promise.all([1, 2, 3].map(() => RawSmtp.connect(t.smtpPort)));
      const greetings = await Promise.all(open.map((c) => c.read()));
      open.forEach((c) => c.close());
      return greetings.every((g) => g.code === 220);
    });
  });

  it('enforces an absolute DATA deadline against a trickling client', async () => {
    const c = await session();
    await c.command('MAIL FROM:<ok@client.test>');
    await c.command('RCPT TO:<a@example.test>');
    expect((await c.command('DATA')).code).toBe(354);
    // One byte every 200 ms never trips the 60 s idle timeout, but the deadline is absolute.
    const trickle = setInterval(() => c.write('x'), 200);
    try {
      const r = await c.read(5000);
      expect(r.raw).toBe('421 4.4.2 DATA time limit exceeded, closing connection\r\n');
      expect(await c.waitClosed()).toBe(true);
    } finally {
      clearInterval(trickle);
    }
  });
});

describe('total connection limit', () => {
  it('refuses connections beyond max_connections with 421 4.7.0', async () => {
    const t = await startTestApp({ spamd: false, config: { smtp: { limits: { max_connections: 2 } } } });
    try {
      const open = await openGreeted(t.smtpPort, 2);
      const extra = await RawSmtp.connect(t.smtpPort);
      expect((await extra.read()).raw).toBe('421 4.7.0 Too many connections, try again later\r\n');
      open.forEach((c) => c.close());
      await waitForSlot(t.smtpPort);
    } finally {
      await t.stop();
    }
  });
});

describe('SMTP session deadline and implicit TLS', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ spamd: false, config: { smtp: { tls_port: 0, limits: { session_timeout_ms: 800, data_timeout_ms: 500 } } } });
  });
  afterAll(async () => t.stop());

  it('closes a session at its absolute deadline with 421 4.4.2', async () => {
    const c = await RawSmtp.connect(t.smtpPort);
    await c.read();
    const keepAlive = setInterval(() => c.write('NOOP\r\n'), 100);
    try {
      let reply;
      do reply = await c.read(5000);
      while (reply.code === 250);
      expect(reply.raw).toBe('421 4.4.2 Session time limit exceeded, closing connection\r\n');
    } finally {
      clearInterval(keepAlive);
    }
    expect(await c.waitClosed()).toBe(true);
  });

  it('delivers on the implicit TLS port with nodemailer', async () => {
    const transport = nodemailer.createTransport({
      host: '127.0.0.1',
      port: t.addresses.smtps!.port,
      secure: true,
      tls: { rejectUnauthorized: false },
    });
    const info = await transport.sendMail({ from: 'a@example.org', to: 'b@example.test', subject: 'implicit', text: 'x' });
    expect(info.response).toMatch(/^250 2\.0\.0 /);
  });

  it('refuses TLS 1.1', async () => {
    const { connect } = await import('node:tls');
    const err = await new Promise<Error | null>((resolve) => {
      const s = connect({ port: t.addresses.smtps!.port, host: '127.0.0.1', rejectUnauthorized: false, maxVersion: 'TLSv1.1', minVersion: 'TLSv1' });
      s.once('secureConnect', () => {
        s.destroy();
        resolve(null);
      });
      s.once('error', (e) => resolve(e));
    });
    expect(err).not.toBeNull();
  });
});

describe('graceful shutdown', () => {
  it('lets a message in flight finish with 250, then answers 421 and stops accepting', async () => {
    const t = await startTestApp({ spamd: false, config: { smtp: { shutdown_grace_ms: 3000 } } });
    const c = await RawSmtp.connect(t.smtpPort);
    await c.read();
    await c.command('EHLO client.test');
    await c.command('MAIL FROM:<a@client.test>');
    await c.command('RCPT TO:<b@example.test>');
    expect((await c.command('DATA')).code).toBe(354);
    c.write('Subject: in flight\r\n\r\nfirst half\r\n');
    const stopping = t.app.stop();
    // Give stop() a moment to close the listener, then finish the message.
    await new Promise((r) => setTimeout(r, 100));
    c.write('second half\r\n.\r\n');
    expect((await c.read()).raw).toMatch(/^250 2\.0\.0 Ok: queued as [0-9A-Z]{26}\r\n$/);
    const next = await c.command('MAIL FROM:<a@client.test>');
    expect(next.code).toBe(421);
    expect(await c.waitClosed()).toBe(true);
    await expect(RawSmtp.connect(t.smtpPort)).rejects.toThrow(/ECONNREFUSED/);
    await stopping;
    // Stored before the stop finished, with nothing left for recovery.
    const store = openSqliteStore(t.config.storage.data_dir);
    expect(store.list({}).items.map((m) => m.subject)).toEqual(['in flight']);
    await store.close();
    expect(readdirSync(join(t.config.storage.data_dir, 'spool', 'incoming'))).toEqual([]);
    rmSync(t.dir, { recursive: true, force: true });
  });
});
