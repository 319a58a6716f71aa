import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request as httpRequest } from 'node:http';
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { newMessageId } from '../src/events/id.js';
import type { MailEvent } from '../src/events/types.js';
import { silentLogger } from '../src/log/logger.js';
import { createHttpServer, type Readiness } from '../src/http/server.js';
import { openSqliteStore, type SqliteMessageStore } from '../src/store/sqlite-store.js';
import { makeAttachment, makeEvent } from './helpers/events.js';

const API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'; sandbox";

interface Server {
  app: FastifyInstance;
  base: string;
  port: number;
}

async function start(app: FastifyInstance): Promise<Server> {
  await app.listen({ port: 0, host: '127.0.0.1' });
  const port = (app.server.address() as AddressInfo).port;
  return { app, port, base: `http://127.0.0.1:${port}` };
}

/**
 * A GET with the path sent exactly as written. fetch() cannot do this: the URL parser resolves
 * "/%2e%2e/x" and "/../x" before sending, so a traversal test through fetch tests the client.
 */
function rawGet(port: number, path: string): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, method: 'GET' }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    req.end();
  });
}

let dir: string;
let store: SqliteMessageStore;
let server: Server;
let readiness: Readiness;
const deleted: string[] = [];

const rawBytes = Buffer.from('From: Alice <alice@example.org>\r\nSubject: Hello\r\n\r\n\u00e9t\u00e9 \x00\xff bytes\r\n', 'latin1');
let first: MailEvent;
let second: MailEvent;
const attachmentFiles = ['%PDF-1.4 fake', '<script>alert(1)</script>', '\x89PNG fake', '<svg onload="alert(1)"/>', 'no name'];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'mailwire-http-'));
  store = openSqliteStore(join(dir, 'data'));
  const spool = join(dir, 'spool');
  mkdirSync(spool);

  first = makeEvent({ subject: 'First message', envelope: { rcptTo: ['carol@example.net'] } });
  second = makeEvent({
    subject: 'Second message',
    attachments: [
      makeAttachment({ index: 0, filename: 'report.pdf', contentType: 'application/pdf', size: attachmentFiles[0]!.length }),
      makeAttachment({ index: 1, filename: '"evil\r\nX-Injected: 1.html"', contentType: 'text/html; charset=utf-8', size: attachmentFiles[1]!.length }),
      makeAttachment({ index: 2, filename: 'Résumé €(1).png', contentType: 'image/png', size: attachmentFiles[2]!.length }),
      makeAttachment({ index: 3, filename: '../../etc/passwd.svg', contentType: 'image/svg+xml', size: attachmentFiles[3]!.length }),
      makeAttachment({ index: 4, filename: null, contentType: 'bogus type\r\nX-Injected: 1', size: attachmentFiles[4]!.length }),
      // In the metadata, but the parser never wrote the file.
      makeAttachment({ index: 5, filename: 'gone.txt', contentType: 'text/plain' }),
    ],
  });
  for (const event of [first, second]) {
    const attDir = store.attachmentsDir(event.id);
    if (event.attachments.length > 0) {
      mkdirSync(attDir, { recursive: true });
      attachmentFiles.forEach((content, i) => writeFileSync(join(attDir, String(i)), content, 'latin1'));
    }
    writeFileSync(join(spool, 'tmp'), event === first ? rawBytes : Buffer.from('Subject: Second\r\n\r\nx\r\n'));
    renameSync(join(spool, 'tmp'), join(spool, event.id));
    await store.commit(event, { path: join(spool, event.id) });
  }

  // The viewer's files, plus things next to and inside webDir that must never be served.
  const web = join(dir, 'web');
  mkdirSync(join(web, 'sub'), { recursive: true });
  writeFileSync(join(web, 'index.html'), '<!doctype html><title>mailwire</title>');
  writeFileSync(join(web, 'app.js'), 'console.log("viewer");');
  writeFileSync(join(web, 'style.css'), 'body { margin: 0 }');
  writeFileSync(join(web, 'logo.svg'), '<svg xmlns="http://www.w3.org/2000/svg"/>');
  writeFileSync(join(web, 'icon.png'), Buffer.from([0x89, 0x50, 0x4e, 0x47]));
  writeFileSync(join(web, 'favicon.ico'), Buffer.from([0, 0, 1, 0]));
  writeFileSync(join(web, 'sub', 'index.html'), '<p>sub index</p>');
  writeFileSync(join(web, 'sub', 'page.html'), '<p>sub page</p>');
  writeFileSync(join(web, '.env'), 'SECRET=1');
  writeFileSync(join(web, 'notes.bak'), 'backup');
  writeFileSync(join(dir, 'package.json'), '{"secret":true}');
  writeFileSync(join(dir, 'secret.txt'), 'outside');
  symlinkSync(join(dir, 'secret.txt'), join(web, 'link.txt'));

  readiness = { ready: true, checks: { store: true, smtp: true } };
  server = await start(
    createHttpServer({
      store,
      logger: silentLogger(),
      readiness: () => readiness,
      webDir: web,
      onDelete: (id) => deleted.push(id),
    }),
  );
});

