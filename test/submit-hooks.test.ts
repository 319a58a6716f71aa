/**
 * Hooks on POST /submit: the real app with a hook file in its config dir, real POST /submit,
 * a real SMTP server (smtp-sink) as upstream. Each phase's refusal comes back in Haineko's
 * response format, at Haineko's milter checkpoints; eom edits reach the wire.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../src/log/logger.js';
import { startTestApp, waitFor, type TestApp } from './helpers/app.js';
import { startSmtpSink, type SmtpSink } from './helpers/smtp-sink.js';
import { mail, postSubmit, submitTables } from './helpers/submit.js';

// One hook file for every phase; what it does depends on the request (or a flag file for connect).
const POLICY = `
import { existsSync } from 'node:fs';
const flag = (name) => existsSync(new URL('./' + name, import.meta.url));
const reject = (code, enhanced, message) => ({ verdict: 'reject', code, enhanced, message });
export default {
  name: 'policy',
  connect(ctx) {
    if (flag('connect-reject')) return reject(554, '5.7.1', 'Client blocked');
    ctx.scratch.set('connected', ctx.session.id);
  },
  helo(ctx) {
    if (ctx.session.helo === 'bad-helo.example.jp') return reject(550, '5.7.1', 'Bad HELO');
  },
  mail(ctx) {
    const a = ctx.address.address;
    if (a === 'blocked@example.jp') return reject(550, '5.7.1', 'Sender blocked');
    if (a === 'tempfail@example.jp') return { verdict: 'tempfail', code: 452, enhanced: '4.7.1', message: 'Slow down' };
    if (a === 'throw@example.jp') throw new Error('boom');
    if (a === 'slow@example.jp') return new Promise(() => {});
  },
  rcpt(ctx) {
    if (ctx.address.address === 'refused@example.org') return reject(550, '5.1.1', 'No such user here');
    if (ctx.address.address === 'second@example.org') ctx.log.info('rcpt envelope', { before: ctx.envelope.rcptTo.map((r) => r.address) });
  },
  header(ctx) {
    if (ctx.header.name === 'X-Block') return reject(554, '5.7.1', 'Header not allowed');
  },
  body(ctx) {
    if (ctx.chunk.toString('latin1').includes('FORBIDDEN')) return reject(554, '5.6.0', 'Body not allowed');
  },
  eom(ctx) {
    const s = ctx.session;
    ctx.log.info('hook saw', {
      transport: s.transport, sessionId: s.id, remoteAddress: s.remoteAddress, remotePort: s.remotePort, helo: s.helo, auth: s.auth, tls: s.tls,
      mailFrom: ctx.envelope.mailFrom, rcptTo: ctx.envelope.rcptTo, messageId: ctx.messageId, subject: ctx.event.subject,
      spam: ctx.spam.status, headers: ctx.headers.map((h) => h.name), connected: ctx.scratch.get('connected'),
    });
    const subject = ctx.event.subject;
    if (subject === 'eom reject') return reject(550, '5.7.1', 'Content rejected');
    if (subject === 'eom discard') return { verdict: 'discard' };
    if (subject === 'eom edit') {
      ctx.addHeader('X-Hooked', 'yes');
      ctx.changeHeader('Subject', 'edited by hook');
      ctx.deleteHeader('X-Originating-IP');
      ctx.addTag('hooked');
    }
    if (subject === 'eom envelope') {
      ctx.setSender('bounce@example.jp');
      ctx.removeRecipient('mikeneko@example.org');
      ctx.addRecipient('added@example.org');
    }
  },
  abort(ctx) {
    ctx.log.info('hook abort', { mailFrom: ctx.envelope.mailFrom && ctx.envelope.mailFrom.address });
  },
  close(ctx) {
    ctx.log.info('hook close', { connected: ctx.scratch.get('connected') });
  },
};
`;

const PHASES = ['connect', 'helo', 'mail', 'rcpt', 'header', 'body', 'eom', 'abort', 'close'];

let sink: SmtpSink;
let t: TestApp;
let dir: string;
let hooksDir: string;
const logs: Record<string, unknown>[] = [];

beforeAll(async () => {
  sink = await startSmtpSink();
  dir = mkdtempSync(join(tmpdir(), 'mailwire-submit-hooks-'));
  hooksDir = join(dir, 'config', 'hooks');
  mkdirSync(hooksDir, { recursive: true });
  writeFileSync(join(hooksDir, 'package.json'), '{ "type": "module" }\n');
  writeFileSync(join(hooksDir, 'policy.mjs'), POLICY);
  const logSink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString().split('\n')) if (line) logs.push(JSON.parse(line) as Record<string, unknown>);
      cb();
    },
  });
  t = await startTestApp({
    dir,
    spamd: false,
    logger: createLogger('info', logSink),
    config: { hooks: { timeout_ms: 300, phases: Object.fromEntries(PHASES.map((p) => [p, ['policy.mjs']])) } },
    files: submitTables(sink.port),
  });
});

afterAll(async () => {
  await t?.stop();
  await sink?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

afterEach(() => {
  rmSync(join(hooksDir, 'connect-reject'), { force: true });
});

/** A hook refusal entry as /submit answers it. */
function refusal(code: number, dsn: string, command: string, message: string, rcpt: string | null = null) {
  return { dsn, code, host: null, port: null, rcpt, error: 1, mailer: null, command, message: [message] };
}

