/**
 * Hooks end to end: the real app with hook files in its config dir, driven by real SMTP clients
 * (nodemailer, and a raw socket where a client would not send the case). Every reply code is
 * asserted with its enhanced code.
 */
import nodemailer from 'nodemailer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MailEvent, MailRejectedEvent } from '../src/events/types.js';
import { queuedId, storedEvent, waitFor } from './helpers/app.js';
import { line, openSession, sendData, startHookApp, waitForLog, type HookApp } from './helpers/hooks.js';

const POLICY = `
import type { Hook } from '../../../src/hooks/api.js';
export default {
  name: 'policy',
  connect(ctx) {
    ctx.scratch.set('connected', ctx.session.remoteAddress);
  },
  helo(ctx) {
    if (ctx.session.helo === 'bad.helo.test') return { verdict: 'reject', code: 550, enhanced: '5.7.1', message: 'Bad HELO' };
  },
  mail(ctx) {
    const a = ctx.address.address;
    if (a === 'spammer@bad.test') return { verdict: 'reject', enhanced: '5.7.1', message: 'Sender blocked' };
    if (a === 'default@bad.test') return { verdict: 'reject' };
    if (a === 'later@bad.test') return { verdict: 'tempfail', code: 450, enhanced: '4.7.1', message: 'Try later' };
    if (a === 'bye@bad.test') return { verdict: 'reject', code: 554, enhanced: '5.7.1', message: 'Go away', disconnect: true };
    if (a === 'discard@bad.test') return { verdict: 'discard' };
    if (a === 'size@x.test') return { verdict: 'reject', code: 550, enhanced: '5.7.1', message: 'SIZE=' + ctx.address.args.SIZE + ' connected=' + ctx.scratch.get('connected') };
  },
  rcpt(ctx) {
    const a = ctx.address.address;
    if (a.startsWith('nobody@')) return { verdict: 'reject', code: 550, enhanced: '5.1.1', message: 'No such user' };
    if (a === 'count@x.test') return { verdict: 'reject', code: 550, enhanced: '5.1.1', message: 'before me: ' + ctx.envelope.rcptTo.map((r) => r.address).join(',') + ' from ' + ctx.envelope.mailFrom?.address };
  },
  data(ctx) {
    if (ctx.envelope.mailFrom?.address === 'nodata@x.test') return { verdict: 'reject', code: 554, enhanced: '5.7.1', message: 'No data for you' };
  },
  unknown(ctx) {
    if (ctx.command.startsWith('XYZZY')) return { verdict: 'reject', code: 502, enhanced: '5.5.1', message: 'Nothing happens' };
    if (ctx.command.startsWith('PLUGH')) return { verdict: 'tempfail', code: 421, enhanced: '4.7.0', message: 'Enough' };
  },
} satisfies Hook;
`;

const FLAKY = `
export default {
  name: 'flaky',
  timeoutMs: 300,
  async mail(ctx) {
    if (ctx.address.address === 'throw@x.test') throw new Error('hook bug');
    if (ctx.address.address === 'slow@x.test') {
      await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve));
      ctx.log.info('slow hook saw its abort signal');
      return { verdict: 'accept' };
    }
  },
};
`;

const EDITOR = `
export default {
  name: 'editor',
  mail(ctx) {
    ctx.scratch.set('mails', ((ctx.scratch.get('mails') as number | undefined) ?? 0) + 1);
  },
  eom(ctx) {
    const subject = ctx.event.subject;
    if (subject === 'edit me') {
      ctx.addHeader('X-Hook', 'added by a hook');
      ctx.changeHeader('Subject', 'edited');
      ctx.deleteHeader('X-Remove-Me');
      ctx.setSender('new-sender@x.test');
      ctx.addRecipient('added@x.test');
      ctx.removeRecipient('removed@x.test');
      ctx.addTag('edited');
      ctx.addTag('mails-' + ctx.scratch.get('mails'));
      ctx.addTag('spam-' + ctx.spam.status);
    }
    if (subject === 'discard me') return { verdict: 'discard' };
    if (subject === 'reject me') return { verdict: 'reject', code: 554, enhanced: '5.7.1', message: 'Content refused' };
    if (subject === 'accept me') return { verdict: 'accept' };
    if (subject === 'bad edit') ctx.addHeader('X-Bad', 'a\\r\\nInjected: yes');
    if (subject === 'drop all') ctx.removeRecipient('only@x.test');
  },
};
`;

