/**
 * POST /submit against hostile input, each test named after the review finding it pins down:
 * YAML alias bombs, cross-site browser requests, the shared brute-force throttle, refusal before
 * the body is read, the concurrency limit, MIME parameter injection through attachment names,
 * and header lines beyond RFC 5322's 998. The real app, relaying to a real SMTP server.
 */
import { request as httpRequest, type ClientRequest } from 'node:http';
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashPassword } from '../src/auth/ssha.js';
import { startTestApp, waitFor, type TestApp } from './helpers/app.js';
import { mail, postSubmit, reply, submitTables } from './helpers/submit.js';
import { startSmtpSink, type SmtpSink } from './helpers/smtp-sink.js';

let sink: SmtpSink;
let t: TestApp;
const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

beforeAll(async () => {
  sink = await startSmtpSink();
  t = await startTestApp({
    spamd: false,
    config: {
      submit: { max_concurrent: 1, max_queued: 1, queue_wait: 1.5 },
      http: { allowed_origins: ['https://app.example'], auth: { realm: 'Neko Post' } },
    },
    files: submitTables(sink.port),
  });
});

afterAll(async () => {
  await t?.stop();
  await sink?.close();
});

/** Sends a request and returns the message the sink received for it. */
async function delivered(body: unknown): Promise<string> {
  const before = sink.messages.length;
  const r = await postSubmit(t.httpUrl, body);
  expect(r.status, JSON.stringify(r.json.response)).toBe(200);
  const all = await sink.waitFor(before + 1);
  return all[before]!.data.toString('latin1');
}

function headerBlock(raw: string): string[] {
  return raw.slice(0, raw.indexOf('\r\n\r\n')).split('\r\n');
}

/** One header field, its folded lines joined (RFC 5322 unfolding: CRLF removed). */
function field(raw: string, name: string): string {
  const lines = headerBlock(raw);
  const i = lines.findIndex((l) => l.toLowerCase().startsWith(`${name.toLowerCase()}:`));
  expect(i, name).toBeGreaterThanOrEqual(0);
  let value = lines[i]!;
  for (let j = i + 1; j < lines.length && /^[ \t]/.test(lines[j]!); j++) value += lines[j];
  return value.slice(name.length + 2);
}

describe('YAML alias bomb (a 485-byte body made a 422 MB string)', () => {
  it('refuses YAML aliases: 400, 421 Malformed JSON string', async () => {
    const bomb =
      "{ 'ehlo': 'client.example.jp', 'mail': 'kijitora@example.jp', 'header': { 'subject': 's' }, 'body': 'b', " +
      "'a': &a ['xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx','xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx','xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx','xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx']," +
      " 'b': &b [*a,*a,*a,*a,*a,*a,*a,*a], 'c': &c [*b,*b,*b,*b,*b,*b,*b,*b], 'd': &d [*c,*c,*c,*c,*c,*c,*c,*c]," +
      " 'e': &e [*d,*d,*d,*d,*d,*d,*d,*d], 'rcpt': [*e,*e,*e,*e,*e,*e,*e,*e] }";
    const r = await postSubmit(t.httpUrl, bomb, { 'content-type': 'application/x-www-form-urlencoded' });
    expect(r.status).toBe(400);
    expect(r.json.response).toEqual([reply(421, null, 'HTTP', 'Malformed JSON string')]);
  });

  it('an object or array inside rcpt or cc is malformed, not turned into text', async () => {
    for (const body of [mail({ rcpt: [{ a: [1, 2, 3] }] }), mail({ rcpt: [['mikeneko@example.org']] }), mail({}, { cc: [{ name: 'x' }] })]) {
      const r = await postSubmit(t.httpUrl, body);
      expect(r.status).toBe(400);
      expect(r.json.response).toEqual([reply(421, null, 'HTTP', 'Malformed JSON string')]);
    }
  });

  it('a body over 256 KiB is not read as YAML (JSON of any size up to the limit still is)', async () => {
    const big = 'x'.repeat(300 * 1024);
    const yaml = `{ 'ehlo': 'client.example.jp', 'mail': 'kijitora@example.jp', 'rcpt': [ 'mikeneko@example.org' ], 'header': { 'subject': 's' }, 'body': '${big}' }`;
    const r = await postSubmit(t.httpUrl, yaml, { 'content-type': 'application/x-www-form-urlencoded' });
    expect(r.status).toBe(400);
    expect(r.json.response).toEqual([reply(421, null, 'HTTP', 'Malformed JSON string')]);
    expect((await postSubmit(t.httpUrl, mail({ body: big }))).status).toBe(200);
  });
});

