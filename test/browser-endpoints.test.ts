/**
 * The server side of the web viewer, without a browser: GET /api/v1/info, the mail-HTML view
 * /api/v1/messages/:id/html with its policy, the viewer's own CSP, and config web:.
 */
import { readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { validateConfig } from '../src/config/load.js';
import { mailHtmlDocument, rewriteCidReferences } from '../src/http/mail-html.js';
import { viewerHeaders } from '../src/http/security.js';
import { startTestApp, storedEvent, type TestApp } from './helpers/app.js';
import { sendMail } from './helpers/browser.js';
import { makeAttachment } from './helpers/events.js';

const VERSION = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;
const API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'; sandbox";
const MAIL_CSP =
  "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; font-src data:; form-action 'none'; base-uri 'none'; " +
  "frame-ancestors 'self'; sandbox allow-popups allow-popups-to-escape-sandbox";
const MAIL_CSP_REMOTE = MAIL_CSP.replace("img-src 'self' data:", "img-src 'self' data: http: https:");
const VIEWER_CSP =
  "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-src 'self'; object-src 'none'; " +
  "base-uri 'none'; form-action 'self'; frame-ancestors 'self'";
const GIF = Buffer.from('R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7', 'base64');

/** A GET with a chosen Host header (fetch() does not let a test set it). */
function getWithHost(port: number, path: string, host: string): Promise<{ status: number; headers: Record<string, string | string[] | undefined> }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, headers: { host } }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers }));
    });
    req.on('error', reject);
    req.end();
  });
}

let t: TestApp;
let plain: TestApp;

beforeAll(async () => {
  [t, plain] = await Promise.all([
    startTestApp({ spamd: false, config: { web: { disposable_domain: 'inbox.example.test', poll_interval_ms: 1500 }, smtp: { limits: { max_message_size: 1048576 } } } }),
    startTestApp({ spamd: false }),
  ]);
});

afterAll(async () => {
  await Promise.all([t?.stop(), plain?.stop()]);
});

