/**
 * Relaying over SMTP (issue 4, SMTP side): the real app, a real upstream (our smtp-server sink)
 * as the mailertable target, raw SMTP as the client. A client in relayhosts or authenticated
 * with AUTH (after STARTTLS) may send to one non-local recipient per transaction; the reply to
 * DATA is the upstream's. Asserts codes, the bytes on the wire, and that nothing is stored.
 */
import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashPassword } from '../src/auth/ssha.js';
import type { AnyEvent } from '../src/events/types.js';
import { newMessageId } from '../src/events/id.js';
import { Spool } from '../src/spool/spool.js';
import { queuedId, startTestApp, storedEvent, waitFor, type TestApp } from './helpers/app.js';
import { freePort } from './helpers/ports.js';
import { RawSmtp } from './helpers/raw-smtp.js';
import { startSmtpSink, type SmtpSink } from './helpers/smtp-sink.js';
import { startHookApp, type HookApp } from './helpers/hooks.js';

const MESSAGE = (rcpt: string, subject: string) =>
  [`From: Sender <sender@client.test>`, `To: <${rcpt}>`, `Subject: ${subject}`, 'Message-ID: <relay-test@client.test>', '', 'Hello upstream.', 'Second line.', ''].join('\r\n');

/** EHLO, MAIL, one RCPT per address; returns the RCPT replies. */
async function envelope(c: RawSmtp, from: string, rcpts: string[]): Promise<{ code: number; line: string }[]> {
  expect((await c.command(`MAIL FROM:<${from}>`)).code).toBe(250);
  const out: { code: number; line: string }[] = [];
  for (const r of rcpts) {
    const reply = await c.command(`RCPT TO:<${r}>`);
    out.push({ code: reply.code, line: reply.lines.at(-1)! });
  }
  return out;
}

/** DATA with the message; returns the final reply's line. */
async function data(c: RawSmtp, body: string): Promise<{ code: number; line: string }> {
  expect((await c.command('DATA')).code).toBe(354);
  c.write(body + '.\r\n');
  const reply = await c.read(20_000);
  return { code: reply.code, line: reply.lines.at(-1)! };
}

async function open(port: number): Promise<RawSmtp> {
  const c = await RawSmtp.connect(port);
  expect((await c.read()).code).toBe(220);
  expect((await c.command('EHLO client.test')).code).toBe(250);
  return c;
}

function spoolEntries(t: TestApp): string[] {
  return readdirSync(join(t.dir, 'data', 'spool', 'incoming'));
}

/** The spool entry of an accepted relayed message is released just after the reply (bounded wait). */
async function spoolDrained(t: TestApp): Promise<void> {
  await waitFor(async () => spoolEntries(t).length === 0, 5000);
}

