/**
 * Regressions from the security review of the inbound core, each named after the finding:
 * bare newlines in commands, quoted local parts, deadlines that must not hit a message being
 * processed, disk errors mid-DATA, graceful stop with a message in processing, and admission.
 */
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { validateConfig } from '../src/config/load.js';
import { clientKey, ConnectionAdmission } from '../src/smtp/admission.js';
import { openSqliteStore } from '../src/store/sqlite-store.js';
import { queuedId, startTestApp, storedEvent, type TestApp } from './helpers/app.js';
import { RawSmtp } from './helpers/raw-smtp.js';

async function greeted(t: TestApp): Promise<RawSmtp> {
  const c = await RawSmtp.connect(t.smtpPort);
  expect((await c.read()).code).toBe(220);
  return c;
}

/** Every reply the server sends until it closes the connection (each read waits at most 3 s). */
async function repliesUntilClosed(c: RawSmtp): Promise<string[]> {
  const replies: string[] = [];
  try {
    for (;;) replies.push((await c.read(3000)).raw);
  } catch {
    // closed
  }
  return replies;
}

/** A session at its DATA: greeted, one sender and one recipient accepted, 354 received. */
async function inData(t: TestApp): Promise<RawSmtp> {
  const c = await greeted(t);
  await c.command('EHLO x.test');
  await c.command('MAIL FROM:<a@x.test>');
  await c.command('RCPT TO:<b@example.test>');
  expect((await c.command('DATA')).code).toBe(354);
  return c;
}

async function count(t: TestApp): Promise<number> {
  const res = await fetch(`${t.httpUrl}/api/v1/messages`);
  return ((await res.json()) as { items: unknown[] }).items.length;
}

/** A spamd stand-in that accepts and never answers: a real spamd cannot be made to hang. */
async function silentSpamd(): Promise<{ server: Server; port: number }> {
  const server = createServer({ allowHalfOpen: true }, (s) => s.on('data', () => {}));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, port: (server.address() as AddressInfo).port };
}