const FAILED_CLOSED = 'Temporary policy failure, try again later';

function logged(msg: string, pred: (l: Record<string, unknown>) => boolean = () => true): Promise<Record<string, unknown>> {
  return waitFor(async () => logs.find((l) => l['msg'] === msg && pred(l)) ?? null);
}

describe('refusals in Haineko format, at Haineko\'s milter checkpoints', () => {
  it('connect reject: 400, the hook\'s code/dsn/message with command CONN, nothing delivered', async () => {
    writeFileSync(join(hooksDir, 'connect-reject'), '');
    const before = sink.messages.length;
    const r = await postSubmit(t.httpUrl, mail());
    expect(r.status).toBe(400);
    expect(r.json.addresser).toBeNull();
    expect(r.json.recipient).toEqual([]);
    expect(r.json.response).toEqual([refusal(554, '5.7.1', 'CONN', 'Client blocked')]);
    // connect runs before the request is read: even a malformed body gets the connect refusal.
    const bad = await postSubmit(t.httpUrl, '{ not json');
    expect(bad.status).toBe(400);
    expect(bad.json.response).toEqual([refusal(554, '5.7.1', 'CONN', 'Client blocked')]);
    expect(sink.messages.length).toBe(before);
  });

  it('the relayhosts/auth check comes before connect: a wrong password is still 401', async () => {
    writeFileSync(join(hooksDir, 'connect-reject'), '');
    const res = await fetch(`${t.httpUrl}/submit`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Basic ${Buffer.from('haineko:wrong').toString('base64')}` },
      body: JSON.stringify(mail()),
    });
    expect(res.status).toBe(401);
  });

  it('helo reject: 400 with command EHLO', async () => {
    const r = await postSubmit(t.httpUrl, mail({ ehlo: 'bad-helo.example.jp' }));
    expect(r.status).toBe(400);
    expect(r.json.response).toEqual([refusal(550, '5.7.1', 'EHLO', 'Bad HELO')]);
  });

  it('mail reject: 400 with command MAIL, after Haineko\'s own sender checks', async () => {
    const before = sink.messages.length;
    const r = await postSubmit(t.httpUrl, mail({ mail: 'blocked@example.jp' }));
    expect(r.status).toBe(400);
    expect(r.json.addresser).toBe('blocked@example.jp');
    expect(r.json.response).toEqual([refusal(550, '5.7.1', 'MAIL', 'Sender blocked')]);
    // An invalid sender gets Haineko's own reply: the hook never sees it.
    const invalid = await postSubmit(t.httpUrl, mail({ mail: 'neko' }));
    expect(invalid.json.response[0]!.code).toBe(553);
    expect(sink.messages.length).toBe(before);
  });

  it('rcpt reject for one of two recipients: a per-recipient entry, the other delivered', async () => {
    const before = sink.messages.length;
    const r = await postSubmit(t.httpUrl, mail({ rcpt: ['refused@example.org', 'mikeneko@example.org'] }));
    expect(r.status).toBe(200);
    expect(r.json.recipient).toEqual(['mikeneko@example.org']);
    expect(r.json.response).toHaveLength(2);
    expect(r.json.response[0]).toEqual(refusal(550, '5.1.1', 'RCPT', 'No such user here', 'refused@example.org'));
    expect(r.json.response[1]).toMatchObject({ rcpt: 'mikeneko@example.org', code: 250, error: 0, mailer: 'ESMTP' });
    const msgs = await sink.waitFor(before + 1);
    expect(msgs[before]!.to).toEqual(['mikeneko@example.org']);
  });

  it('rcpt reject for the only recipient: 400 with the entry', async () => {
    const r = await postSubmit(t.httpUrl, mail({ rcpt: ['refused@example.org'] }));
    expect(r.status).toBe(400);
    expect(r.json.response).toEqual([refusal(550, '5.1.1', 'RCPT', 'No such user here', 'refused@example.org')]);
  });

  it('rcpt hooks see the recipients accepted before (envelope.rcptTo)', async () => {
    const r = await postSubmit(t.httpUrl, mail({ rcpt: ['mikeneko@example.org', 'second@example.org'] }));
    expect(r.status).toBe(200);
    const l = await logged('rcpt envelope');
    expect(l['before']).toEqual(['mikeneko@example.org']);
  });

  it('header reject: 400 with command DATA, nothing delivered', async () => {
    const before = sink.messages.length;
    const r = await postSubmit(t.httpUrl, mail({}, { 'X-Block': 'yes' }));
    expect(r.status).toBe(400);
    expect(r.json.recipient).toEqual(['mikeneko@example.org']);
    expect(r.json.response).toEqual([refusal(554, '5.7.1', 'DATA', 'Header not allowed')]);
    expect(sink.messages.length).toBe(before);
  });

  it('body reject: 400 with command DATA', async () => {
    const r = await postSubmit(t.httpUrl, mail({ body: 'this is FORBIDDEN text' }));
    expect(r.status).toBe(400);
    expect(r.json.response).toEqual([refusal(554, '5.6.0', 'DATA', 'Body not allowed')]);
  });

  it('eom reject: 400 with command DATA, nothing delivered', async () => {
    const before = sink.messages.length;
    const r = await postSubmit(t.httpUrl, mail({}, { subject: 'eom reject' }));
    expect(r.status).toBe(400);
    expect(r.json.response).toEqual([refusal(550, '5.7.1', 'DATA', 'Content rejected')]);
    expect(sink.messages.length).toBe(before);
  });

  it('eom discard: 200 with the Discard mailer\'s reply per recipient, nothing sent', async () => {
    const before = sink.messages.length;
    const r = await postSubmit(t.httpUrl, mail({}, { subject: 'eom discard' }));
    expect(r.status).toBe(200);
    expect(r.json.response).toEqual([{ dsn: null, code: 200, host: null, port: null, rcpt: 'mikeneko@example.org', error: 0, mailer: 'Discard', command: 'DATA', message: ['Discard'] }]);
    // The next request is delivered: had the discarded one been sent, it would arrive first.
    await postSubmit(t.httpUrl, mail({}, { subject: 'after discard' }));
    const msgs = await sink.waitFor(before + 1);
    expect(msgs.length).toBe(before + 1);
    expect(msgs[before]!.data.toString()).toContain('Subject: after discard');
  });
});

describe('fail closed', () => {
  for (const [sender, why] of [['throw@example.jp', 'a throw'], ['slow@example.jp', 'the deadline']] as const) {
    it(`${why}: 400, 451 4.3.0 with command MAIL`, async () => {
      const r = await postSubmit(t.httpUrl, mail({ mail: sender }));
      expect(r.status).toBe(400);
      expect(r.json.response).toEqual([refusal(451, '4.3.0', 'MAIL', FAILED_CLOSED)]);
    });
  }

  it('a tempfail verdict: 400 with the hook\'s 4xx', async () => {
    const r = await postSubmit(t.httpUrl, mail({ mail: 'tempfail@example.jp' }));
    expect(r.status).toBe(400);
    expect(r.json.response).toEqual([refusal(452, '4.7.1', 'MAIL', 'Slow down')]);
  });
});

describe('eom edits and context', () => {
  it('header add/change/delete are on the wire at the upstream; the tag is logged', async () => {
    const before = sink.messages.length;
    const r = await postSubmit(t.httpUrl, mail({}, { subject: 'eom edit' }));
    expect(r.status).toBe(200);
    expect(r.json.response[0]).toMatchObject({ code: 250, error: 0 });
    const msgs = await sink.waitFor(before + 1);
    const head = msgs[before]!.data.toString().split('\r\n\r\n')[0]!;
    expect(head).toMatch(/\r\nX-Hooked: yes$/);
    expect(head).toContain('\r\nSubject: edited by hook\r\n');
    expect(head).not.toContain('eom edit');
    expect(head).not.toContain('X-Originating-IP');
    expect(head).toContain('\r\nTo: mikeneko@example.org\r\n');
    const line = await logged('submit', (l) => l['queueid'] === r.json.queueid);
    expect(line['tags']).toEqual(['hooked']);
  });

  it('envelope edits: sender, removed and added recipients', async () => {
    const before = sink.messages.length;
    const r = await postSubmit(t.httpUrl, mail({}, { subject: 'eom envelope' }));
    expect(r.status).toBe(200);
    expect(r.json.recipient).toEqual(['added@example.org']);
    expect(r.json.response).toHaveLength(1);
    expect(r.json.response[0]).toMatchObject({ rcpt: 'added@example.org', code: 250, error: 0 });
    const msgs = await sink.waitFor(before + 1);
    expect(msgs[before]).toMatchObject({ from: 'bounce@example.jp', to: ['added@example.org'] });
  });

  it('hooks see transport http, the client, the envelope, the queue id and the headers', async () => {
    const auth = { authorization: `Basic ${Buffer.from('haineko:kijitora').toString('base64')}` };
    const r = await postSubmit(t.httpUrl, mail({ rcpt: ['mikeneko@example.org'] }, { subject: 'context check' }), auth);
    expect(r.status).toBe(200);
    const l = await logged('hook saw', (x) => x['subject'] === 'context check');
    expect(l).toMatchObject({
      transport: 'http',
      sessionId: r.json.queueid,
      remoteAddress: '127.0.0.1',
      remotePort: r.json.remoteport,
      helo: 'client.example.jp',
      auth: { method: 'basic', user: 'haineko' },
      tls: null,
      mailFrom: { address: 'kijitora@example.jp', args: {} },
      rcptTo: [{ address: 'mikeneko@example.org', args: {} }],
      messageId: r.json.queueid,
      spam: 'skipped',
      connected: r.json.queueid,
    });
    const names = l['headers'] as string[];
    expect(names.slice(0, 4)).toEqual(['Received', 'Date', 'Message-Id', 'From']);
    expect(names).toContain('Subject');
    // The per-recipient To: is added at delivery: not among the shared headers.
    expect(names).not.toContain('To');
    // close runs after the answer, with the session's scratchpad.
    await logged('hook close', (x) => x['connected'] === r.json.queueid);
  });

  it('abort runs when a transaction was open and the request was refused later', async () => {
    const r = await postSubmit(t.httpUrl, mail({ mail: 'aborted@example.jp', body: 'FORBIDDEN' }));
    expect(r.status).toBe(400);
    await logged('hook abort', (x) => x['mailFrom'] === 'aborted@example.jp');
  });
});

describe('only envelope phases configured', () => {
  it('delivers the message as built (no header/body/eom work) and still refuses at rcpt', async () => {
    const dir2 = mkdtempSync(join(tmpdir(), 'mailwire-submit-hooks2-'));
    mkdirSync(join(dir2, 'config', 'hooks'), { recursive: true });
    writeFileSync(join(dir2, 'config', 'hooks', 'package.json'), '{ "type": "module" }\n');
    writeFileSync(join(dir2, 'config', 'hooks', 'policy.mjs'), POLICY);
    const t2 = await startTestApp({
      dir: dir2,
      spamd: false,
      config: { hooks: { phases: { rcpt: ['policy.mjs'] } } },
      files: { mailertable: `default: { mailer: ESMTP, host: 127.0.0.1, port: ${sink.port} }\n`, recipients: "domainpart: [ 'example.org' ]\n" },
    });
    try {
      const before = sink.messages.length;
      const r = await postSubmit(t2.httpUrl, mail({ rcpt: ['refused@example.org', 'mikeneko@example.org'], body: 'FORBIDDEN is fine here' }, { subject: 'eom edit' }));
      expect(r.status).toBe(200);
      expect(r.json.response[0]).toEqual(refusal(550, '5.1.1', 'RCPT', 'No such user here', 'refused@example.org'));
      const msgs = await sink.waitFor(before + 1);
      const data = msgs[before]!.data.toString();
      expect(data).toContain('\r\nSubject: eom edit\r\n');
      expect(data).not.toContain('X-Hooked');
    } finally {
      await t2.stop();
      rmSync(dir2, { recursive: true, force: true });
    }
  });
});
