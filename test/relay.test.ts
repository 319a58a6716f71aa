/**
 * The relay mailers behind POST /submit, against real servers on loopback: our smtp-server
 * sink (STARTTLS, AUTH, chosen replies), Postfix's smtp-sink, a second mailwire for the
 * Haineko mailer; File, Screen and Discard. Asserts what arrived on the wire.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { simpleParser } from 'mailparser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../src/log/logger.js';
import { deliverToHaineko } from '../src/relay/haineko.js';
import { createRelay } from '../src/relay/relay.js';
import { toRoute } from '../src/routing/route.js';
import { routingFromTables } from '../src/routing/routing.js';
import { createSubmitService } from '../src/submit/submit.js';
import { startTestApp, type TestApp } from './helpers/app.js';
import { freePort } from './helpers/ports.js';
import { startPostfixSink } from './helpers/postfix-sink.js';
import { startSmtpSink, type SmtpSink } from './helpers/smtp-sink.js';
import { mail, postSubmit } from './helpers/submit.js';

const RCPTS = ['a@example.org', 'b@example.org', 'c@example.org', 'd@example.org', 'e@example.org', 'f@example.org'];

describe('ESMTP mailer', () => {
  let sink: SmtpSink;
  let tlsSink: SmtpSink;
  let t: TestApp;
  let downPort: number;

  beforeAll(async () => {
    sink = await startSmtpSink({
      rcptReplies: { 'unknown@example.org': [550, '5.1.1 <unknown@example.org>: Recipient address rejected: User unknown'] },
      dataReplies: { 'spam@example.org': [554, '5.7.1 Message rejected as spam'], 'later@example.org': [451, '4.3.0 Try again later'] },
    });
    tlsSink = await startSmtpSink({ starttls: true, auth: { user: 'relayuser', pass: 's3cret' } });
    downPort = await freePort();
    t = await startTestApp({
      spamd: false,
      // Fewer workers than recipients: Haineko dropped the recipients beyond max_workers.
      config: { submit: { max_workers: 2, max_rcpts_per_message: 6 } },
      files: {
        mailertable: [
          `default: { mailer: ESMTP, host: 127.0.0.1, port: ${sink.port} }`,
          `secure.test: { mailer: ESMTP, host: 127.0.0.1, port: ${tlsSink.port}, starttls: 1, auth: upstream, options: { tls_verify: false } }`,
          `verified.test: { mailer: ESMTP, host: 127.0.0.1, port: ${tlsSink.port}, starttls: 1, auth: upstream }`,
          `nostarttls.test: { mailer: ESMTP, host: 127.0.0.1, port: ${tlsSink.port}, auth: upstream }`,
          `down.test: { mailer: ESMTP, host: 127.0.0.1, port: ${downPort}, retry: 1, sleep: 0.05, timeout: 5 }`,
          '',
        ].join('\n'),
        authinfo: "upstream: { username: relayuser, password: 's3cret' }\n",
        recipients: 'open-relay: 1\n',
      },
    });
  });
  afterAll(async () => {
    await t?.stop();
    await sink?.close();
    await tlsSink?.close();
  });

  it('delivers every recipient, each in its own transaction, with max_workers smaller than the recipient count', async () => {
    const before = sink.messages.length;
    const r = await postSubmit(t.httpUrl, mail({ rcpt: RCPTS }));
    expect(r.status).toBe(200);
    expect(r.json.response.map((e) => [e.rcpt, e.code, e.command])).toEqual(RCPTS.map((a) => [a, 250, 'DATA']));
    const got = (await sink.waitFor(before + RCPTS.length)).slice(before);
    expect(got.map((m) => m.to).sort()).toEqual(RCPTS.map((a) => [a]));
    // Each copy names its own recipient in To:.
    for (const m of got) expect(m.data.toString()).toContain(`\r\nTo: ${m.to[0]}\r\n`);
  });

  it('reports an upstream 550 for one recipient and 250 for another', async () => {
    const r = await postSubmit(t.httpUrl, mail({ rcpt: ['unknown@example.org', 'known@example.org'] }));
    expect(r.status).toBe(200);
    expect(r.json.response[0]).toEqual({
      dsn: '5.1.1',
      code: 550,
      host: '127.0.0.1',
      port: sink.port,
      rcpt: 'unknown@example.org',
      error: 1,
      mailer: 'ESMTP',
      command: 'RCPT',
      message: ['550 5.1.1 <unknown@example.org>: Recipient address rejected: User unknown'],
    });
    expect(r.json.response[1]).toMatchObject({ code: 250, dsn: '2.0.0', error: 0, rcpt: 'known@example.org', command: 'DATA' });
  });

  it("reports the upstream's reply to the end of DATA, not to QUIT", async () => {
    const r = await postSubmit(t.httpUrl, mail({ rcpt: ['spam@example.org', 'later@example.org'] }));
    expect(r.status).toBe(200);
    expect(r.json.response[0]).toMatchObject({ code: 554, dsn: '5.7.1', error: 1, command: 'DATA', message: ['554 5.7.1 Message rejected as spam'] });
    expect(r.json.response[1]).toMatchObject({ code: 451, dsn: '4.3.0', error: 1, command: 'DATA', message: ['451 4.3.0 Try again later'] });
  });

  it('upstream down: code 421, command CONN, after the retries', async () => {
    const r = await postSubmit(t.httpUrl, mail({ rcpt: ['x@down.test', 'ok@example.org'] }));
    expect(r.status).toBe(200);
    expect(r.json.response[0]).toMatchObject({ code: 421, dsn: null, error: 1, command: 'CONN', mailer: 'ESMTP', host: '127.0.0.1', port: downPort, rcpt: 'x@down.test' });
    expect(r.json.response[0]!.message[0]).toBe('Cannot connect SMTP Server');
    expect(r.json.response[1]).toMatchObject({ code: 250, rcpt: 'ok@example.org' });
  });

  it('uses STARTTLS and AUTH with the credentials from authinfo', async () => {
    const before = tlsSink.messages.length;
    const r = await postSubmit(t.httpUrl, mail({ rcpt: ['kuro@secure.test'] }));
    expect(r.json.response[0]).toMatchObject({ code: 250, error: 0, port: tlsSink.port });
    const [m] = (await tlsSink.waitFor(before + 1)).slice(before);
    expect(m).toMatchObject({ secure: true, user: 'relayuser', from: 'kijitora@example.jp', to: ['kuro@secure.test'] });
  });

  it('a route with credentials but without starttls: 1 still uses STARTTLS when offered: the password never goes in clear to it', async () => {
    const before = tlsSink.messages.length;
    const r = await postSubmit(t.httpUrl, mail({ rcpt: ['kuro@nostarttls.test'] }));
    expect(r.json.response[0]).toMatchObject({ code: 250, error: 0, port: tlsSink.port });
    const [m] = (await tlsSink.waitFor(before + 1)).slice(before);
    expect(m).toMatchObject({ secure: true, user: 'relayuser', to: ['kuro@nostarttls.test'] });
  });

  it('verifies the upstream certificate unless the route says tls_verify: false', async () => {
    const r = await postSubmit(t.httpUrl, mail({ rcpt: ['kuro@verified.test'] }));
    expect(r.json.response[0]).toMatchObject({ code: 421, command: 'CONN', error: 1 });
  });

  it('sends non-ASCII bodies (Haineko crashed) and honours header.charset', async () => {
    const cases: [string, string, string, RegExp][] = [
      ['UTF-8', '猫の集会は木曜日の真夜中です', '次の集会', /charset=UTF-8[\s\S]*Content-Transfer-Encoding: base64/],
      ['ISO-2022-JP', '猫の集会は木曜日の真夜中です', '次の集会', /charset=ISO-2022-JP\r\nContent-Transfer-Encoding: 7bit/],
      ['ISO-8859-1', 'Réunion à minuit, café offert', 'Réunion', /charset=ISO-8859-1\r\nContent-Transfer-Encoding: quoted-printable/],
    ];
    for (const [charset, body, subject, shape] of cases) {
      const before = sink.messages.length;
      const r = await postSubmit(t.httpUrl, mail({ body }, { charset, subject, from: 'キジトラ <kijitora@example.jp>' }));
      expect(r.json.response[0], charset).toMatchObject({ code: 250 });
      const [m] = (await sink.waitFor(before + 1)).slice(before);
      // 7-bit clean on the wire whatever the charset.
      expect(m!.data.every((b) => b < 0x80), charset).toBe(true);
      const raw = m!.data.toString('latin1');
      expect(raw, charset).toMatch(shape);
      expect(raw, charset).toContain(`Subject: =?${charset}?B?`);
      const parsed = await simpleParser(m!.data);
      expect(parsed.text?.trim(), charset).toBe(body);
      expect(parsed.subject, charset).toBe(subject);
      if (charset !== 'ISO-8859-1') expect(parsed.from?.value[0]?.name, charset).toBe('キジトラ');
    }
    // ISO-2022-JP bytes, not UTF-8 relabelled.
    const last = sink.messages.at(-2)!.data.toString('latin1');
    expect(last).toContain('\x1b$B');
  });

  it('adds cc, X- headers, an HTML part and attachments (mailwire extensions)', async () => {
    const before = sink.messages.length;
    const pdf = Buffer.from('%PDF-1.4 fake');
    const r = await postSubmit(
      t.httpUrl,
      mail(
        { html: '<p>Next <b>meeting</b></p>', attachments: [{ filename: 'agenda.pdf', contentType: 'application/pdf', content: pdf.toString('base64') }, { filename: '議題.txt', content: Buffer.from('一').toString('base64') }] },
        { cc: ['Shiro <shiro@example.org>'], 'X-Campaign': 'autumn', 'X-Haineko-Loop': ['x.test'] },
      ),
    );
    expect(r.json.response[0]).toMatchObject({ code: 250 });
    const [m] = (await sink.waitFor(before + 1)).slice(before);
    const parsed = await simpleParser(m!.data);
    expect(parsed.cc && !Array.isArray(parsed.cc) ? parsed.cc.value[0]?.address : null).toBe('shiro@example.org');
    expect(parsed.headers.get('x-campaign')).toBe('autumn');
    expect(parsed.html).toContain('<b>meeting</b>');
    expect(parsed.text?.trim()).toBe('Next meeting opens at midnight on next thursday');
    expect(parsed.attachments.map((a) => [a.filename, a.content.toString()])).toEqual([
      ['agenda.pdf', '%PDF-1.4 fake'],
      ['議題.txt', '一'],
    ]);
    expect(parsed.attachments[0]!.contentType).toBe('application/pdf');
    expect(m!.data.toString()).toContain("Content-Disposition: attachment;\r\n filename*=UTF-8''%E8%AD%B0%E9%A1%8C.txt");
    // Cc is a header only: the envelope is rcpt.
    expect(m!.to).toEqual(['mikeneko@example.org']);
    expect(m!.data.toString()).toContain('\r\nX-Haineko-Loop: x.test, ');
  });
});

describe("Postfix's smtp-sink as the upstream", () => {
  it('relays and reports its 250 to the end of DATA', async () => {
    const postfix = await startPostfixSink();
    const t = await startTestApp({ spamd: false, files: { mailertable: `default: { mailer: ESMTP, host: 127.0.0.1, port: ${postfix.port} }\n`, recipients: 'open-relay: 1\n' } });
    try {
      const r = await postSubmit(t.httpUrl, mail({ rcpt: ['a@example.org', 'b@example.org'] }));
      expect(r.status).toBe(200);
      for (const e of r.json.response) expect(e).toMatchObject({ code: 250, error: 0, command: 'DATA', mailer: 'ESMTP', port: postfix.port });
    } finally {
      await t.stop();
      await postfix.stop();
    }
  });
});

describe('File, Discard and Haineko mailers', () => {
  let dir: string;
  let a: TestApp;
  let b: TestApp;
  let bPort: number;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'mailwire-file-mailer-'));
    // b: files mail for file.test, sends everything else back to a (to show a loop).
    bPort = await freePort();
    const aPort = await freePort();
    a = await startTestApp({
      spamd: false,
      config: { http: { port: aPort }, submit: { servername: 'a.mailwire.test' } },
      files: {
        mailertable: [`file.test: { mailer: File, options: { directory: ${JSON.stringify(dir)} } }`, 'discard.test: { mailer: Discard }', `default: { mailer: Haineko, host: 127.0.0.1, port: ${bPort} }`, ''].join('\n'),
        recipients: 'open-relay: 1\n',
      },
    });
    b = await startTestApp({
      spamd: false,
      config: { http: { port: bPort }, submit: { servername: 'b.mailwire.test' } },
      files: {
        mailertable: [`file.test: { mailer: File, host: ${JSON.stringify(dir)} }`, `viab.test: { mailer: File, host: ${JSON.stringify(dir)} }`, `default: { mailer: Haineko, host: 127.0.0.1, port: ${aPort} }`, ''].join('\n'),
        recipients: 'open-relay: 1\n',
      },
    });
  });
  afterAll(async () => {
    await a?.stop();
    await b?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('File writes one .eml per recipient into the directory', async () => {
    const r = await postSubmit(a.httpUrl, mail({ rcpt: ['one@file.test', 'two@file.test'] }));
    expect(r.status).toBe(200);
    for (const [i, e] of r.json.response.entries()) {
      expect(e).toMatchObject({ code: 200, dsn: '2.0.0', error: 0, mailer: 'File', command: 'DATA', host: null, port: null });
      const path = e.message[0]!;
      expect(path.startsWith(dir) && path.endsWith('.eml')).toBe(true);
      expect(e.message[1]).toBe('Successfully saved');
      expect(readFileSync(path, 'utf8')).toContain(`\r\nTo: ${['one@file.test', 'two@file.test'][i]}\r\n`);
    }
  });

  it('Discard answers 200 Discard and sends nothing', async () => {
    const r = await postSubmit(a.httpUrl, mail({ rcpt: ['x@discard.test'] }));
    expect(r.json.response).toEqual([{ dsn: null, code: 200, host: null, port: null, rcpt: 'x@discard.test', error: 0, mailer: 'Discard', command: 'DATA', message: ['Discard'] }]);
  });

  it("Haineko posts to a second mailwire's /submit and reports its answer", async () => {
    const r = await postSubmit(b.httpUrl, mail({ rcpt: ['three@file.test'] }));
    expect(r.json.response[0]).toMatchObject({ mailer: 'File' });
    // Through a: a relays by the Haineko mailer to b, which files it.
    const via = await postSubmit(a.httpUrl, mail({ rcpt: ['four@viab.test'] }));
    expect(via.json.response[0]).toMatchObject({ code: 200, dsn: '2.0.0', error: 0, mailer: 'Haineko', host: '127.0.0.1', port: bPort, rcpt: 'four@viab.test', command: 'DATA' });
    // b's own answer (its File mailer's path and words) comes back through a.
    const [path, words] = via.json.response[0]!.message;
    expect(words).toBe('Successfully saved');
    const filed = readFileSync(path!, 'utf8');
    expect(filed).toContain('\r\nTo: four@viab.test\r\n');
    // Both servers are in the loop header of what b filed.
    expect(filed).toContain('\r\nX-Haineko-Loop: a.mailwire.test, b.mailwire.test\r\n');
  });

  it('a loop between two servers is cut: 421 Detected message loop comes back', async () => {
    // a -> b (default Haineko) -> a: a finds its own name in x-haineko-loop and refuses.
    const r = await postSubmit(a.httpUrl, mail({ rcpt: ['cat@loop.test'] }));
    expect(r.status).toBe(200);
    expect(r.json.response[0]).toMatchObject({ code: 421, error: 1, mailer: 'Haineko', rcpt: 'cat@loop.test', message: ['Detected message loop'] });
  });
});

describe('Screen mailer', () => {
  it('prints the message to its stream and answers 200 OK', async () => {
    const out = new PassThrough();
    const chunks: Buffer[] = [];
    out.on('data', (c: Buffer) => chunks.push(c));
    const relay = createRelay({ hostname: 'mx.mailwire.test', maxWorkers: 2, logger: silentLogger(), screen: out });
    const routing = routingFromTables({ mailertable: { default: { mailer: 'Screen' } } }, { hostname: 'mx.mailwire.test' });
    const service = createSubmitService({
      routing: () => routing,
      relay,
      limits: { maxMessageSize: 4096, maxRcptsPerMessage: 4 },
      requireAuth: false,
      hostname: 'mx.mailwire.test',
      servername: 'mx.mailwire.test',
      version: 'test',
      logger: silentLogger(),
    });
    const res = await service.submit({ body: JSON.stringify(mail({ rcpt: ['me@mx.mailwire.test'] })), remoteAddress: '127.0.0.1', remotePort: 1234, userAgent: null, referer: null, authorization: null });
    relay.close();
    expect(res.status).toBe(200);
    expect((res.body as { response: unknown[] }).response).toEqual([{ dsn: '2.0.0', code: 200, host: null, port: null, rcpt: 'me@mx.mailwire.test', error: 0, mailer: 'Screen', command: 'DATA', message: ['OK'] }]);
    const printed = Buffer.concat(chunks).toString();
    expect(printed).toContain('\r\nTo: me@mx.mailwire.test\r\n');
    expect(printed).toContain('\r\nSubject: About next meeting\r\n');
  });
});

describe('the Haineko mailer', () => {
  it('posts the envelope sender it is given (a hook may have changed it), not the one in the request', async () => {
    const posted: Record<string, unknown>[] = [];
    const server = createHttpServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        posted.push(JSON.parse(body) as Record<string, unknown>);
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ response: [{ dsn: '2.0.0', code: 200, rcpt: 'kuro@example.org', error: 0, mailer: 'File', message: ['saved'], command: 'DATA' }] }));
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const port = (server.address() as AddressInfo).port;
      const route = toRoute({ mailer: 'Haineko', host: '127.0.0.1', port }, 'mailertable default', {});
      const json = { ehlo: 'client.test', mail: 'original@example.jp', rcpt: ['kuro@example.org'], header: { from: 'original@example.jp', subject: 's' }, body: 'b' };
      const entry = await deliverToHaineko({ sender: 'changed@example.jp', rcpt: 'kuro@example.org', route, message: { queueid: 'q', raw: () => Buffer.alloc(0), json } });
      expect(entry).toMatchObject({ code: 200, error: 0, mailer: 'Haineko' });
      expect(posted).toEqual([{ ...json, mail: 'changed@example.jp', rcpt: ['kuro@example.org'] }]);
    } finally {
      server.close();
    }
  });
});