describe('bare CR or LF in commands', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ spamd: false });
  });
  afterAll(async () => t.stop());

  it('refuses LF-terminated commands with 500 5.5.2 and stores nothing, even with a whole transaction pipelined', async () => {
    const c = await greeted(t);
    c.write('EHLO x.test\nMAIL FROM:<a@x.test>\nRCPT TO:<b@example.test>\nDATA\nSubject: lf\r\n\r\nbody\r\n.\r\nQUIT\r\n');
    const replies = await repliesUntilClosed(c);
    expect(replies.at(-1)).toBe('500 5.5.2 Bare CR or LF in a command is not allowed (RFC 5321 2.3.8)\r\n');
    expect(replies.some((r) => r.startsWith('250 2.0.0 Ok: queued'))).toBe(false);
    expect(c.closed).toBe(true);
    expect(await count(t)).toBe(0);
  });

  it('refuses a bare CR inside a command', async () => {
    const c = await greeted(t);
    await c.command('EHLO x.test');
    c.write('MAIL FROM:<a@x.test>\rRCPT TO:<c@example.test>\r\n');
    const r = await c.read();
    expect(r.code).toBe(500);
    expect(await c.waitClosed()).toBe(true);
  });

  it('checks commands pipelined after the final dot in the same chunk as the message', async () => {
    const c = await inData(t);
    c.write('Subject: clean message\r\n\r\nbody\r\n.\r\nMAIL FROM:<a@x.test>\nRCPT TO:<b@example.test>\n');
    const replies = await repliesUntilClosed(c);
    expect(replies).toEqual(['500 5.5.2 Bare CR or LF in a command is not allowed (RFC 5321 2.3.8)\r\n']);
    expect(c.closed).toBe(true);
    expect(await count(t)).toBe(0);
  });

  it('finds the final dot split across chunks, and a message of no lines', async () => {
    const c = await inData(t);
    c.write('Subject: split\r\n\r\nbody\r\n.');
    await new Promise((r) => setTimeout(r, 50));
    c.write('\r\nMAIL FROM:<a@x.test>\n');
    expect((await c.read(3000)).raw).toBe('500 5.5.2 Bare CR or LF in a command is not allowed (RFC 5321 2.3.8)\r\n');
    expect(await c.waitClosed()).toBe(true);

    const empty = await inData(t);
    empty.write('.\r\nRSET\n');
    expect((await empty.read(3000)).raw).toBe('500 5.5.2 Bare CR or LF in a command is not allowed (RFC 5321 2.3.8)\r\n');
    expect(await empty.waitClosed()).toBe(true);
    expect(await count(t)).toBe(0);
  });

  it('cannot be switched off by a STARTTLS the server refuses and chunks that look like TLS', async () => {
    const c = await greeted(t);
    await c.command('EHLO x.test');
    expect((await c.command(' STARTTLS')).code).toBe(500);
    c.write('\x16\r\nMAIL FROM:<a@x.test>\nRCPT TO:<b@example.test>\n');
    const replies = await repliesUntilClosed(c);
    expect(replies.at(-1)).toBe('500 5.5.2 Bare CR or LF in a command is not allowed (RFC 5321 2.3.8)\r\n');
    expect(replies.some((r) => r.startsWith('250'))).toBe(false);
    expect(c.closed).toBe(true);
  });

  it('keeps checking after a STARTTLS that is refused (a second one inside TLS)', async () => {
    const c = await greeted(t);
    await c.command('EHLO x.test');
    expect((await c.command('STARTTLS')).code).toBe(220);
    await c.startTls();
    await c.command('EHLO x.test');
    expect((await c.command('STARTTLS')).code).toBe(503);
    c.write('MAIL FROM:<a@x.test>\nRCPT TO:<b@example.test>\n');
    expect((await c.read(3000)).raw).toBe('500 5.5.2 Bare CR or LF in a command is not allowed (RFC 5321 2.3.8)\r\n');
    expect(await c.waitClosed()).toBe(true);
  });

  it('still accepts a clean session afterwards', async () => {
    const c = await greeted(t);
    expect((await c.command('EHLO x.test')).code).toBe(250);
    expect((await c.command('MAIL FROM:<a@x.test>')).code).toBe(250);
    c.close();
  });
});

describe('reject lists cannot be walked around by quoting', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({
      spamd: false,
      files: { domains: 'accept: [example.com]\nreject_recipients: [noreply@, blocked@example.com]\nreject_senders: [spammer@evil.test]\n' },
    });
  });
  afterAll(async () => t.stop());

  it('treats "noreply"@ like noreply@', async () => {
    const c = await greeted(t);
    await c.command('EHLO x.test');
    expect((await c.command('MAIL FROM:<"spammer"@evil.test>')).raw).toBe('550 5.7.1 Sender rejected\r\n');
    expect((await c.command('MAIL FROM:<ok@x.test>')).code).toBe(250);
    expect((await c.command('RCPT TO:<"noreply"@example.com>')).raw).toBe('550 5.1.1 Mailbox unavailable\r\n');
    expect((await c.command('RCPT TO:<"blocked"@example.com>')).raw).toBe('550 5.1.1 Mailbox unavailable\r\n');
    expect((await c.command('RCPT TO:<"someone"@example.com>')).code).toBe(250);
    c.close();
  });
});

describe('deadlines never hit a message that is being processed', () => {
  let t: TestApp;
  let spamd: { server: Server; port: number };
  beforeAll(async () => {
    spamd = await silentSpamd();
    t = await startTestApp({
      config: {
        spamd: { enabled: true, host: '127.0.0.1', port: spamd.port, timeout_ms: 1500 },
        smtp: { limits: { data_timeout_ms: 500, session_timeout_ms: 1000 } },
      },
    });
  });
  afterAll(async () => {
    await t.stop();
    spamd.server.close();
  });

  it('answers 250 after a slow spamd, then closes the expired session', async () => {
    const c = await greeted(t);
    await c.command('EHLO x.test');
    await c.command('MAIL FROM:<a@x.test>');
    await c.command('RCPT TO:<b@example.test>');
    await c.command('DATA');
    c.write('Subject: slow scoring\r\n\r\nbody\r\n.\r\n');
    // Processing takes ~1.5 s (spamd's deadline): past the DATA deadline and the session deadline.
    const r = await c.read(5000);
    expect(r.raw).toMatch(/^250 2\.0\.0 Ok: queued as [0-9A-Z]{26}\r\n$/);
    const event = await storedEvent(t, queuedId(r.text));
    expect(event.spam.status).toBe('error');
    // The session deadline passed meanwhile: it takes effect right after the reply.
    expect((await c.read(3000)).raw).toBe('421 4.4.2 Session time limit exceeded, closing connection\r\n');
    expect(await c.waitClosed()).toBe(true);
    expect(await count(t)).toBe(1);
  });
});