describe('GET /api/v1/info', () => {
  it('answers the configured viewer settings', async () => {
    const res = await fetch(`${t.httpUrl}/api/v1/info`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/json; charset=utf-8');
    expect(res.headers.get('content-security-policy')).toBe(API_CSP);
    expect(await res.json()).toEqual({
      name: 'mailwire',
      version: VERSION,
      feed: '/api/v1/events',
      disposableDomain: 'inbox.example.test',
      pollIntervalMs: 1500,
      maxMessageSize: 1048576,
    });
  });

  it('defaults the disposable domain to smtp.hostname', async () => {
    const body = (await (await fetch(`${plain.httpUrl}/api/v1/info`)).json()) as Record<string, unknown>;
    expect(body.disposableDomain).toBe('mx.mailwire.test');
    expect(body.pollIntervalMs).toBe(3000);
    expect(body.maxMessageSize).toBe(25 * 1024 * 1024);
  });
});

describe('config web:', () => {
  it('has defaults', () => {
    expect(validateConfig({}, '/nonexistent').web).toEqual({ disposable_domain: null, poll_interval_ms: 3000 });
  });

  it.each([
    [{ disposable_domain: 'not a domain' }, 'web.disposable_domain'],
    [{ disposable_domain: '-x.example' }, 'web.disposable_domain'],
    [{ disposable_domain: 'a@b.example' }, 'web.disposable_domain'],
    [{ poll_interval_ms: 100 }, 'web.poll_interval_ms'],
    [{ poll_interval_ms: 120_000 }, 'web.poll_interval_ms'],
    [{ colour: 'blue' }, 'web'],
  ])('refuses %j, naming %s', (web, key) => {
    expect(() => validateConfig({ web }, '/nonexistent')).toThrow(key);
  });
});

describe('GET /api/v1/messages/:id/html', () => {
  let id: string;
  let textOnly: string;
  const html = '<!DOCTYPE html><html><body><p>Hi</p><img src="cid:Logo@Mailwire.Test"><img src="cid:unknown@x"><script>x()</script></body></html>';

  beforeAll(async () => {
    id = await sendMail(t.smtpPort, {
      subject: 'html view',
      html,
      attachments: [{ filename: 'logo.gif', content: GIF, contentType: 'image/gif', cid: 'Logo@Mailwire.Test' }],
    });
    textOnly = await sendMail(t.smtpPort, { subject: 'text only', text: 'no html here' });
    await Promise.all([storedEvent(t, id), storedEvent(t, textOnly)]);
  });

  it('serves the body as sent, under a sandboxing policy, with cid: references pointing at the parts', async () => {
    const res = await fetch(`${t.httpUrl}/api/v1/messages/${id}/html`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(res.headers.get('content-security-policy')).toBe(MAIL_CSP);
    expect(res.headers.get('x-frame-options')).toBe('SAMEORIGIN');
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    expect(res.headers.get('referrer-policy')).toBe('no-referrer');
    expect(res.headers.get('cache-control')).toBe('no-store');
    expect(res.headers.get('x-dns-prefetch-control')).toBe('off');
    const event = await storedEvent(t, id);
    expect(await res.text()).toBe(
      `<!DOCTYPE html><base target="_blank">${event.html!.slice('<!DOCTYPE html>'.length).replace('cid:Logo@Mailwire.Test', `/api/v1/messages/${id}/attachments/0`)}`,
    );
    // The rewritten URL is the inline part.
    const part = await fetch(`${t.httpUrl}/api/v1/messages/${id}/attachments/0`);
    expect(Buffer.from(await part.arrayBuffer())).toEqual(GIF);
  });

  it('allows remote images only with ?remote=1', async () => {
    const res = await fetch(`${t.httpUrl}/api/v1/messages/${id}/html?remote=1`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-security-policy')).toBe(MAIL_CSP_REMOTE);
    await res.body?.cancel();
    const off = await fetch(`${t.httpUrl}/api/v1/messages/${id}/html?remote=0`);
    expect(off.headers.get('content-security-policy')).toBe(MAIL_CSP);
    await off.body?.cancel();
  });

  it.each([
    ['?remote=yes', 400, 'bad_request', 'remote must be 0 or 1'],
    ['?remote=1&remote=1', 400, 'bad_request', 'remote must be given at most once'],
  ])('answers %s with %i', async (query, status, error, message) => {
    const res = await fetch(`${t.httpUrl}/api/v1/messages/${id}/html${query}`);
    expect(res.status).toBe(status);
    expect(res.headers.get('content-security-policy')).toBe(API_CSP);
    expect(await res.json()).toEqual({ error, message });
  });

  it('is a 404 for a message without HTML, an unknown id and a malformed id', async () => {
    for (const [path, message] of [
      [`/api/v1/messages/${textOnly}/html`, 'the message has no HTML body'],
      ['/api/v1/messages/01ARZ3NDEKTSV4RRFFQ69G5FAV/html', 'message not found'],
      ['/api/v1/messages/..%2f..%2fetc/html', 'message not found'],
    ] as const) {
      const res = await fetch(`${t.httpUrl}${path}`);
      expect(res.status, path).toBe(404);
      expect(res.headers.get('content-security-policy')).toBe(API_CSP);
      expect(await res.json()).toEqual({ error: 'not_found', message });
    }
  });
});

describe('cid: rewriting', () => {
  const id = '01ARZ3NDEKTSV4RRFFQ69G5FAV';
  const parts = [makeAttachment({ index: 0, contentId: '<logo@x.test>' }), makeAttachment({ index: 1, contentId: 'a b@x' }), makeAttachment({ index: 2, contentId: null })];

  it.each([
    ['<img src="cid:logo@x.test">', `<img src="/api/v1/messages/${id}/attachments/0">`],
    ["<img src='CID:LOGO@X.TEST'>", `<img src='/api/v1/messages/${id}/attachments/0'>`],
    ['<td style="background:url(cid:logo@x.test)">', `<td style="background:url(/api/v1/messages/${id}/attachments/0)">`],
    ['<img src="cid:a%20b@x">', `<img src="/api/v1/messages/${id}/attachments/1">`],
    ['<img src="cid:other@x.test">', '<img src="cid:other@x.test">'],
    ['<img src="cid:%E0%A4%A">', '<img src="cid:%E0%A4%A">'],
    ['no references', 'no references'],
  ])('%s', (input, output) => {
    expect(rewriteCidReferences(input, id, parts)).toBe(output);
  });

  it('keeps a leading doctype first and puts the base target after it', () => {
    expect(mailHtmlDocument('\uFEFF <!doctype html public "x"><p>x</p>', id, [])).toBe('\uFEFF <!doctype html public "x"><base target="_blank"><p>x</p>');
    expect(mailHtmlDocument('<p>x</p><!doctype html>', id, [])).toBe('<base target="_blank"><p>x</p><!doctype html>');
  });
});

describe('the viewer page', () => {
  it('names exactly its own WebSocket origin in connect-src', async () => {
    const port = t.addresses.http.port;
    const res = await fetch(`${t.httpUrl}/`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-security-policy')).toBe(`${VIEWER_CSP}; connect-src 'self' ws://127.0.0.1:${port} wss://127.0.0.1:${port}`);
    expect(await res.text()).toContain('<script type="module" src="app.js"></script>');
    const byName = await getWithHost(port, '/app.js', `localhost:${port}`);
    expect(byName.status).toBe(200);
    expect(byName.headers['content-security-policy']).toBe(`${VIEWER_CSP}; connect-src 'self' ws://localhost:${port} wss://localhost:${port}`);
  });

  it.each([undefined, 'evil.test; script-src *', 'a b', '[::1', 'x:99999999'])('falls back to connect-src \'self\' for the Host %j', (host) => {
    expect(viewerHeaders(host)['content-security-policy']).toBe(`${VIEWER_CSP}; connect-src 'self'`);
  });

  it.each(['app.js', 'feed.js', 'detail.js', 'dom.js', 'style.css', 'favicon.svg'])('serves %s', async (file) => {
    const res = await fetch(`${t.httpUrl}/${file}`);
    expect(res.status).toBe(200);
    await res.body?.cancel();
  });
});