describe('relaying over SMTP from a client in relayhosts (loopback, the default)', () => {
  let sink: SmtpSink;
  let authSink: SmtpSink;
  let t: TestApp;
  const events: AnyEvent[] = [];

  beforeAll(async () => {
    sink = await startSmtpSink({
      rcptReplies: { 'unknown@example.org': [550, '5.1.1 <unknown@example.org>: Recipient address rejected: User unknown'] },
      dataReplies: { 'later@example.org': [452, '4.2.2 Mailbox full, try again later'] },
    });
    authSink = await startSmtpSink({ auth: { user: 'relayuser', pass: 'right' } });
    const downPort = await freePort();
    t = await startTestApp({
      spamd: false,
      onEvent: (e) => events.push(e),
      files: {
        // Not a catch-all: mail for local.test is ours, everything else is not local.
        domains: 'accept: [local.test]\n',
        mailertable: [
          `default: { mailer: ESMTP, host: 127.0.0.1, port: ${sink.port} }`,
          `down.test: { mailer: ESMTP, host: 127.0.0.1, port: ${downPort}, timeout: 3 }`,
          'discard.test: { mailer: Discard }',
          `badauth.test: { mailer: ESMTP, host: 127.0.0.1, port: ${authSink.port}, auth: stale }`,
          '',
        ].join('\n'),
        authinfo: "stale: { username: relayuser, password: 'wrong' }\n",
        recipients: 'domainpart: [example.org, down.test, discard.test, badauth.test]\n',
      },
    });
  });
  afterAll(async () => {
    await t?.stop();
    await sink?.close();
    await authSink?.close();
  });

  it('relays to an allowed recipient: the bytes (with our Received:) arrive upstream, the client gets the upstream 250 text', async () => {
    const before = sink.messages.length;
    const c = await open(t.smtpPort);
    expect(await envelope(c, 'sender@client.test', ['Friend@Example.org'])).toEqual([{ code: 250, line: '250 2.1.5 Accepted' }]);
    const body = MESSAGE('friend@example.org', 'Relayed over SMTP');
    const reply = await data(c, body);
    expect(reply.code).toBe(250);
    expect(reply.line).toBe(`250 2.0.0 Ok: queued as SINK${before + 1}`);
    const [arrived] = (await sink.waitFor(before + 1)).slice(before);
    expect(arrived!.from).toBe('sender@client.test');
    // The local part as the client sent it (the domain is case-insensitive and arrives lower-cased).
    expect(arrived!.to).toEqual(['Friend@example.org']);
    const wire = arrived!.data.toString('latin1');
    expect(wire).toMatch(/^Received: from client\.test \(/);
    expect(wire).toContain('by mx.mailwire.test');
    // The client's bytes follow our trace header unchanged.
    expect(wire.endsWith(body)).toBe(true);
    expect((await c.command('QUIT')).code).toBe(221);
    c.close();
    // Not local mail: no event, nothing stored, nothing left in the spool.
    expect(events.filter((e) => e.type === 'mail.received')).toEqual([]);
    const list = (await (await fetch(`${t.httpUrl}/api/v1/messages`)).json()) as { items: unknown[] };
    expect(list.items).toEqual([]);
    await spoolDrained(t);
  });

  it("passes the upstream's refusal of the recipient back: 550 with its enhanced code and text", async () => {
    const c = await open(t.smtpPort);
    expect((await envelope(c, 'sender@client.test', ['unknown@example.org']))[0]!.code).toBe(250);
    const reply = await data(c, MESSAGE('unknown@example.org', 'Nobody'));
    expect(reply).toEqual({ code: 550, line: '550 5.1.1 <unknown@example.org>: Recipient address rejected: User unknown' });
    // The session goes on: the client may send the next message.
    expect((await c.command('RSET')).code).toBe(250);
    c.close();
    expect(spoolEntries(t)).toEqual([]);
  });

  it("passes the upstream's temporary refusal at the end of DATA back as the same 4xx", async () => {
    const c = await open(t.smtpPort);
    await envelope(c, 'sender@client.test', ['later@example.org']);
    expect(await data(c, MESSAGE('later@example.org', 'Later'))).toEqual({ code: 452, line: '452 4.2.2 Mailbox full, try again later' });
    c.close();
  });

  it('answers 451 4.4.1 when the upstream cannot be reached (a 421 would close the session)', async () => {
    const c = await open(t.smtpPort);
    await envelope(c, 'sender@client.test', ['someone@down.test']);
    const reply = await data(c, MESSAGE('someone@down.test', 'Down'));
    expect(reply.code).toBe(451);
    expect(reply.line).toMatch(/^451 4\.4\.1 Upstream unavailable, try again later: Cannot connect SMTP Server/);
    expect((await c.command('NOOP')).code).toBe(250);
    c.close();
    expect(spoolEntries(t)).toEqual([]);
  });

  it('defers (451 4.7.0) when the upstream refuses our AUTH: a wrong authinfo password must not make the client bounce the mail', async () => {
    const c = await open(t.smtpPort);
    await envelope(c, 'sender@client.test', ['someone@badauth.test']);
    expect(await data(c, MESSAGE('someone@badauth.test', 'Stale password'))).toEqual({
      code: 451,
      line: '451 4.7.0 Upstream refused our authentication, try again later: Authentication credentials invalid',
    });
    c.close();
    expect(authSink.messages).toEqual([]);
    expect(spoolEntries(t)).toEqual([]);
  });

  it("answers 250 for a local mailer's 200 (Discard)", async () => {
    const before = sink.messages.length;
    const c = await open(t.smtpPort);
    await envelope(c, 'sender@client.test', ['gone@discard.test']);
    expect(await data(c, MESSAGE('gone@discard.test', 'Discarded'))).toEqual({ code: 250, line: '250 2.0.0 Discard' });
    c.close();
    expect(sink.messages.length).toBe(before);
    await spoolDrained(t);
  });

  it('refuses a recipient the recipients table does not allow with 554 5.7.1 Relay access denied', async () => {
    const c = await open(t.smtpPort);
    expect(await envelope(c, 'sender@client.test', ['x@elsewhere.test', 'friend@example.org'])).toEqual([
      { code: 554, line: '554 5.7.1 Relay access denied' },
      // A refused recipient does not count: the allowed one is still the transaction's only one.
      { code: 250, line: '250 2.1.5 Accepted' },
    ]);
    c.close();
  });

  it('keeps a relayed recipient alone in its transaction: 452 4.5.3 for a second one and for local ones, either way round', async () => {
    const c = await open(t.smtpPort);
    expect(await envelope(c, 'sender@client.test', ['a@example.org', 'b@example.org', 'A@example.org', 'box@local.test'])).toEqual([
      { code: 250, line: '250 2.1.5 Accepted' },
      { code: 452, line: '452 4.5.3 Too many recipients' },
      // The same address again is still one recipient.
      { code: 250, line: '250 2.1.5 Accepted' },
      { code: 452, line: '452 4.5.3 Too many recipients' },
    ]);
    expect((await c.command('RSET')).code).toBe(250);
    expect(await envelope(c, 'sender@client.test', ['box@local.test', 'a@example.org'])).toEqual([
      { code: 250, line: '250 2.1.5 Accepted' },
      { code: 452, line: '452 4.5.3 Too many recipients' },
    ]);
    // The local transaction is delivered locally, as usual.
    const reply = await data(c, MESSAGE('box@local.test', 'Local one'));
    expect(reply.code).toBe(250);
    const id = queuedId(reply.line);
    // After the transaction, the next one may relay again.
    expect(await envelope(c, 'sender@client.test', ['a@example.org'])).toEqual([{ code: 250, line: '250 2.1.5 Accepted' }]);
    c.close();
    const event = await storedEvent(t, id);
    expect(event.envelope.rcptTo).toEqual(['box@local.test']);
  });

  it('stores local mail as usual and never relays it', async () => {
    const before = sink.messages.length;
    const c = await open(t.smtpPort);
    await envelope(c, 'sender@client.test', ['box@local.test']);
    const reply = await data(c, MESSAGE('box@local.test', 'Stored locally'));
    expect(reply.line).toMatch(/^250 2\.0\.0 Ok: queued as [0-9A-Z]{26}$/);
    c.close();
    const event = await storedEvent(t, queuedId(reply.line));
    expect(event.subject).toBe('Stored locally');
    expect(sink.messages.length).toBe(before);
    expect(events.filter((e) => e.type === 'mail.received').map((e) => (e as { id: string }).id)).toContain(event.id);
  });
});

describe('relaying over SMTP for a client outside relayhosts', () => {
  let sink: SmtpSink;
  let t: TestApp;
  const PASSWORD = 'correct horse battery';

  beforeAll(async () => {
    sink = await startSmtpSink();
    t = await startTestApp({
      spamd: false,
      config: { smtp: { auth: { enabled: true } } },
      files: {
        domains: 'accept: [local.test]\n',
        relayhosts: "relayhosts: ['192.0.2.0/24']\n",
        mailertable: `default: { mailer: ESMTP, host: 127.0.0.1, port: ${sink.port} }\n`,
        recipients: 'domainpart: [example.org]\n',
        password: `relayer: '${hashPassword(PASSWORD, 'ssha512')}'\n`,
      },
    });
  });
  afterAll(async () => {
    await t?.stop();
    await sink?.close();
  });

  const plain = (user: string, pass: string) => Buffer.from(`\0${user}\0${pass}`).toString('base64');

  it('refuses non-local recipients with 554 5.7.1 without AUTH', async () => {
    const c = await open(t.smtpPort);
    expect(await envelope(c, 'sender@client.test', ['friend@example.org'])).toEqual([{ code: 554, line: '554 5.7.1 Relay access denied' }]);
    c.close();
  });

  it('offers no AUTH before STARTTLS (538 5.7.11), and offers it once TLS is on', async () => {
    const c = await RawSmtp.connect(t.smtpPort);
    expect((await c.read()).code).toBe(220);
    const plainEhlo = await c.command('EHLO client.test');
    expect(plainEhlo.lines.some((l) => /^250[- ]AUTH\b/.test(l))).toBe(false);
    expect(plainEhlo.lines).toContain('250-STARTTLS');
    expect((await c.command(`AUTH PLAIN ${plain('relayer', PASSWORD)}`)).raw).toBe('538 5.7.11 Encryption required for requested authentication mechanism\r\n');
    expect((await c.command('STARTTLS')).code).toBe(220);
    await c.startTls();
    const tlsEhlo = await c.command('EHLO client.test');
    expect(tlsEhlo.lines).toContain('250-AUTH PLAIN LOGIN');
    c.close();
  });

  it('keeps the EHLO greeting line when the server name itself starts with "auth"', async () => {
    const named = await startTestApp({ spamd: false, config: { smtp: { hostname: 'auth.mailwire.test', auth: { enabled: true } } } });
    try {
      const c = await RawSmtp.connect(named.smtpPort);
      expect((await c.read()).code).toBe(220);
      const ehlo = await c.command('EHLO client.test');
      expect(ehlo.lines[0]).toMatch(/^250-auth\.mailwire\.test /);
      expect(ehlo.lines.some((l) => /^250[- ]AUTH\b/.test(l))).toBe(false);
      c.close();
    } finally {
      await named.stop();
    }
  });

  it('refuses a wrong password with 535 5.7.8, and relaying stays denied', async () => {
    const c = await open(t.smtpPort);
    expect((await c.command('STARTTLS')).code).toBe(220);
    await c.startTls();
    expect((await c.command('EHLO client.test')).code).toBe(250);
    expect((await c.command(`AUTH PLAIN ${plain('relayer', 'wrong')}`)).lines.at(-1)).toBe('535 5.7.8 Authentication credentials invalid');
    expect(await envelope(c, 'sender@client.test', ['friend@example.org'])).toEqual([{ code: 554, line: '554 5.7.1 Relay access denied' }]);
    c.close();
  });

  it('relays for a client authenticated with AUTH PLAIN after STARTTLS', async () => {
    const c = await open(t.smtpPort);
    expect((await c.command('STARTTLS')).code).toBe(220);
    await c.startTls();
    expect((await c.command('EHLO client.test')).code).toBe(250);
    expect((await c.command(`AUTH PLAIN ${plain('relayer', PASSWORD)}`)).code).toBe(235);
    await envelope(c, 'sender@client.test', ['friend@example.org']);
    const body = MESSAGE('friend@example.org', 'Authenticated relay');
    const reply = await data(c, body);
    expect(reply).toEqual({ code: 250, line: '250 2.0.0 Ok: queued as SINK1' });
    const [arrived] = await sink.waitFor(1);
    expect(arrived!.to).toEqual(['friend@example.org']);
    expect(arrived!.data.toString('latin1').endsWith(body)).toBe(true);
    c.close();
  });

  it('relays for a client authenticated with AUTH LOGIN', async () => {
    const c = await open(t.smtpPort);
    expect((await c.command('STARTTLS')).code).toBe(220);
    await c.startTls();
    expect((await c.command('EHLO client.test')).code).toBe(250);
    expect((await c.command('AUTH LOGIN')).code).toBe(334);
    expect((await c.command(Buffer.from('relayer').toString('base64'))).code).toBe(334);
    expect((await c.command(Buffer.from(PASSWORD).toString('base64'))).code).toBe(235);
    await envelope(c, 'sender@client.test', ['other@example.org']);
    expect((await data(c, MESSAGE('other@example.org', 'Login relay'))).code).toBe(250);
    const arrived = await sink.waitFor(2);
    expect(arrived[1]!.to).toEqual(['other@example.org']);
    c.close();
  });

  // Brute force over SMTP AUTH (review item 4): maxAllowedUnauthenticatedCommands is off, so
  // one connection could guess forever, and no throttle applied.
  it('closes the session with 421 4.7.0 after three failed AUTH attempts', async () => {
    const c = await open(t.smtpPort);
    expect((await c.command('STARTTLS')).code).toBe(220);
    await c.startTls();
    expect((await c.command('EHLO client.test')).code).toBe(250);
    expect((await c.command(`AUTH PLAIN ${plain('relayer', 'guess1')}`)).lines.at(-1)).toBe('535 5.7.8 Authentication credentials invalid');
    expect((await c.command(`AUTH PLAIN ${plain('relayer', 'guess2')}`)).lines.at(-1)).toBe('535 5.7.8 Authentication credentials invalid');
    expect((await c.command(`AUTH PLAIN ${plain('relayer', 'guess3')}`)).lines.at(-1)).toBe('421 4.7.0 Too many failed authentication attempts, closing connection');
    await waitFor(async () => c.closed, 5000);
  });

  // Last in this block: it leaves 127.0.0.1 throttled for a minute.
  it('a client throttled by failures elsewhere (/submit Basic) gets 454 4.7.0, even with the right password', async () => {
    const wrong = `Basic ${Buffer.from('relayer:wrong').toString('base64')}`;
    for (let i = 0; i < 20; i++) {
      const res = await fetch(`${t.httpUrl}/submit`, { method: 'POST', headers: { authorization: wrong, 'content-type': 'application/json' }, body: '{}' });
      await res.arrayBuffer();
      expect([401, 429]).toContain(res.status);
    }
    const c = await open(t.smtpPort);
    expect((await c.command('STARTTLS')).code).toBe(220);
    await c.startTls();
    expect((await c.command('EHLO client.test')).code).toBe(250);
    expect((await c.command(`AUTH PLAIN ${plain('relayer', PASSWORD)}`)).lines.at(-1)).toBe('454 4.7.0 Temporary authentication failure');
    expect(await envelope(c, 'sender@client.test', ['friend@example.org'])).toEqual([{ code: 554, line: '554 5.7.1 Relay access denied' }]);
    c.close();
  });
});

describe('a relayed message left in the spool by a crash', () => {
  it('is dropped at start, not stored as local mail and not relayed again', async () => {
    const sink = await startSmtpSink();
    const first = await startTestApp({ spamd: false });
    const dir = first.dir;
    await first.app.stop();
    // What a crash between the spool commit and the release leaves behind.
    const spool = new Spool(join(dir, 'data'));
    mkdirSync(join(dir, 'data', 'spool'), { recursive: true });
    await spool.init();
    const id = newMessageId();
    const writer = spool.writer(id, { maxSize: 1 << 20, bareNewline: 'reject' });
    const raw = Buffer.from(MESSAGE('friend@example.org', 'Crashed relay'));
    await new Promise<void>((resolve, reject) => writer.end(raw, (err?: Error | null) => (err ? reject(err) : resolve())));
    const outcome = writer.outcome();
    if (outcome.kind !== 'ok') throw new Error('spool write failed');
    const envelope = { mailFrom: 'sender@client.test', rcptTo: ['friend@example.org'], remoteAddress: '127.0.0.1', remotePort: 1, clientHostname: 'client.test', helo: 'client.test', tls: null, auth: null };
    await spool.commit(writer, outcome.size, outcome.sha256, envelope, new Date().toISOString(), { relay: { rcpt: 'friend@example.org' } });
    // A small message: its bytes are in its journal record, there is no file.
    expect(readdirSync(spool.incomingDir)).toEqual([]);
    expect(readdirSync(spool.journalDir)).toHaveLength(1);
    await spool.close();

    const events: AnyEvent[] = [];
    const t = await startTestApp({
      dir,
      spamd: false,
      onEvent: (e) => events.push(e),
      files: { mailertable: `default: { mailer: ESMTP, host: 127.0.0.1, port: ${sink.port} }\n`, recipients: 'open-relay: 1\n' },
    });
    try {
      expect(events).toEqual([]);
      const res = await fetch(`${t.httpUrl}/api/v1/messages/${id}`);
      expect(res.status).toBe(404);
      expect(sink.messages).toEqual([]);
      await t.stop();
      // Released: the next start finds nothing.
      const after = new Spool(join(dir, 'data'));
      await after.init();
      expect(await after.recover()).toEqual([]);
      await after.close();
    } finally {
      await t.stop();
      await sink.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('eom hooks on relayed mail (run before relaying, as on /submit)', () => {
  let sink: SmtpSink;
  let h: HookApp;
  const seen: Record<string, unknown>[] = [];

  beforeAll(async () => {
    sink = await startSmtpSink();
    h = await startHookApp(
      {
        // Decides by the Subject: what a content policy on outbound mail would do.
        'policy.js': `export default { eom(ctx) {
          globalThis.__relaySeen?.push({ type: ctx.event.type, subject: ctx.event.subject, spam: ctx.spam.status, rcptTo: ctx.event.envelope.rcptTo });
          const subject = ctx.event.subject ?? '';
          if (subject.includes('secret')) return { verdict: 'reject', code: 550, enhanced: '5.7.1', message: 'Outbound policy: not sent' };
          if (subject.includes('drop')) return { verdict: 'discard' };
          if (subject.includes('copy')) ctx.addRecipient('archive@example.org');
          if (subject.includes('nobody')) ctx.removeRecipient(ctx.event.envelope.rcptTo[0]);
          ctx.addHeader('X-Outbound-Policy', 'checked');
          ctx.deleteHeader('X-Internal');
        } };\n`,
      },
      { eom: ['policy.js'] },
      {
        tables: {
          domains: 'accept: [local.test]\n',
          mailertable: `default: { mailer: ESMTP, host: 127.0.0.1, port: ${sink.port} }\n`,
          recipients: 'domainpart: [example.org]\n',
        },
      },
    );
    (globalThis as { __relaySeen?: unknown[] }).__relaySeen = seen;
  });
  afterAll(async () => {
    delete (globalThis as { __relaySeen?: unknown[] }).__relaySeen;
    await h?.stop();
    await sink?.close();
  });

  async function relay(subject: string, extra = '') {
    const c = await open(h.t.smtpPort);
    expect(await envelope(c, 'sender@client.test', ['friend@example.org'])).toEqual([{ code: 250, line: '250 2.1.5 Accepted' }]);
    const body = [`From: <sender@client.test>`, `To: <friend@example.org>`, `Subject: ${subject}`, ...(extra ? [extra] : []), '', 'Hello.', ''].join('\r\n');
    const reply = await data(c, body);
    c.close();
    return reply;
  }

  it('applies header edits to the relayed bytes, and shows the hook a mail.relayed view, unscored', async () => {
    const before = sink.messages.length;
    const reply = await relay('quarterly report', 'X-Internal: do not leak');
    expect(reply.code).toBe(250);
    const [arrived] = (await sink.waitFor(before + 1)).slice(before);
    const wire = arrived!.data.toString('latin1');
    expect(wire).toContain('\r\nX-Outbound-Policy: checked\r\n');
    expect(wire).not.toContain('X-Internal');
    expect(wire.endsWith('\r\n\r\nHello.\r\n')).toBe(true);
    expect(seen.at(-1)).toEqual({ type: 'mail.relayed', subject: 'quarterly report', spam: 'skipped', rcptTo: ['friend@example.org'] });
  });

  it("answers with the hook's refusal and relays nothing", async () => {
    const before = sink.messages.length;
    expect(await relay('the secret plan')).toEqual({ code: 550, line: '550 5.7.1 Outbound policy: not sent' });
    await new Promise((r) => setTimeout(r, 100));
    expect(sink.messages.length).toBe(before);
    await spoolDrained(h.t);
  });

  it('a discard, or removing the only recipient, answers 250 and relays nothing', async () => {
    const before = sink.messages.length;
    for (const subject of ['drop this', 'for nobody']) {
      const reply = await relay(subject);
      expect(reply.code).toBe(250);
      expect(reply.line).toMatch(/^250 2\.0\.0 Ok: queued as [0-9A-Z]{26}$/);
    }
    await new Promise((r) => setTimeout(r, 100));
    expect(sink.messages.length).toBe(before);
    await spoolDrained(h.t);
  });

  it('relays to a recipient the hook adds as well, after the client\'s', async () => {
    const before = sink.messages.length;
    expect((await relay('copy for the archive')).code).toBe(250);
    const arrived = (await sink.waitFor(before + 2)).slice(before);
    expect(arrived.map((m) => m.to)).toEqual([['friend@example.org'], ['archive@example.org']]);
    expect(arrived.every((m) => m.data.toString('latin1').includes('X-Outbound-Policy: checked'))).toBe(true);
  });
});

describe('eom hooks on relayed mail: the reply and the limits', () => {
  let sink: SmtpSink;
  let h: HookApp;

  beforeAll(async () => {
    sink = await startSmtpSink({ dataReplies: { 'full@example.org': [452, '4.2.2 Mailbox full, try again later'] } });
    h = await startHookApp(
      { 'cc.js': `export default { eom(ctx) { ctx.addRecipient('full@example.org'); } };\n` },
      { eom: ['cc.js'] },
      {
        tables: {
          domains: 'accept: [local.test]\n',
          mailertable: `default: { mailer: ESMTP, host: 127.0.0.1, port: ${sink.port} }\n`,
          recipients: 'domainpart: [example.org]\n',
        },
      },
    );
  });
  afterAll(async () => {
    await h?.stop();
    await sink?.close();
  });

  it("answers with the client's recipient's outcome: an added recipient's refusal is only logged (a retry would duplicate)", async () => {
    const c = await open(h.t.smtpPort);
    await envelope(c, 'sender@client.test', ['friend@example.org']);
    const reply = await data(c, ['From: <sender@client.test>', 'Subject: hello', '', 'Hi.', ''].join('\r\n'));
    c.close();
    expect(reply.code).toBe(250);
    const logged = await waitFor(async () => h.logs.find((l) => l.msg === 'relayed message' && l.rcpt === 'full@example.org'));
    expect(logged).toMatchObject({ upstream: 452, code: 452, dsn: '4.2.2' });
    expect(sink.messages.map((m) => m.to)).toEqual([['friend@example.org']]);
    await spoolDrained(h.t);
  });

  it('refuses a header block over 1 MiB with 552 5.3.4 rather than let it past the hooks', async () => {
    const c = await open(h.t.smtpPort);
    await envelope(c, 'sender@client.test', ['friend@example.org']);
    const filler = Array.from({ length: 20_000 }, (_, i) => `X-Filler-${i}: ${'a'.repeat(50)}`).join('\r\n');
    const reply = await data(c, `Subject: no blank line\r\n${filler}\r\n`);
    c.close();
    expect(reply).toEqual({ code: 552, line: '552 5.3.4 Message header block too large' });
    await spoolDrained(h.t);
  });
});