const SECOND = `
export default function second(ctx) {
  ctx.addTag('second');
}
`;

const STREAM = `
export default {
  name: 'stream',
  header(ctx) {
    if (ctx.header.name === 'X-Bad') return { verdict: 'reject', code: 554, enhanced: '5.7.1', message: 'Header refused: ' + ctx.header.value };
    if (ctx.header.name === 'X-Skip') return { verdict: 'skip' };
    if (ctx.header.name === 'X-After-Skip') return { verdict: 'reject', message: 'skip did not work' };
  },
  eoh(ctx) {
    ctx.scratch.set('names', ctx.headers.map((h) => h.name).join(','));
    if (ctx.headers.some((h) => h.name === 'X-Later')) return { verdict: 'tempfail', code: 452, enhanced: '4.3.1', message: 'eoh says later' };
  },
  body(ctx) {
    ctx.scratch.set('bytes', ((ctx.scratch.get('bytes') as number | undefined) ?? 0) + ctx.chunk.length);
    if (ctx.chunk.includes('FORBIDDEN')) return { verdict: 'reject', code: 550, enhanced: '5.7.1', message: 'Body refused', disconnect: true };
  },
  eom(ctx) {
    ctx.addTag('names:' + ctx.scratch.get('names'));
    ctx.addTag('bytes:' + ctx.scratch.get('bytes'));
  },
  abort(ctx) {
    ctx.log.info('abort seen', { from: ctx.envelope.mailFrom?.address ?? null });
  },
  close(ctx) {
    ctx.log.info('close seen', { helo: ctx.session.helo });
  },
};
`;

function transport(port: number) {
  return nodemailer.createTransport({ host: '127.0.0.1', port, secure: false, ignoreTLS: true, name: 'client.test' });
}