describe('a disk error while receiving DATA', () => {
  it('answers 451 4.3.0 at the end of the data instead of leaving the client hanging', async () => {
    const t = await startTestApp({ spamd: false });
    const tmp = join(t.config.storage.data_dir, 'spool', 'tmp');
    try {
      // The spool's temp directory replaced by a file: opening the message file fails (ENOTDIR).
      rmSync(tmp, { recursive: true });
      writeFileSync(tmp, 'not a directory');
      const c = await greeted(t);
      await c.command('EHLO x.test');
      await c.command('MAIL FROM:<a@x.test>');
      await c.command('RCPT TO:<b@example.test>');
      await c.command('DATA');
      c.write(`Subject: disk error\r\n\r\n${'x'.repeat(70)}\r\n`.repeat(2000) + '.\r\n');
      expect((await c.read(5000)).raw).toBe('451 4.3.0 Local error in processing, try again later\r\n');
      // The session stays usable.
      expect((await c.command('RSET')).code).toBe(250);
      c.close();
    } finally {
      rmSync(tmp, { force: true });
      mkdirSync(tmp);
      await t.stop();
    }
  });
});

describe('graceful stop with a message in processing', () => {
  /** A session whose message (subject `subject`) is sent and now waits on a spamd that never answers. */
  async function sentAndWaitingOnSpamd(t: TestApp, subject: string): Promise<RawSmtp> {
    const c = await greeted(t);
    await c.command('EHLO x.test');
    await c.command('MAIL FROM:<a@x.test>');
    await c.command('RCPT TO:<b@example.test>');
    await c.command('DATA');
    c.write(`Subject: ${subject}\r\n\r\nbody\r\n.\r\n`);
    return c;
  }

  /** Once the app stopped: what the store holds, and that the spool is empty. */
  async function storedAfterStop(t: TestApp): Promise<(string | null)[]> {
    const store = openSqliteStore(t.config.storage.data_dir);
    const subjects = store.list({}).items.map((m) => m.subject);
    await store.close();
    expect(readdirSync(join(t.config.storage.data_dir, 'spool', 'incoming'))).toEqual([]);
    return subjects;
  }

  it('refuses a transaction begun after the stop began (MAIL, or DATA after an earlier MAIL) with 421', async () => {
    // smtp-server answers every command with 421 once its close() was called (stop() does that
    // first), so nothing can reach the pipeline or the spool after they close.
    const spamd = await silentSpamd();
    const t = await startTestApp({
      config: { spamd: { enabled: true, host: '127.0.0.1', port: spamd.port, timeout_ms: 1500 }, smtp: { shutdown_grace_ms: 1000 } },
    });
    try {
      // One message waiting on spamd keeps the stop in its grace period.
      const busy = await sentAndWaitingOnSpamd(t, 'in flight');
      const idle = await greeted(t);
      await idle.command('EHLO y.test');
      const midway = await greeted(t);
      await midway.command('EHLO z.test');
      await midway.command('MAIL FROM:<c@x.test>');
      expect((await midway.command('RCPT TO:<d@example.test>')).code).toBe(250);
      await new Promise((r) => setTimeout(r, 200)); // the busy one is now waiting on spamd
      const stopping = t.app.stop();
      expect((await idle.command('MAIL FROM:<e@x.test>')).raw).toBe('421 4.3.2 Service shutting down, try again later\r\n');
      expect((await midway.command('DATA')).raw).toBe('421 4.3.2 Service shutting down, try again later\r\n');
      expect((await busy.read(5000)).raw).toMatch(/^250 2\.0\.0 Ok: queued as /);
      await stopping;
      expect(await storedAfterStop(t)).toEqual(['in flight']);
    } finally {
      spamd.server.close();
      rmSync(t.dir, { recursive: true, force: true });
    }
  });

  it('lets the message finish with 250 and stores it before the store closes', async () => {
    const spamd = await silentSpamd();
    const t = await startTestApp({
      config: { spamd: { enabled: true, host: '127.0.0.1', port: spamd.port, timeout_ms: 1500 }, smtp: { shutdown_grace_ms: 200 } },
    });
    try {
      const c = await sentAndWaitingOnSpamd(t, 'stopping');
      await new Promise((r) => setTimeout(r, 200)); // now waiting on spamd
      const stopping = t.app.stop();
      expect((await c.read(5000)).raw).toMatch(/^250 2\.0\.0 Ok: queued as /);
      expect((await c.read(3000)).code).toBe(421);
      await stopping;
      expect(await storedAfterStop(t)).toEqual(['stopping']);
    } finally {
      spamd.server.close();
      rmSync(t.dir, { recursive: true, force: true });
    }
  });
});