afterAll(async () => {
  await server?.app.close();
  await store?.close();
  rmSync(dir, { recursive: true, force: true });
});

function expectApiHeaders(res: Response): void {
  expect(res.headers.get('x-content-type-options')).toBe('nosniff');
  expect(res.headers.get('referrer-policy')).toBe('no-referrer');
  expect(res.headers.get('x-frame-options')).toBe('DENY');
  expect(res.headers.get('content-security-policy')).toBe(API_CSP);
  expect(res.headers.get('cache-control')).toBe('no-store');
}

describe('GET /api/v1/messages', () => {
  it('lists newest first as { items, next }', async () => {
    const res = await fetch(`${server.base}/api/v1/messages`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/json; charset=utf-8');
    expectApiHeaders(res);
    const body = (await res.json()) as { items: { id: string }[]; next: string | null };
    expect(Object.keys(body).sort()).toEqual(['items', 'next']);
    expect(body.items.map((i) => i.id)).toEqual([second.id, first.id]);
    expect(body.next).toBeNull();
    expect(body.items[1]).toEqual({
      id: first.id,
      receivedAt: first.receivedAt,
      mailFrom: 'alice@example.org',
      rcptTo: ['carol@example.net'],
      from: [{ name: 'Alice', address: 'alice@example.org' }],
      subject: 'First message',
      size: 100,
      spam: { status: 'ham', score: 1.2 },
      attachments: 0,
      messageId: first.messageId,
    });
  });

  it('pages with limit and the opaque before cursor', async () => {
    const page1 = (await (await fetch(`${server.base}/api/v1/messages?limit=1`)).json()) as { items: { id: string }[]; next: string };
    expect(page1.items.map((i) => i.id)).toEqual([second.id]);
    expect(typeof page1.next).toBe('string');
    const res = await fetch(`${server.base}/api/v1/messages?limit=1&before=${encodeURIComponent(page1.next)}`);
    expect(res.status).toBe(200);
    const page2 = (await res.json()) as { items: { id: string }[]; next: string | null };
    expect(page2.items.map((i) => i.id)).toEqual([first.id]);
    expect(page2.next).toBeNull();
  });

  it('filters by q and rcpt', async () => {
    const ids = async (qs: string) =>
      ((await (await fetch(`${server.base}/api/v1/messages?${qs}`)).json()) as { items: { id: string }[] }).items.map((i) => i.id);
    expect(await ids('q=SECOND')).toEqual([second.id]);
    expect(await ids('q=message')).toEqual([second.id, first.id]);
    expect(await ids('q=%25')).toEqual([]);
    expect(await ids('rcpt=Carol%40Example.net')).toEqual([first.id]);
    expect(await ids('rcpt=carol%40example')).toEqual([]);
    expect(await ids('q=&rcpt=&before=&limit=')).toEqual([second.id, first.id]);
  });

  it.each([
    ['limit=0', 'limit must be an integer from 1 to 500'],
    ['limit=501', 'limit must be an integer from 1 to 500'],
    ['limit=abc', 'limit must be an integer from 1 to 500'],
    ['limit=1.5', 'limit must be an integer from 1 to 500'],
    ['limit=-1', 'limit must be an integer from 1 to 500'],
    ['limit=1&limit=2', 'limit must be given at most once'],
    ['before=abc', 'before is not a cursor this server handed out'],
    ['before=0', 'before is not a cursor this server handed out'],
    [`before=${'9'.repeat(20)}`, 'before is not a cursor this server handed out'],
    [`q=${'x'.repeat(257)}`, 'q is longer than 256 characters'],
  ])('answers 400 for %s', async (qs, message) => {
    const res = await fetch(`${server.base}/api/v1/messages?${qs}`);
    expect(res.status).toBe(400);
    expectApiHeaders(res);
    expect(await res.json()).toEqual({ error: 'bad_request', message });
  });
});

describe('GET /api/v1/messages/:id', () => {
  it('returns the full MailEvent', async () => {
    const res = await fetch(`${server.base}/api/v1/messages/${first.id}`);
    expect(res.status).toBe(200);
    expectApiHeaders(res);
    expect(await res.json()).toEqual(first);
  });

  it.each([newMessageId(), 'not-an-id', '..%2f..%2fdata', newMessageId().toLowerCase(), ''])('answers 404 for "%s"', async (id) => {
    const res = await fetch(`${server.base}/api/v1/messages/${id}`);
    expect(res.status).toBe(404);
    expect(res.headers.get('content-type')).toBe('application/json; charset=utf-8');
    expect(await res.json()).toEqual({ error: 'not_found', message: 'message not found' });
  });
});

describe('GET /api/v1/messages/:id/raw', () => {
  it('streams the original bytes as message/rfc822 with an exact Content-Length', async () => {
    const res = await fetch(`${server.base}/api/v1/messages/${first.id}/raw`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('message/rfc822');
    expect(res.headers.get('content-length')).toBe(String(rawBytes.length));
    expect(res.headers.get('content-disposition')).toBe(`attachment; filename="${first.id}.eml"; filename*=UTF-8''${first.id}.eml`);
    expectApiHeaders(res);
    const body = Buffer.from(await res.arrayBuffer());
    expect(body).toEqual(rawBytes);
    expect(body).toEqual(readFileSync(store.raw(first.id)!.path!));
  });

  it('answers 404 for unknown and invalid ids', async () => {
    for (const id of [newMessageId(), 'x']) {
      const res = await fetch(`${server.base}/api/v1/messages/${id}/raw`);
      expect(res.status).toBe(404);
      expect(await res.json()).toEqual({ error: 'not_found', message: 'message not found' });
    }
  });
});

describe('GET /api/v1/messages/:id/attachments/:index', () => {
  const get = (index: string | number) => fetch(`${server.base}/api/v1/messages/${second.id}/attachments/${index}`);

  it('serves a download with its type, exact length and both filename forms', async () => {
    const res = await get(0);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/pdf');
    expect(res.headers.get('content-length')).toBe(String(attachmentFiles[0]!.length));
    expect(res.headers.get('content-disposition')).toBe(`attachment; filename="report.pdf"; filename*=UTF-8''report.pdf`);
    expectApiHeaders(res);
    expect(await res.text()).toBe(attachmentFiles[0]);
  });

  it('defuses a hostile filename and never serves HTML as HTML', async () => {
    const res = await get(1);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/octet-stream');
    expect(res.headers.get('content-disposition')).toBe(
      `attachment; filename="evilX-Injected_ 1.html"; filename*=UTF-8''evilX-Injected_%201.html`,
    );
    expect(res.headers.get('x-injected')).toBeNull();
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    expect(res.headers.get('content-security-policy')).toBe(API_CSP);
    expect(await res.text()).toBe(attachmentFiles[1]);
  });

  it('encodes a non-ASCII filename per RFC 5987 with an ASCII fallback', async () => {
    const res = await get(2);
    expect(res.headers.get('content-type')).toBe('image/png');
    expect(res.headers.get('content-disposition')).toBe(
      `attachment; filename="R_sum_ _(1).png"; filename*=UTF-8''R%C3%A9sum%C3%A9%20%E2%82%AC%281%29.png`,
    );
  });

  it('strips path parts and serves SVG as octet-stream', async () => {
    const res = await get(3);
    expect(res.headers.get('content-type')).toBe('application/octet-stream');
    expect(res.headers.get('content-disposition')).toBe(`attachment; filename="passwd.svg"; filename*=UTF-8''passwd.svg`);
  });

  it('names an unnamed attachment by index and ignores a malformed type', async () => {
    const res = await get(4);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/octet-stream');
    expect(res.headers.get('content-disposition')).toBe(`attachment; filename="attachment-4"; filename*=UTF-8''attachment-4`);
    expect(res.headers.get('x-injected')).toBeNull();
    expect(await res.text()).toBe('no name');
  });

  it.each(['6', '5', '-1', '01', '1.0', 'abc', '99999999'])('answers 404 for index %s', async (index) => {
    const res = await get(index);
    expect(res.status).toBe(404);
    expect(await res.json()).toEqual({ error: 'not_found', message: 'attachment not found' });
  });

  it('answers 404 for an unknown message', async () => {
    const res = await fetch(`${server.base}/api/v1/messages/${newMessageId()}/attachments/0`);
    expect(res.status).toBe(404);
    expect(await res.json()).toEqual({ error: 'not_found', message: 'message not found' });
  });
});

describe('health, readiness, metrics', () => {
  it('GET /healthz is 200 {status:"ok"}', async () => {
    const res = await fetch(`${server.base}/healthz`);
    expect(res.status).toBe(200);
    expectApiHeaders(res);
    expect(await res.json()).toEqual({ status: 'ok' });
  });

  it('GET /readyz follows the readiness function', async () => {
    const ok = await fetch(`${server.base}/readyz`);
    expect(ok.status).toBe(200);
    expect(await ok.json()).toEqual({ status: 'ready', checks: { store: true, smtp: true } });

    readiness = { ready: false, checks: { store: true, smtp: 'not listening' } };
    try {
      const no = await fetch(`${server.base}/readyz`);
      expect(no.status).toBe(503);
      expect(await no.json()).toEqual({ status: 'not_ready', checks: { store: true, smtp: 'not listening' } });
    } finally {
      readiness = { ready: true, checks: { store: true, smtp: true } };
    }
  });

  it('GET /metrics is Prometheus text with the request counter and process metrics', async () => {
    const app = createHttpServer({ store, logger: silentLogger(), readiness: () => readiness });
    const own = await start(app);
    try {
      await fetch(`${own.base}/healthz`);
      await fetch(`${own.base}/healthz`);
      await fetch(`${own.base}/api/v1/messages/${newMessageId()}`);
      const res = await fetch(`${own.base}/metrics`);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
      const text = await res.text();
      expect(text).toContain('# TYPE mailwire_http_requests_total counter');
      expect(text).toContain('mailwire_http_requests_total{method="GET",route="/healthz",status="200"} 2');
      expect(text).toContain('mailwire_http_requests_total{method="GET",route="/api/v1/messages/:id",status="404"} 1');
      expect(text).toMatch(/^process_cpu_user_seconds_total \d/m);
    } finally {
      await app.close();
    }
  });
});

describe('request deadlines', () => {
  // fastify's requestTimeout alone left Node's 60 s headersTimeout in force (Node enforces the
  // larger), checked only every 30 s: a slow client could hold a socket about twice as long
  // as docs/security.md says. Node's own fields are what it enforces.
  it('the server gives 30 s for a whole request and 20 s for its headers, checked every 2 s', async () => {
    const app = createHttpServer({ store, logger: silentLogger(), readiness: () => readiness });
    await app.ready();
    try {
      expect(app.server.requestTimeout).toBe(30_000);
      expect(app.server.headersTimeout).toBe(20_000);
      expect((app.server as unknown as { connectionsCheckingInterval: number }).connectionsCheckingInterval).toBe(2_000);
    } finally {
      await app.close();
    }
  });
});

describe('unknown paths and methods', () => {
  it.each([
    ['GET', '/api/v1/nope'],
    ['POST', '/api/v1/messages'],
    ['PUT', '/healthz'],
    ['GET', '/nope'],
    ['GET', '/nope.html'],
  ])('%s %s is a JSON 404', async (method, path) => {
    const res = await fetch(`${server.base}${path}`, { method });
    expect(res.status).toBe(404);
    expectApiHeaders(res);
    expect(await res.json()).toEqual({ error: 'not_found', message: 'not found' });
  });

  it('refuses a request body over 64 KiB with 413', async () => {
    const res = await fetch(`${server.base}/api/v1/messages/${newMessageId()}`, {
      method: 'DELETE',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ pad: 'x'.repeat(70 * 1024) }),
    });
    expect(res.status).toBe(413);
    expect(((await res.json()) as { error: string }).error).toBe('payload_too_large');
  });
});