describe('hooks at connect, helo, mail, rcpt, data and unknown', () => {
  let h: HookApp;
  beforeAll(async () => {
    h = await startHookApp(
      { 'policy.ts': POLICY, 'flaky.ts': FLAKY },
      { connect: ['policy.ts'], helo: ['policy.ts'], mail: ['policy.ts', 'flaky.ts'], rcpt: ['policy.ts'], data: ['policy.ts'], unknown: ['policy.ts'] },
    );
  });
  afterAll(async () => h.stop());

  it('rejects a sender at MAIL FROM with 550 5.7.1 (nodemailer)', async () => {
    const err = (await transport(h.t.smtpPort)
      .sendMail({ from: 'spammer@bad.test', to: 'rcpt@x.test', subject: 's', text: 'x' })
      .catch((e: unknown) => e)) as { responseCode?: number; response?: string };
    expect(err.responseCode).toBe(550);
    expect(err.response).toBe('550 5.7.1 Sender blocked');
    const info = await transport(h.t.smtpPort).sendMail({ from: 'good@x.test', to: 'rcpt@x.test', subject: 'fine', text: 'x' });
    expect(info.response).toMatch(/^250 2\.0\.0 Ok: queued as /);
  });

  it('gives each verdict its exact reply, defaults included', async () => {
    const c = await openSession(h.t.smtpPort);
    expect(line(await c.command('MAIL FROM:<default@bad.test>'))).toBe('550 5.7.1 Rejected by policy');
    expect(line(await c.command('MAIL FROM:<later@bad.test>'))).toBe('450 4.7.1 Try later');
    expect(line(await c.command('MAIL FROM:<size@x.test> SIZE=1234'))).toBe('550 5.7.1 SIZE=1234 connected=127.0.0.1');
    expect((await c.command('MAIL FROM:<ok@x.test>')).code).toBe(250);
    expect(line(await c.command('RCPT TO:<nobody@x.test>'))).toBe('550 5.1.1 No such user');
    expect((await c.command('RCPT TO:<first@x.test>')).code).toBe(250);
    expect(line(await c.command('RCPT TO:<count@x.test>'))).toBe('550 5.1.1 before me: first@x.test from ok@x.test');
    c.close();
  });

  it('disconnects after a reject that asks for it', async () => {
    const c = await openSession(h.t.smtpPort);
    expect(line(await c.command('MAIL FROM:<bye@bad.test>'))).toBe('554 5.7.1 Go away');
    expect(await c.waitClosed(5000)).toBe(true);
  });

  it('fails closed with 451 4.3.0 on a throw, a timeout and a verdict the phase does not allow', async () => {
    const c = await openSession(h.t.smtpPort);
    expect(line(await c.command('MAIL FROM:<throw@x.test>'))).toBe('451 4.3.0 Temporary policy failure, try again later');
    expect(line(await c.command('MAIL FROM:<slow@x.test>'))).toBe('451 4.3.0 Temporary policy failure, try again later');
    expect(line(await c.command('MAIL FROM:<discard@bad.test>'))).toBe('451 4.3.0 Temporary policy failure, try again later');
    c.close();
    const thrown = await waitForLog(h, (l) => l.msg === 'hook failed; failing closed');
    expect(thrown).toMatchObject({ hook: 'flaky', phase: 'mail', err: 'hook bug', level: 50 });
    expect(await waitForLog(h, (l) => l.msg === 'hook deadline passed; failing closed')).toMatchObject({ hook: 'flaky', phase: 'mail' });
    expect(await waitForLog(h, (l) => l.msg === 'slow hook saw its abort signal')).toMatchObject({ hook: 'flaky' });
    expect(await waitForLog(h, (l) => l.msg === 'hook answered after its deadline; ignored')).toMatchObject({ hook: 'flaky' });
    expect(await waitForLog(h, (l) => l.msg === 'hook returned an invalid verdict; failing closed')).toMatchObject({ hook: 'policy', phase: 'mail' });
  });

  it('rejects HELO, and the session stays unGreeted', async () => {
    const c = await openSession(h.t.smtpPort, null);
    expect(line(await c.command('EHLO bad.helo.test'))).toBe('550 5.7.1 Bad HELO');
    expect((await c.command('MAIL FROM:<ok@x.test>')).code).toBe(503);
    expect((await c.command('HELO good.helo.test')).code).toBe(250);
    expect((await c.command('MAIL FROM:<ok@x.test>')).code).toBe(250);
    c.close();
  });

  it('rejects DATA before its 354', async () => {
    const c = await openSession(h.t.smtpPort);
    expect((await c.command('MAIL FROM:<nodata@x.test>')).code).toBe(250);
    expect((await c.command('RCPT TO:<a@x.test>')).code).toBe(250);
    expect(line(await c.command('DATA'))).toBe('554 5.7.1 No data for you');
    expect((await c.command('NOOP')).code).toBe(250);
    c.close();
  });

  it('answers unrecognised commands through the unknown phase, the library 500 otherwise', async () => {
    const c = await openSession(h.t.smtpPort);
    expect(line(await c.command('XYZZY now'))).toBe('502 5.5.1 Nothing happens');
    expect((await c.command('FOO')).code).toBe(500);
    expect(line(await c.command('PLUGH'))).toBe('421 4.7.0 Enough');
    expect(await c.waitClosed(5000)).toBe(true);
  });

  it('publishes mail.rejected for a hook rejection', async () => {
    const c = await openSession(h.t.smtpPort);
    await c.command('MAIL FROM:<spammer@bad.test>');
    c.close();
    const ev = (await waitFor(async () =>
      h.events.find((e) => e.type === 'mail.rejected' && e.reason === 'Sender blocked' && e.envelope.helo === 'client.test'),
    )) as MailRejectedEvent;
    expect(ev).toMatchObject({ type: 'mail.rejected', version: 1, phase: 'mail', code: 550, enhancedCode: '5.7.1', hook: 'policy' });
    // The refused sender is named (it never entered the session's envelope).
    expect(ev.envelope).toMatchObject({ mailFrom: 'spammer@bad.test', remoteAddress: '127.0.0.1', rcptTo: [], tls: null, auth: null });
    expect(ev.id).toMatch(/^[0-9A-Z]{26}$/);
  });

  it('names the refused recipient in mail.rejected, after the accepted ones', async () => {
    const c = await openSession(h.t.smtpPort);
    expect((await c.command('MAIL FROM:<named@x.test>')).code).toBe(250);
    expect((await c.command('RCPT TO:<first@x.test>')).code).toBe(250);
    expect(line(await c.command('RCPT TO:<nobody@named.test>'))).toBe('550 5.1.1 No such user');
    c.close();
    const ev = (await waitFor(async () =>
      h.events.find((e) => e.type === 'mail.rejected' && e.phase === 'rcpt' && e.envelope.mailFrom === 'named@x.test'),
    )) as MailRejectedEvent;
    expect(ev).toMatchObject({ phase: 'rcpt', code: 550, enhancedCode: '5.1.1', reason: 'No such user', hook: 'policy' });
    expect(ev.envelope.rcptTo).toEqual(['first@x.test', 'nobody@named.test']);
  });

  it('logs each non-continue verdict once with the hook name and time', async () => {
    const c = await openSession(h.t.smtpPort);
    await c.command('MAIL FROM:<later@bad.test>');
    c.close();
    const l = await waitForLog(h, (x) => x.msg === 'hook verdict' && x.verdict === 'tempfail' && x.code === 450);
    expect(l).toMatchObject({ hook: 'policy', phase: 'mail', enhanced: '4.7.1' });
    expect(typeof l.ms).toBe('number');
  });
});