describe('connection admission', () => {
  it('counts IPv6 clients by their /64 and IPv4-mapped addresses as IPv4', () => {
    expect(clientKey('2001:db8:1:2:aaaa::1')).toBe('2001:db8:1:2::/64');
    expect(clientKey('2001:db8:1:2:bbbb::9')).toBe('2001:db8:1:2::/64');
    expect(clientKey('::ffff:192.0.2.7')).toBe('192.0.2.7');
    expect(clientKey('192.0.2.7')).toBe('192.0.2.7');
    const a = new ConnectionAdmission({ max_connections: 10, max_connections_per_ip: 2 });
    expect(a.admit('2001:db8:1:2::1').kind).toBe('admit');
    expect(a.admit('2001:db8:1:2::2').kind).toBe('admit');
    expect(a.admit('2001:db8:1:2::3')).toEqual({ kind: 'refuse', reply: '421 4.7.0 Too many connections from your address, try again later' });
    expect(a.admit('2001:db8:1:3::1').kind).toBe('admit');
    a.release('2001:db8:1:2::/64');
    expect(a.admit('2001:db8:1:2::4').kind).toBe('admit');
    expect(a.total).toBe(3);
  });

  it('refuses at accept time, before the greeting delay', async () => {
    const t = await startTestApp({ spamd: false, config: { smtp: { limits: { max_connections_per_ip: 1 } } } });
    try {
      const first = await RawSmtp.connect(t.smtpPort);
      // Refused without smtp-server's 100 ms early-talker hold or any session work. The fastest
      // of three attempts, so one slow connection on a busy machine does not decide it.
      const delays: number[] = [];
      for (let i = 0; i < 3; i++) {
        const started = performance.now();
        const second = await RawSmtp.connect(t.smtpPort);
        expect((await second.read()).raw).toBe('421 4.7.0 Too many connections from your address, try again later\r\n');
        delays.push(performance.now() - started);
        expect(await second.waitClosed()).toBe(true);
      }
      expect(Math.min(...delays)).toBeLessThan(90);
      first.close();
    } finally {
      await t.stop();
    }
  });
});

describe('configuration bounds from the review', () => {
  it('refuses durations past the timer limit, empty hosts and AUTH without TLS', () => {
    expect(() => validateConfig({ smtp: { limits: { session_timeout_ms: 3_000_000_000 } } }, '.')).toThrow(/smtp\.limits\.session_timeout_ms/);
    expect(() => validateConfig({ http: { host: '' } }, '.')).toThrow(/http\.host: must not be empty/);
    expect(() => validateConfig({ smtp: { auth: { enabled: true }, starttls: false } }, '.')).toThrow(/smtp\.auth\.enabled: AUTH requires TLS/);
    expect(() => validateConfig({ smtp: { limits: { data_timeout_ms: 5000, session_timeout_ms: 1000 } } }, '.')).toThrow(/data_timeout_ms must not exceed/);
  });
});