describe('the web viewer', () => {
  it.each([
    ['/', 'text/html; charset=utf-8', '<!doctype html><title>mailwire</title>'],
    ['/index.html', 'text/html; charset=utf-8', '<!doctype html><title>mailwire</title>'],
    ['/app.js', 'text/javascript; charset=utf-8', 'console.log("viewer");'],
    ['/style.css', 'text/css; charset=utf-8', 'body { margin: 0 }'],
    ['/logo.svg', 'image/svg+xml', '<svg xmlns="http://www.w3.org/2000/svg"/>'],
    ['/sub/', 'text/html; charset=utf-8', '<p>sub index</p>'],
    ['/sub/page.html', 'text/html; charset=utf-8', '<p>sub page</p>'],
    ['/app.js?v=2', 'text/javascript; charset=utf-8', 'console.log("viewer");'],
  ])('serves %s as %s', async (path, type, body) => {
    const res = await fetch(`${server.base}${path}`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe(type);
    expect(res.headers.get('content-length')).toBe(String(Buffer.byteLength(body)));
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    expect(res.headers.get('x-frame-options')).toBe('SAMEORIGIN');
    expect(res.headers.get('content-security-policy')).toContain("script-src 'self'");
    expect(res.headers.get('content-security-policy')).toContain("frame-ancestors 'self'");
    expect(res.headers.get('cache-control')).toBe('no-cache');
    expect(await res.text()).toBe(body);
  });

  it.each([
    ['/icon.png', 'image/png', 4],
    ['/favicon.ico', 'image/x-icon', 4],
  ])('serves binary %s as %s', async (path, type, length) => {
    const res = await fetch(`${server.base}${path}`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe(type);
    expect((await res.arrayBuffer()).byteLength).toBe(length);
  });

  it.each([
    '/..%2f..%2fetc/passwd',
    '/%2e%2e/package.json',
    '/%2E%2E/package.json',
    '/../package.json',
    '/sub/../../package.json',
    '/..%5cpackage.json',
    '/%2e%2e%2fpackage.json',
    '/sub/%2e%2e/%2e%2e/secret.txt',
    '/.env',
    '/%2eenv',
    '/link.txt',
    '/notes.bak',
    '//etc/passwd',
    '/sub//page.html',
    '/index.html%00.png',
    '/api/index.html',
  ])('answers a JSON 404 for %s (sent verbatim)', async (path) => {
    const res = await rawGet(server.port, path);
    expect(res.status).toBe(404);
    expect(res.headers['content-type']).toBe('application/json; charset=utf-8');
    expect(JSON.parse(res.body)).toEqual({ error: 'not_found', message: 'not found' });
  });

  it.each(['/%', '/%zz/index.html', '/api/v1/messages/%E0%A4%A'])('answers a JSON 400 for the malformed path %s', async (path) => {
    const res = await rawGet(server.port, path);
    expect(res.status).toBe(400);
    expect(res.headers['content-type']).toBe('application/json; charset=utf-8');
    expect(res.headers['x-content-type-options']).toBe('nosniff');
    expect(res.headers['content-security-policy']).toBe(API_CSP);
    expect(JSON.parse(res.body)).toEqual({ error: 'bad_request', message: 'the URL is not valid' });
  });

  it('answers 404 for the traversal paths through fetch too', async () => {
    for (const path of ['/..%2f..%2fetc/passwd', '/%2e%2e/package.json']) {
      const res = await fetch(`${server.base}${path}`);
      expect(res.status).toBe(404);
      expect(await res.json()).toEqual({ error: 'not_found', message: 'not found' });
    }
  });

  it('GET / is a JSON 404 without a webDir', async () => {
    const app = createHttpServer({ store, logger: silentLogger(), readiness: () => readiness });
    const own = await start(app);
    try {
      const res = await fetch(`${own.base}/`);
      expect(res.status).toBe(404);
      expect(await res.json()).toEqual({ error: 'not_found', message: 'not found' });
    } finally {
      await app.close();
    }
  });
});

// Last: it deletes a fixture message.
describe('DELETE /api/v1/messages/:id', () => {
  it('answers 204, calls onDelete, and the message is gone', async () => {
    const res = await fetch(`${server.base}/api/v1/messages/${first.id}`, { method: 'DELETE' });
    expect(res.status).toBe(204);
    expect(await res.text()).toBe('');
    expect(deleted).toEqual([first.id]);

    expect((await fetch(`${server.base}/api/v1/messages/${first.id}`)).status).toBe(404);
    expect((await fetch(`${server.base}/api/v1/messages/${first.id}/raw`)).status).toBe(404);
    const list = (await (await fetch(`${server.base}/api/v1/messages`)).json()) as { items: { id: string }[] };
    expect(list.items.map((i) => i.id)).toEqual([second.id]);

    const again = await fetch(`${server.base}/api/v1/messages/${first.id}`, { method: 'DELETE' });
    expect(again.status).toBe(404);
    expect(await again.json()).toEqual({ error: 'not_found', message: 'message not found' });
    expect(deleted).toEqual([first.id]);
  });

  it('answers 404 for an invalid id without calling onDelete', async () => {
    const res = await fetch(`${server.base}/api/v1/messages/..%2f..%2fdata`, { method: 'DELETE' });
    expect(res.status).toBe(404);
    expect(await res.json()).toEqual({ error: 'not_found', message: 'message not found' });
    expect(deleted).toEqual([first.id]);
  });
});