describe('cross-site request forgery', () => {
  it('a browser form or no-cors fetch from another site (Origin, text/plain) is 403 and nothing is sent', async () => {
    const before = sink.messages.length;
    const r = await postSubmit(t.httpUrl, JSON.stringify(mail()), { 'content-type': 'text/plain;charset=UTF-8', origin: 'http://evil.example' });
    expect(r.status).toBe(403);
    expect(r.json.response).toEqual([reply(500, '5.7.1', 'AUTH', 'Access denied')]);
    // Without Origin, Sec-Fetch-Site tells a cross-site (or another port's) request too.
    for (const site of ['cross-site', 'same-site']) {
      const s = await postSubmit(t.httpUrl, mail(), { 'content-type': 'text/plain', 'sec-fetch-site': site });
      expect([site, s.status]).toEqual([site, 403]);
    }
    // Valid credentials do not make a cross-site request acceptable.
    expect((await postSubmit(t.httpUrl, mail(), { origin: 'http://evil.example', authorization: basic('haineko', 'kijitora') })).status).toBe(403);
    expect(sink.messages.length).toBe(before);
  });

  it('same-origin pages, http.allowed_origins and clients without Origin (curl, scripts) are served', async () => {
    expect((await postSubmit(t.httpUrl, mail(), { origin: t.httpUrl, 'sec-fetch-site': 'same-origin' })).status).toBe(200);
    expect((await postSubmit(t.httpUrl, mail(), { origin: 'https://app.example' })).status).toBe(200);
    expect((await postSubmit(t.httpUrl, mail())).status).toBe(200);
  });
});

describe('attachment names cannot add MIME parameters', () => {
  const attachment = (filename: string) => mail({ attachments: [{ filename, contentType: 'text/plain', content: Buffer.from('hi').toString('base64') }] });

  it('a control character in the name: 400, 501 5.6.0 Invalid message content, nothing sent', async () => {
    const before = sink.messages.length;
    const r = await postSubmit(t.httpUrl, attachment('evil.txt"\u0001; name="other.exe'));
    expect(r.status).toBe(400);
    expect(r.json.response).toEqual([
      { ...reply(501, '5.6.0', 'DATA', 'Invalid message content'), message: ['Invalid message content', 'attachment file name "evil.txt\\"\\u0001; name=\\"other.exe" contains a control character'] },
    ]);
    expect((await postSubmit(t.httpUrl, attachment('a\u007f.txt'))).status).toBe(400);
    expect(sink.messages.length).toBe(before);
  });

  it('quotes and backslashes are escaped in name= and filename=', async () => {
    const raw = await delivered(attachment('a"; name="b.exe\\.txt'));
    expect(raw).toContain('Content-Type: text/plain;\r\n name="a\\"; name=\\"b.exe\\\\.txt"\r\n');
    expect(raw).toContain('Content-Disposition: attachment;\r\n filename="a\\"; name=\\"b.exe\\\\.txt"\r\n');
  });

  it('a long non-ASCII name is split into RFC 2231 sections, every line within 998', async () => {
    const name = `${'ü'.repeat(250)}.txt`;
    const raw = await delivered(attachment(name));
    expect(raw).toContain("filename*0*=UTF-8''%C3%BC");
    for (const line of raw.split('\r\n')) expect(line.length).toBeLessThanOrEqual(998);
    const sections = [...raw.matchAll(/filename\*\d+\*=(?:UTF-8'')?([^;\r\n]+)/g)].map((m) => m[1]).join('');
    expect(decodeURIComponent(sections)).toBe(name);
  });

  it('a name over 255 characters is refused', async () => {
    const r = await postSubmit(t.httpUrl, attachment(`${'a'.repeat(256)}.txt`));
    expect(r.status).toBe(400);
    expect(r.json.response[0]).toMatchObject({ code: 501, dsn: '5.6.0', message: ['Invalid message content', 'attachment file name longer than 255 characters'] });
  });
});

