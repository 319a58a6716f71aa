/**
 * POST /submit against the real app, relaying to a real SMTP server on loopback: every row of
 * Haineko's validation table with its exact reply, the response shape, and the checks mailwire
 * adds (CR/LF injection, loop detection, anchored sender check, byte-counted size).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashPassword } from '../src/auth/ssha.js';
import { startTestApp, type TestApp } from './helpers/app.js';
import { mail, postSubmit, reply, submitTables } from './helpers/submit.js';
import { startSmtpSink, type SmtpSink } from './helpers/smtp-sink.js';

let sink: SmtpSink;
let t: TestApp;

beforeAll(async () => {
  sink = await startSmtpSink();
  t = await startTestApp({
    spamd: false,
    config: { submit: { max_rcpts_per_message: 4, max_message_size: 1000, servername: 'neko.mailwire.test' } },
    files: submitTables(sink.port, "domainpart: [ 'example.org', 'Example.NET' ]\nrecipients: [ 'Kuro@Example.COM' ]\n"),
  });
});

afterAll(async () => {
  await t?.stop();
  await sink?.close();
});

describe('validation, in Haineko order, with its replies', () => {
  it('refuses a body that is not a JSON or YAML object: 400, 421 Malformed JSON string', async () => {
    for (const body of ['{ "ehlo": ', '[1, 2]', '"a string"', '', 'ehlo: [unclosed']) {
      const r = await postSubmit(t.httpUrl, body);
      expect(r.status, body).toBe(400);
      expect(r.json.response).toEqual([reply(421, null, 'HTTP', 'Malformed JSON string')]);
    }
  });

  it('EHLO empty: 400, 501 5.0.0 EHLO requires domain address', async () => {
    const r = await postSubmit(t.httpUrl, mail({ ehlo: '' }));
    expect(r.status).toBe(400);
    expect(r.json.response).toEqual([reply(501, '5.0.0', 'EHLO', 'EHLO requires domain address')]);
  });

  it('EHLO not a domain or IP literal: 400, 501 5.0.0 Invalid domain name; literals pass', async () => {
    for (const ehlo of ['neko cat', '-bad-.example', '[300.1.1.1]', 1]) {
      const r = await postSubmit(t.httpUrl, mail({ ehlo }));
      expect(r.status, String(ehlo)).toBe(400);
      expect(r.json.response).toEqual([reply(501, '5.0.0', 'EHLO', 'Invalid domain name')]);
    }
    for (const ehlo of ['[127.0.0.1]', '[IPv6:::1]', 'localhost']) expect((await postSubmit(t.httpUrl, mail({ ehlo }))).status, ehlo).toBe(200);
  });

  it('MAIL empty: 400, 501 5.5.2', async () => {
    const r = await postSubmit(t.httpUrl, mail({ mail: '' }));
    expect(r.status).toBe(400);
    expect(r.json.response).toEqual([reply(501, '5.5.2', 'MAIL', 'Syntax error in parameters scanning "FROM"')]);
  });

  it('MAIL not an address, including "x <a@b>" (Haineko\'s unanchored check let it pass): 400, 553 5.5.4', async () => {
    for (const m of ['neko', 'x <kijitora@example.jp>', 'kijitora@example.jp x', '<kijitora@example.jp>', 'a@b@example.jp']) {
      const r = await postSubmit(t.httpUrl, mail({ mail: m }));
      expect(r.status, m).toBe(400);
      expect(r.json.response).toEqual([reply(553, '5.5.4', 'MAIL', 'Domain name required for sender address')]);
    }
  });

  it('no recipients: 400, 553 5.0.0 User address required', async () => {
    for (const rcpt of [[], '', null]) {
      const r = await postSubmit(t.httpUrl, mail({ rcpt }));
      expect(r.status).toBe(400);
      expect(r.json.response).toEqual([reply(553, '5.0.0', 'RCPT', 'User address required')]);
    }
  });

  it('more than max_rcpts_per_message: 403, 452 4.5.3 Too many recipients', async () => {
    const r = await postSubmit(t.httpUrl, mail({ rcpt: ['a@example.org', 'b@example.org', 'c@example.org', 'd@example.org', 'e@example.org'] }));
    expect(r.status).toBe(403);
    expect(r.json.response).toEqual([reply(452, '4.5.3', 'RCPT', 'Too many recipients')]);
  });

  it('an invalid and a refused recipient are reported each, the others are delivered', async () => {
    const before = sink.messages.length;
    const r = await postSubmit(t.httpUrl, mail({ rcpt: ['neko', 'mikeneko@example.org', 'tora@elsewhere.test'] }));
    expect(r.status).toBe(200);
    expect(r.json.response[0]).toEqual(reply(553, '5.1.5', 'RCPT', 'Recipient address is invalid', 'neko'));
    expect(r.json.response[1]).toEqual(reply(553, '5.7.1', 'RCPT', 'Recipient address is not permitted', 'tora@elsewhere.test'));
    expect(r.json.response[2]).toMatchObject({ code: 250, dsn: '2.0.0', rcpt: 'mikeneko@example.org', error: 0, mailer: 'ESMTP', command: 'DATA', host: '127.0.0.1', port: sink.port });
    expect(r.json.response).toHaveLength(3);
    expect(r.json.recipient).toEqual(['mikeneko@example.org']);
    await sink.waitFor(before + 1);
    expect(sink.messages.slice(before).map((m) => m.to)).toEqual([['mikeneko@example.org']]);
  });

  it('the recipients table is case-insensitive (Haineko compared exactly)', async () => {
    const r = await postSubmit(t.httpUrl, mail({ rcpt: ['MIKENEKO@EXAMPLE.ORG', 'kuro@example.com', 'shiro@example.net'] }));
    expect(r.status).toBe(200);
    expect(r.json.response.map((e) => [e.rcpt, e.code])).toEqual([
      ['MIKENEKO@EXAMPLE.ORG', 250],
      ['kuro@example.com', 250],
      ['shiro@example.net', 250],
    ]);
  });

  it('every recipient refused: 400 with every entry', async () => {
    const r = await postSubmit(t.httpUrl, mail({ rcpt: ['neko', 'tora@elsewhere.test'] }));
    expect(r.status).toBe(400);
    expect(r.json.response).toEqual([
      reply(553, '5.1.5', 'RCPT', 'Recipient address is invalid', 'neko'),
      reply(553, '5.7.1', 'RCPT', 'Recipient address is not permitted', 'tora@elsewhere.test'),
    ]);
  });

  it('body empty: 400, 500 5.6.0 Message body is empty', async () => {
    const r = await postSubmit(t.httpUrl, mail({ body: '' }));
    expect(r.status).toBe(400);
    expect(r.json.response).toEqual([reply(500, '5.6.0', 'DATA', 'Message body is empty')]);
  });

  it('size is counted in bytes, not characters: 400, 552 5.2.3', async () => {
    // 600 characters, 1200 bytes in UTF-8: under the limit (1000) in characters, over it in bytes.
    const r = await postSubmit(t.httpUrl, mail({ body: 'é'.repeat(600) }));
    expect(r.status).toBe(400);
    expect(r.json.response).toEqual([reply(552, '5.2.3', 'DATA', 'Message size exceeds fixed maximum message size')]);
    expect((await postSubmit(t.httpUrl, mail({ body: 'e'.repeat(1000) }))).status).toBe(200);
  });

  it('subject empty: 400, 500 5.6.0 Subject header is empty', async () => {
    for (const subject of ['', '  \t ']) {
      const r = await postSubmit(t.httpUrl, mail({}, { subject }));
      expect(r.status).toBe(400);
      expect(r.json.response).toEqual([reply(500, '5.6.0', 'DATA', 'Subject header is empty')]);
    }
  });

  it('a message that already passed this server is refused: 400, 421 Detected message loop', async () => {
    const r = await postSubmit(t.httpUrl, mail({}, { 'x-haineko-loop': ['other.test', 'neko.mailwire.test'] }));
    expect(r.status).toBe(400);
    expect(r.json.response).toEqual([reply(421, null, 'CONN', 'Detected message loop')]);
    expect((await postSubmit(t.httpUrl, mail({}, { 'x-haineko-loop': ['other.test'] }))).status).toBe(200);
  });

  it('a loop list of 50 servers counts as a loop; 49 long names are folded into lines of at most 998', async () => {
    const hops = (n: number) => Array.from({ length: n }, (_, i) => `relay-${i}.${'x'.repeat(200)}.test`);
    const r = await postSubmit(t.httpUrl, mail({}, { 'x-haineko-loop': hops(50) }));
    expect(r.status).toBe(400);
    expect(r.json.response).toEqual([reply(421, null, 'CONN', 'Detected message loop')]);
    const before = sink.messages.length;
    const ok = await postSubmit(t.httpUrl, mail({}, { 'x-haineko-loop': hops(49) }));
    expect(ok.status).toBe(200);
    const [m] = (await sink.waitFor(before + 1)).slice(before);
    const head = m!.data.toString().split('\r\n\r\n')[0]!;
    const loop = /\r\nX-Haineko-Loop: ([^]*?)\r\n(?![ \t])/.exec(head)![1]!;
    expect(loop.split(',').map((s) => s.trim())).toEqual([...hops(49), 'neko.mailwire.test']);
    expect(Math.max(...head.split('\r\n').map((l) => l.length))).toBeLessThanOrEqual(998);
  });

  it('CR or LF in any header field or address: 400 and nothing is sent', async () => {
    const cases: [string, Record<string, unknown>, Record<string, unknown>, string][] = [
      ['ehlo', { ehlo: 'a.example\r\nRCPT TO:<x@evil.test>' }, {}, 'EHLO'],
      ['mail', { mail: 'a@example.jp>\r\nRCPT TO:<x@evil.test' }, {}, 'MAIL'],
      ['rcpt', { rcpt: ['mikeneko@example.org', 'b@example.org\nBcc: x@evil.test'] }, {}, 'RCPT'],
      ['from', {}, { from: 'a@example.jp\r\nBcc: x@evil.test' }, 'DATA'],
      ['subject', {}, { subject: 'hi\nBcc: x@evil.test' }, 'DATA'],
      ['subject CR only', {}, { subject: 'hi\rBcc: x@evil.test' }, 'DATA'],
      ['replyto', {}, { replyto: 'a@example.jp\r\nBcc: x@evil.test' }, 'DATA'],
      ['reply-to', {}, { 'reply-to': 'a@example.jp\r\nBcc: x@evil.test' }, 'DATA'],
      ['cc', {}, { cc: ['a@example.jp\nBcc: x@evil.test'] }, 'DATA'],
      ['charset', {}, { charset: 'UTF-8\r\nBcc: x@evil.test' }, 'DATA'],
      ['X- header value', {}, { 'X-Campaign': 'a\r\nBcc: x@evil.test' }, 'DATA'],
      ['loop header', {}, { 'x-haineko-loop': ['a\r\nBcc: x@evil.test'] }, 'DATA'],
      ['attachment filename', { attachments: [{ filename: 'a.txt"\r\nBcc: x@evil.test', content: 'aGk=' }] }, {}, 'DATA'],
      ['attachment type', { attachments: [{ filename: 'a.txt', contentType: 'text/plain\r\nBcc: x@evil.test', content: 'aGk=' }] }, {}, 'DATA'],
    ];
    const before = sink.messages.length;
    for (const [name, over, header, command] of cases) {
      const r = await postSubmit(t.httpUrl, mail(over, header));
      expect(r.status, name).toBe(400);
      expect(r.json.response, name).toHaveLength(1);
      expect(r.json.response[0], name).toMatchObject({ code: 501, dsn: '5.5.2', command, error: 1 });
    }
    // A delivery in flight would have arrived by now: the last valid request below is the only one.
    await postSubmit(t.httpUrl, mail());
    await sink.waitFor(before + 1);
    expect(sink.messages.length).toBe(before + 1);
    expect(sink.messages.at(-1)!.data.toString()).not.toContain('evil.test');
  });
});

describe('response shape', () => {
  it('has every Haineko key with its type, and the queue id in Received: and Message-Id', async () => {
    const before = sink.messages.length;
    const r = await postSubmit(t.httpUrl, mail(), { 'user-agent': 'Haineko/eg/sendmail.pl', referer: 'http://app.example/form' });
    expect(r.status).toBe(200);
    const j = r.json;
    expect(Object.keys(j).sort()).toEqual(['addresser', 'queueid', 'recipient', 'referer', 'remoteaddr', 'remoteport', 'response', 'timestamp', 'useragent']);
    expect(j.queueid).toMatch(/^[0-9A-Za-x]{16}$/);
    expect(j).toMatchObject({ referer: 'http://app.example/form', useragent: 'Haineko/eg/sendmail.pl', remoteaddr: '127.0.0.1', addresser: 'kijitora@example.jp', recipient: ['mikeneko@example.org'] });
    expect(typeof j.remoteport).toBe('number');
    expect(typeof j.timestamp.unixtime).toBe('number');
    expect(Math.abs(j.timestamp.unixtime - Date.now() / 1000)).toBeLessThan(60);
    expect(j.timestamp.datetime).toMatch(/^(Sun|Mon|Tue|Wed|Thu|Fri|Sat) [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4}$/);
    expect(j.response).toHaveLength(1);
    const e = j.response[0]!;
    expect(Object.keys(e).sort()).toEqual(['code', 'command', 'dsn', 'error', 'host', 'mailer', 'message', 'port', 'rcpt']);
    expect(e).toMatchObject({ code: 250, dsn: '2.0.0', error: 0, command: 'DATA', mailer: 'ESMTP', host: '127.0.0.1', port: sink.port, rcpt: 'mikeneko@example.org' });
    expect(e.message).toHaveLength(1);
    expect(e.message[0]).toMatch(/^250 2\.0\.0 Ok: queued as SINK\d+$/);

    const [m] = (await sink.waitFor(before + 1)).slice(before);
    const raw = m!.data.toString();
    expect(m!.from).toBe('kijitora@example.jp');
    expect(raw).toMatch(new RegExp(`^Received: from client\\.example\\.jp \\(\\[127\\.0\\.0\\.1\\]\\)\\r\\n by mx\\.mailwire\\.test with HTTP id ${j.queueid};`));
    expect(raw).toMatch(new RegExp(`\\r\\nMessage-Id: <${j.queueid}\\.\\d+@mx\\.mailwire\\.test>\\r\\n`));
    expect(raw).toContain('\r\nTo: mikeneko@example.org\r\n');
    expect(raw).toContain('\r\nFrom: Kijitora <kijitora@example.jp>\r\n');
    expect(raw).toContain('\r\nX-Haineko-Loop: neko.mailwire.test\r\n');
    expect(raw).toContain('\r\nX-Mailer: Haineko/eg/sendmail.pl\r\n');
    expect(raw).toContain('\r\nContent-Transfer-Encoding: 7bit\r\n\r\nNext meeting opens at midnight on next thursday');
  });

  it('accepts the aliases helo, send/from, recv/to and a single recipient string', async () => {
    const r = await postSubmit(t.httpUrl, { helo: 'client.example.jp', send: 'kijitora@example.jp', recv: 'mikeneko@example.org', header: { subject: 's' }, body: 'b' });
    expect(r.status).toBe(200);
    expect(r.json.recipient).toEqual(['mikeneko@example.org']);
    const r2 = await postSubmit(t.httpUrl, { ehlo: 'client.example.jp', from: 'kijitora@example.jp', to: ['mikeneko@example.org'], header: { subject: 's' }, body: 'b' });
    expect(r2.status).toBe(200);
    expect(r2.json.addresser).toBe('kijitora@example.jp');
  });

  it('GET /submit is 405 in Haineko format; unknown paths under /submit/ are 404, code 421 Not found', async () => {
    const g = await fetch(`${t.httpUrl}/submit`);
    expect(g.status).toBe(405);
    expect(g.headers.get('allow')).toBe('POST');
    expect(((await g.json()) as { response: unknown[] }).response).toEqual([reply(421, null, 'HTTP', 'GET method not supported')]);
    for (const method of ['GET', 'POST']) {
      const n = await fetch(`${t.httpUrl}/submit/nothing`, { method, ...(method === 'POST' ? { body: '{}' } : {}) });
      expect(n.status).toBe(404);
      expect(((await n.json()) as { response: unknown[] }).response).toEqual([reply(421, null, 'HTTP', 'Not found')]);
    }
  });

  it("takes a Haineko sample client's body: YAML flow style with a form content type", async () => {
    const before = sink.messages.length;
    // As eg/sendmail.sh posts it with curl -d: single quotes, a form content type, UTF-8 text.
    const body = `{\n    'ehlo': "client.example.jp",\n    'mail': 'envelope-sender@example.jp',\n    'rcpt': [ 'envelope-recipient@example.org' ],\n    'header': {\n        'subject': 'テストメール',\n        'from': 'キジトラ <envelope-sender@example.jp>',\n        'reply-to': 'neko@example.jp'\n    },\n    'body': 'テストメールです'\n}\n`;
    const r = await postSubmit(t.httpUrl, body, { 'content-type': 'application/x-www-form-urlencoded' });
    expect(r.status).toBe(200);
    expect(r.json.response[0]).toMatchObject({ code: 250, rcpt: 'envelope-recipient@example.org' });
    const [m] = (await sink.waitFor(before + 1)).slice(before);
    const raw = m!.data.toString();
    expect(raw).toContain('\r\nReply-To: neko@example.jp\r\n');
    expect(raw).toContain(`\r\nSubject: =?UTF-8?B?${Buffer.from('テストメール').toString('base64')}?=\r\n`);
    expect(raw).toContain(`\r\nFrom: =?UTF-8?B?${Buffer.from('キジトラ').toString('base64')}?= <envelope-sender@example.jp>\r\n`);
    expect(raw).toContain(`Content-Transfer-Encoding: base64\r\n\r\n${Buffer.from('テストメールです').toString('base64')}`);
  });
});

describe('access', () => {
  let closed: TestApp;
  beforeAll(async () => {
    closed = await startTestApp({
      spamd: false,
      files: {
        mailertable: `default: { mailer: ESMTP, host: 127.0.0.1, port: ${sink.port} }\n`,
        relayhosts: "relayhosts: [ '192.0.2.1' ]\n",
        recipients: "open-relay: 1\n",
        password: `haineko: '${hashPassword('kijitora')}'\n`,
      },
    });
  });
  afterAll(async () => closed?.stop());

  it('a client not in relayhosts and not authenticated: 403, 500 5.7.1 Access denied', async () => {
    const r = await postSubmit(closed.httpUrl, mail());
    expect(r.status).toBe(403);
    expect(r.json.response).toEqual([reply(500, '5.7.1', 'AUTH', 'Access denied')]);
  });

  it('the check comes before the body is read: a malformed body from a stranger is still 403', async () => {
    expect((await postSubmit(closed.httpUrl, 'not json')).status).toBe(403);
  });

  it('valid Basic credentials relay from anywhere', async () => {
    const r = await postSubmit(closed.httpUrl, mail(), { authorization: `Basic ${Buffer.from('haineko:kijitora').toString('base64')}` });
    expect(r.status).toBe(200);
    expect(r.json.response[0]).toMatchObject({ code: 250, error: 0 });
  });

  it('wrong Basic credentials: 401 with WWW-Authenticate and the AUTH reply', async () => {
    for (const auth of [`Basic ${Buffer.from('haineko:wrong').toString('base64')}`, `Basic ${Buffer.from('nobody:kijitora').toString('base64')}`, 'Bearer abc', 'Basic !!!']) {
      const res = await fetch(`${closed.httpUrl}/submit`, { method: 'POST', headers: { authorization: auth, 'content-type': 'application/json' }, body: JSON.stringify(mail()) });
      expect(res.status, auth).toBe(401);
      expect(res.headers.get('www-authenticate')).toMatch(/^Basic realm="mailwire"/);
      expect(await res.json()).toEqual({ ...reply(500, '5.7.1', 'AUTH', 'Access denied. Proper authentication required.') });
    }
  });
});