describe('hooks at eom: verdicts, edits, tags, scratchpad', () => {
  let h: HookApp;
  beforeAll(async () => {
    h = await startHookApp({ 'editor.ts': EDITOR, 'second.ts': SECOND }, { mail: ['editor.ts'], eom: ['editor.ts', 'second.ts'] }, { spamd: true });
  });
  afterAll(async () => h.stop());

  async function send(subject: string, rcpts: string[], extra = ''): Promise<string> {
    const c = await openSession(h.t.smtpPort);
    expect((await c.command('MAIL FROM:<orig@x.test>')).code).toBe(250);
    for (const r of rcpts) expect((await c.command(`RCPT TO:<${r}>`)).code).toBe(250);
    const reply = await sendData(c, `From: orig@x.test\nTo: ${rcpts.join(', ')}\nSubject: ${subject}\n${extra}\nHello\n`);
    await c.command('QUIT').catch(() => null);
    c.close();
    return line(reply);
  }

  it('applies header, sender and recipient edits to the stored raw message and the event', async () => {
    const reply = await send('edit me', ['keep@x.test', 'removed@x.test'], 'X-Remove-Me: 1\nX-Remove-Me: 2\n');
    const id = queuedId(reply);
    const event = await storedEvent(h.t, id);
    expect(event.subject).toBe('edited');
    expect(event.envelope.mailFrom).toBe('new-sender@x.test');
    expect(event.envelope.rcptTo).toEqual(['keep@x.test', 'added@x.test']);
    expect(event.tags).toEqual(['edited', 'mails-1', expect.stringMatching(/^spam-(ham|spam)$/), 'second']);
    expect(event.headers.find((x) => x.name.toLowerCase() === 'x-hook')?.value).toBe('added by a hook');
    expect(event.headers.some((x) => x.name.toLowerCase() === 'x-remove-me')).toBe(false);
    const raw = await (await fetch(`${h.t.httpUrl}/api/v1/messages/${id}/raw`)).text();
    expect(raw).toContain('\r\nSubject: edited\r\n');
    expect(raw).toContain('\r\nX-Hook: added by a hook\r\n\r\nHello\r\n');
    expect(raw).not.toContain('X-Remove-Me');
    expect(raw).not.toContain('Subject: edit me');
    expect(event.size).toBe(Buffer.byteLength(raw));
  });

  it('a header edit keeps the exact bytes of the fields it does not touch, in any charset', async () => {
    const c = await openSession(h.t.smtpPort);
    expect((await c.command('MAIL FROM:<orig@x.test>')).code).toBe(250);
    expect((await c.command('RCPT TO:<keep@x.test>')).code).toBe(250);
    expect((await c.command('DATA')).code).toBe(354);
    // An ISO-8859-1 header in raw 8-bit (0xE9, not valid UTF-8), next to a UTF-8 one.
    const latin1 = Buffer.from('X-Latin: caf\xe9 cr\xe8me\r\n', 'latin1');
    const utf8 = Buffer.from('X-Utf8: café\r\n', 'utf8');
    c.write(Buffer.concat([Buffer.from('From: orig@x.test\r\nSubject: edit me\r\n'), latin1, utf8, Buffer.from('\r\nHello\r\n')]));
    const id = queuedId(line(await c.command('.')));
    c.close();
    await storedEvent(h.t, id);
    const raw = Buffer.from(await (await fetch(`${h.t.httpUrl}/api/v1/messages/${id}/raw`)).arrayBuffer());
    expect(raw.includes(latin1)).toBe(true);
    expect(raw.includes(utf8)).toBe(true);
    expect(raw.includes(Buffer.from('\r\nSubject: edited\r\n'))).toBe(true);
    expect(raw.includes(Buffer.from('\uFFFD', 'utf8'))).toBe(false);
  });

  it('discard answers 250 and stores nothing', async () => {
    const reply = await send('discard me', ['a@x.test']);
    const id = queuedId(reply);
    await new Promise((r) => setTimeout(r, 300));
    expect((await fetch(`${h.t.httpUrl}/api/v1/messages/${id}`)).status).toBe(404);
  });

  it('reject at eom is the final reply, and nothing is stored', async () => {
    expect(await send('reject me', ['a@x.test'])).toBe('554 5.7.1 Content refused');
  });

  it('accept skips the remaining eom hooks and is recorded in the event', async () => {
    const event = await storedEvent(h.t, queuedId(await send('accept me', ['a@x.test'])));
    expect(event.tags).toEqual([]);
    expect(event.hooks).toEqual([{ phase: 'eom', name: 'editor', verdict: 'accept', ms: expect.any(Number) }]);
  });

  it('an invalid edit fails closed', async () => {
    expect(await send('bad edit', ['a@x.test'])).toBe('451 4.3.0 Temporary policy failure, try again later');
  });

  it('removing every recipient drops the message after a 250', async () => {
    const id = queuedId(await send('drop all', ['only@x.test']));
    await new Promise((r) => setTimeout(r, 300));
    expect((await fetch(`${h.t.httpUrl}/api/v1/messages/${id}`)).status).toBe(404);
  });

  it('keeps the scratchpad across phases and transactions of one session', async () => {
    const c = await openSession(h.t.smtpPort);
    const ids: string[] = [];
    for (let i = 0; i < 2; i++) {
      expect((await c.command('MAIL FROM:<orig@x.test>')).code).toBe(250);
      expect((await c.command('RCPT TO:<a@x.test>')).code).toBe(250);
      ids.push(queuedId(line(await sendData(c, 'Subject: edit me\n\nHello\n'))));
    }
    c.close();
    expect((await storedEvent(h.t, ids[1]!)).tags).toContain('mails-2');
  });
});