describe('header lines are folded (RFC 5322 2.1.1: at most 998 octets)', () => {
  it('a 1200-character subject arrives folded at whitespace, every line at most 78, unfolding to the original', async () => {
    const subject = Array.from({ length: 120 }, (_, i) => `word${String(i).padStart(4, '0')}`).join(' ').slice(0, 1200);
    const raw = await delivered(mail({}, { subject, 'X-Note': subject }));
    const lines = headerBlock(raw);
    const start = lines.findIndex((l) => l.startsWith('Subject: '));
    expect(lines[start + 1]).toMatch(/^ /);
    for (const line of lines) expect(line.length, line).toBeLessThanOrEqual(78);
    expect(field(raw, 'Subject')).toBe(subject);
    expect(field(raw, 'X-Note')).toBe(subject);
  });

  it('a 1200-character word becomes encoded words (lines of at most 78) that decode to the original', async () => {
    const subject = 'x'.repeat(1200);
    const raw = await delivered(mail({}, { subject }));
    for (const line of headerBlock(raw)) expect(line.length, line).toBeLessThanOrEqual(78);
    const words = [...field(raw, 'Subject').matchAll(/=\?UTF-8\?B\?([^?]*)\?=/g)].map((m) => Buffer.from(m[1]!, 'base64').toString('utf8'));
    expect(words.join('')).toBe(subject);
  });

  it('runs of whitespace are squeezed, so they can neither make an overlong line nor a blank continuation line', async () => {
    const raw = await delivered(mail({}, { subject: `a${' '.repeat(2000)}b${' word'.repeat(30)}${' '.repeat(200)}`, 'X-Tabs': `x\t\t\ty${'\t'.repeat(1500)}` }));
    for (const line of headerBlock(raw)) {
      expect(line.length, line).toBeLessThanOrEqual(78);
      expect(line, 'a line of only whitespace').toMatch(/\S/);
    }
    expect(field(raw, 'Subject')).toBe(`a b${' word'.repeat(30)}`);
    expect(field(raw, 'X-Tabs')).toBe('x y');
  });

  it('an address in From, Reply-To or Cc longer than 256 characters is refused: 400, 501 5.6.0', async () => {
    const long = `x <${'a'.repeat(1500)}@example.org>`;
    for (const header of [{ from: long }, { replyto: long }, { cc: ['ok@example.org', long] }, { from: `${'b'.repeat(300)}@example.org` }]) {
      const before = sink.messages.length;
      const r = await postSubmit(t.httpUrl, mail({}, header));
      expect(r.status).toBe(400);
      expect(r.json.response.at(-1)).toEqual({ ...reply(501, '5.6.0', 'DATA', 'Invalid message content'), message: ['Invalid message content', 'address longer than 256 characters in From, Reply-To or Cc'] });
      expect(sink.messages.length).toBe(before);
    }
    // A long display name is fine: it becomes encoded words.
    const raw = await delivered(mail({}, { from: `${'N'.repeat(1200)} <kijitora@example.jp>` }));
    for (const line of headerBlock(raw)) expect(line.length, line).toBeLessThanOrEqual(998);
  });
});