describe('hooks over the DATA stream: header, eoh, body; abort and close', () => {
  let h: HookApp;
  beforeAll(async () => {
    h = await startHookApp({ 'stream.ts': STREAM }, { header: ['stream.ts'], eoh: ['stream.ts'], body: ['stream.ts'], eom: ['stream.ts'], abort: ['stream.ts'], close: ['stream.ts'] });
  });
  afterAll(async () => h.stop());

  async function tx(message: string) {
    const c = await openSession(h.t.smtpPort);
    expect((await c.command('MAIL FROM:<s@x.test>')).code).toBe(250);
    expect((await c.command('RCPT TO:<r@x.test>')).code).toBe(250);
    return { c, reply: await sendData(c, message) };
  }

  it('sees every header, the end of headers and the body bytes', async () => {
    const { c, reply } = await tx('Subject: hi\nX-Folded: a\n  b\nX-Skip: 1\nX-After-Skip: 2\n\nline one\nline two\n');
    c.close();
    const event = await storedEvent(h.t, queuedId(line(reply)));
    expect(event.tags).toEqual(['names:Subject,X-Folded,X-Skip,X-After-Skip', `bytes:${'line one\r\nline two\r\n'.length}`]);
    expect(event.hooks).toEqual([{ phase: 'header', name: 'stream', verdict: 'skip', ms: expect.any(Number) }]);
  });

  it('a header verdict is the reply at the end of DATA', async () => {
    const { c, reply } = await tx('Subject: hi\nX-Bad: evil\n\nbody\n');
    expect(line(reply)).toBe('554 5.7.1 Header refused: evil');
    expect((await c.command('NOOP')).code).toBe(250);
    c.close();
  });

  it('an eoh tempfail is the reply at the end of DATA', async () => {
    const { c, reply } = await tx('Subject: hi\nX-Later: 1\n\nbody\n');
    expect(line(reply)).toBe('452 4.3.1 eoh says later');
    c.close();
  });

  it('a body reject with disconnect replies and closes', async () => {
    const { c, reply } = await tx('Subject: hi\n\nsome FORBIDDEN words\n');
    expect(line(reply)).toBe('550 5.7.1 Body refused');
    expect(await c.waitClosed(5000)).toBe(true);
  });

  it('runs abort on RSET and on a client gone mid-message, and close at the end', async () => {
    const c = await openSession(h.t.smtpPort, 'abort.test');
    expect((await c.command('MAIL FROM:<reset@x.test>')).code).toBe(250);
    expect((await c.command('RSET')).code).toBe(250);
    expect(await waitForLog(h, (l) => l.msg === 'abort seen' && l.from === 'reset@x.test')).toMatchObject({ hook: 'stream', phase: 'abort' });
    expect((await c.command('MAIL FROM:<gone@x.test>')).code).toBe(250);
    expect((await c.command('RCPT TO:<r@x.test>')).code).toBe(250);
    expect((await c.command('DATA')).code).toBe(354);
    c.write('Subject: half\r\n\r\nhalf a mess');
    await new Promise((r) => setTimeout(r, 100));
    c.close();
    expect(await waitForLog(h, (l) => l.msg === 'abort seen' && l.from === 'gone@x.test')).toMatchObject({ phase: 'abort' });
    expect(await waitForLog(h, (l) => l.msg === 'close seen' && l.helo === 'abort.test')).toMatchObject({ phase: 'close' });
  });
});

const TLS_ABORT = `
export default {
  name: 'tls-abort',
  // The first abort is slow: a command sent meanwhile must not see the transaction still open.
  async abort(ctx) {
    const n = ((ctx.scratch.get('aborts') as number | undefined) ?? 0) + 1;
    ctx.scratch.set('aborts', n);
    if (n === 1) await new Promise((resolve) => setTimeout(resolve, 300));
    ctx.log.info('abort ran', { from: ctx.envelope.mailFrom?.address ?? null, n, tls: ctx.session.tls !== null });
  },
  close(ctx) {
    ctx.log.info('close seen', { helo: ctx.session.helo, tls: ctx.session.tls !== null });
  },
};
`;

describe('STARTTLS inside an open transaction', () => {
  let h: HookApp;
  beforeAll(async () => {
    h = await startHookApp({ 'tls-abort.ts': TLS_ABORT }, { abort: ['tls-abort.ts'], close: ['tls-abort.ts'] });
  });
  afterAll(async () => h.stop());

  it('runs abort once, on the transaction it ended, and keeps the EHLO sent while it runs', async () => {
    const c = await openSession(h.t.smtpPort, 'plain.test');
    expect((await c.command('MAIL FROM:<tls@x.test>')).code).toBe(250);
    expect((await c.command('RCPT TO:<r@x.test>')).code).toBe(250);
    expect((await c.command('STARTTLS')).code).toBe(220);
    await c.startTls();
    // Sent at once, while the slow abort of the STARTTLS reset is still running.
    expect((await c.command('EHLO new.test')).code).toBe(250);
    const aborted = await waitForLog(h, (l) => l.msg === 'abort ran' && l.from === 'tls@x.test');
    // The abort hook saw the session as it was when the transaction ended (before TLS).
    expect(aborted).toMatchObject({ n: 1, tls: false });
    c.close();
    expect(await waitForLog(h, (l) => l.msg === 'close seen')).toMatchObject({ helo: 'new.test', tls: true });
    expect(h.logs.filter((l) => l.msg === 'abort ran')).toHaveLength(1);
  });
});

export type { MailEvent };