describe('Basic authentication on /submit', () => {
  it('the 401 names http.auth.realm', async () => {
    const r = await postSubmit(t.httpUrl, mail(), { authorization: basic('haineko', 'wrong') });
    expect(r.status).toBe(401);
    expect(r.headers.get('www-authenticate')).toBe('Basic realm="Neko Post", charset="UTF-8"');
  });

  // Last in this file's use of credentials: it leaves 127.0.0.1 throttled for a minute.
  it('after 20 wrong attempts: 429 with Retry-After and 454 4.7.0 AUTH, even for the right password', async () => {
    for (let i = 0; i < 20; i++) {
      const r = await postSubmit(t.httpUrl, mail(), { authorization: basic('haineko', `guess${i}`) });
      if (r.status === 429) break; // the realm test above counted one already
      expect(r.status).toBe(401);
    }
    const before = sink.messages.length;
    const r = await postSubmit(t.httpUrl, mail(), { authorization: basic('haineko', 'kijitora') });
    expect(r.status).toBe(429);
    expect(Number(r.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(Number(r.headers.get('retry-after'))).toBeLessThanOrEqual(60);
    expect(r.json).toEqual(reply(454, '4.7.0', 'AUTH', 'Temporary authentication failure: too many failed attempts, try again later'));
    expect(sink.messages.length).toBe(before);
    // Credentials that do not parse, or another scheme, get the same 429 (not a 401 to learn from).
    for (const authorization of ['Bearer abc', 'Basic !!!', 'Digest x']) {
      expect([authorization, (await postSubmit(t.httpUrl, mail(), { authorization })).status]).toEqual([authorization, 429]);
    }
    // relayhosts needs no credentials, so a loopback client without them is still served.
    expect((await postSubmit(t.httpUrl, mail())).status).toBe(200);
  });
});

interface Answer {
  status: number;
  retryAfter: string | undefined;
  body: string;
}

/** A request that sends its headers and part of its body, then waits: it holds a slot unless refused. */
function slowRequest(port: number, onAnswer: (a: Answer) => void = () => {}): ClientRequest {
  const req: ClientRequest = httpRequest({
    host: '127.0.0.1',
    port,
    method: 'POST',
    path: '/submit',
    agent: false,
    headers: { 'content-type': 'application/json', 'content-length': '1000' },
  });
  req.on('error', () => {});
  req.on('response', (res) => {
    const chunks: Buffer[] = [];
    res.on('data', (c: Buffer) => chunks.push(c));
    res.on('end', () => onAnswer({ status: res.statusCode!, retryAfter: res.headers['retry-after'] as string | undefined, body: Buffer.concat(chunks).toString() }));
  });
  req.write('{"ehlo":');
  return req;
}

describe('submit.max_concurrent', () => {

  const busyBody = [reply(421, '4.3.2', 'CONN', 'Too many concurrent requests, try again later')];

  it('beyond the slot and the queue: 503 in Haineko format at once; the queued one gets 503 when queue_wait runs out', async () => {
    // Three requests that never finish their body: one holds the slot, one waits, one is refused.
    const answers: (Answer & { at: number })[] = [];
    const started = Date.now();
    const reqs = [0, 1, 2].map(() => slowRequest(t.addresses.http.port, (x) => answers.push({ ...x, at: Date.now() - started })));
    try {
      await waitFor(async () => answers.length > 0);
      expect(answers).toHaveLength(1);
      const busy = answers[0]!;
      expect(busy.status).toBe(503);
      expect(busy.retryAfter).toBe('1');
      expect(JSON.parse(busy.body).response).toEqual(busyBody);
      // queue_wait is 1.5 s: the waiting request is refused after it, the slot holder never.
      await waitFor(async () => answers.length > 1, 5000);
      expect(answers[1]!.status).toBe(503);
      expect(JSON.parse(answers[1]!.body).response).toEqual(busyBody);
      expect(answers[1]!.at).toBeGreaterThanOrEqual(1400);
      await new Promise((r) => setTimeout(r, 300));
      expect(answers).toHaveLength(2);
    } finally {
      for (const r of reqs) r.destroy();
    }
    // The aborted request's slot is free again.
    await waitFor(async () => (await postSubmit(t.httpUrl, mail())).status === 200);
  });

  it('a request that finds the slot taken waits in line and is served when it frees', async () => {
    const answers: Answer[] = [];
    const holder = slowRequest(t.addresses.http.port, (x) => answers.push(x));
    await new Promise((r) => setTimeout(r, 200));
    const before = sink.messages.length;
    const queued = postSubmit(t.httpUrl, mail());
    await new Promise((r) => setTimeout(r, 300));
    expect(sink.messages.length).toBe(before);
    holder.destroy();
    const r = await queued;
    expect(r.status).toBe(200);
    expect(sink.messages.length).toBe(before + 1);
    expect(answers).toEqual([]);
  });
});

describe('pipelined requests from a client that leaves while they wait for a slot', () => {
  let q: TestApp;
  beforeAll(async () => {
    q = await startTestApp({
      spamd: false,
      config: { submit: { max_concurrent: 1, max_queued: 4, queue_wait: 20 } },
      files: { mailertable: `default: { mailer: ESMTP, host: 127.0.0.1, port: ${sink.port} }\n`, recipients: "domainpart: [ 'example.org' ]\n" },
    });
  });
  afterAll(async () => q?.stop());

  // The second of two pipelined requests has no response on the socket yet: only the socket's
  // own 'close' says its client left. Missed, the slot went to the dead request for good.
  it('gives their places up, so the slot is not lost to a dead request', async () => {
    const holder = slowRequest(q.addresses.http.port);
    await new Promise((r) => setTimeout(r, 200));
    const body = JSON.stringify(mail());
    const one = `POST /submit HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
    const pipelined = connect(q.addresses.http.port, '127.0.0.1');
    pipelined.on('error', () => {});
    await new Promise((r) => pipelined.once('connect', r));
    pipelined.write(one + one);
    await new Promise((r) => setTimeout(r, 300));
    pipelined.destroy();
    await new Promise((r) => setTimeout(r, 200));
    holder.destroy();
    const started = Date.now();
    const r = await postSubmit(q.httpUrl, mail());
    expect(r.status).toBe(200);
    expect(Date.now() - started).toBeLessThan(5000);
  });
});

describe('refusal before the body is read', () => {
  let closed: TestApp;
  beforeAll(async () => {
    closed = await startTestApp({
      spamd: false,
      config: { submit: { max_message_size: 1000 } },
      files: {
        mailertable: `default: { mailer: ESMTP, host: 127.0.0.1, port: ${sink.port} }\n`,
        relayhosts: "relayhosts: [ '192.0.2.1' ]\n",
        password: `haineko: '${hashPassword('kijitora')}'\n`,
      },
    });
  });
  afterAll(async () => closed?.stop());

  it('a stranger posting more than the body limit gets 403 (not 413: the body was never buffered)', async () => {
    const huge = JSON.stringify(mail({ body: 'x'.repeat(3 * 1000 + 64 * 1024 + 10) }));
    const r = await postSubmit(closed.httpUrl, huge);
    expect(r.status).toBe(403);
    expect(r.json.response).toEqual([reply(500, '5.7.1', 'AUTH', 'Access denied')]);
    const wrong = await postSubmit(closed.httpUrl, huge, { authorization: basic('haineko', 'wrong') });
    expect(wrong.status).toBe(401);
  });
});
