/**
 * Access control for the API, the feed and the viewer (http.auth): Basic against the password
 * table, bearer tokens, open health checks, the auto rule, the generated token, the throttle.
 * The real app on loopback port 0 with access control switched on explicitly.
 */
import { request as httpRequest } from 'node:http';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { accessEnabled, createHttpAccess, type AuthRequest } from '../src/auth/http-auth.js';
import { hashPassword } from '../src/auth/ssha.js';
import { httpSchema } from '../src/config/schema.js';
import { createLogger, silentLogger } from '../src/log/logger.js';
import { startTestApp, waitFor, type TestApp } from './helpers/app.js';

const TOKEN = 'tok_0123456789abcdefghijklmnopqrstuvwxyz';
const PASSWORD_FILE = "haineko: '{SSHA}9p2euyteR33mp0TYKjmYhTlIt1ctxuRn'\n";
const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

async function get(t: TestApp, path: string, authorization?: string): Promise<{ status: number; headers: Headers; body: string }> {
  const res = await fetch(`${t.httpUrl}${path}`, authorization ? { headers: { authorization } } : {});
  return { status: res.status, headers: res.headers, body: await res.text() };
}

/** A WebSocket upgrade by hand: the status line tells whether the feed let us in. */
async function upgrade(t: TestApp, path: string, authorization?: string): Promise<number> {
  return (await upgradeAnswer(t, path, authorization)).status;
}

/** The status and headers of the answer to an upgrade request (101: the feed let us in). */
function upgradeAnswer(t: TestApp, path: string, authorization?: string): Promise<{ status: number; headers: Record<string, string | string[] | undefined> }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({
      host: '127.0.0.1',
      port: t.addresses.http.port,
      path,
      headers: {
        connection: 'Upgrade',
        upgrade: 'websocket',
        'sec-websocket-version': '13',
        'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==',
        ...(authorization ? { authorization } : {}),
      },
    });
    req.on('upgrade', (res, socket) => {
      socket.destroy();
      resolve({ status: 101, headers: res.headers });
    });
    req.on('response', (res) => {
      res.resume();
      resolve({ status: res.statusCode!, headers: res.headers });
    });
    req.on('error', reject);
    req.setTimeout(5000, () => req.destroy(new Error('upgrade timed out')));
    req.end();
  });
}

describe('access control on (http.auth.enabled: true)', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ spamd: false, config: { http: { auth: { enabled: true, tokens: [TOKEN] } } }, files: { password: PASSWORD_FILE } });
  });
  afterAll(() => t.stop());

  it('without credentials: 401, a Basic challenge and the JSON error body', async () => {
    const r = await get(t, '/api/v1/messages');
    expect(r.status).toBe(401);
    expect(r.headers.get('www-authenticate')).toBe('Basic realm="mailwire"');
    expect(r.headers.get('content-type')).toMatch(/^application\/json/);
    expect(JSON.parse(r.body)).toEqual({ error: 'unauthorized', message: 'authentication required (HTTP Basic or a bearer token)' });
  });

  it('with the right Basic credentials: 200', async () => {
    const r = await get(t, '/api/v1/messages', basic('haineko', 'kijitora'));
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toEqual({ items: [], next: null });
  });

  it('a wrong password, an unknown user, malformed Basic: 401', async () => {
    for (const auth of [basic('haineko', 'kijitorA'), basic('nobody', 'kijitora'), basic('', ''), 'Basic !!!', 'Basic a2lqaXRvcmE=', 'Digest x']) {
      const r = await get(t, '/api/v1/messages', auth);
      expect([auth, r.status]).toEqual([auth, 401]);
      expect(r.headers.get('www-authenticate')).toBe('Basic realm="mailwire"');
    }
  });

  it('a bearer token: right 200, wrong 401; the scheme name is case-insensitive', async () => {
    expect((await get(t, '/api/v1/messages', `Bearer ${TOKEN}`)).status).toBe(200);
    expect((await get(t, '/api/v1/messages', `bearer ${TOKEN}`)).status).toBe(200);
    expect((await get(t, '/api/v1/messages', `Bearer ${TOKEN}x`)).status).toBe(401);
    expect((await get(t, '/api/v1/messages', `Bearer ${TOKEN.slice(0, -1)}`)).status).toBe(401);
  });

  it('the token is not taken from the query string of the API', async () => {
    expect((await get(t, `/api/v1/messages?access_token=${TOKEN}`)).status).toBe(401);
  });

  it('/healthz and /readyz stay open; /metrics, the viewer and unknown paths are covered', async () => {
    expect((await get(t, '/healthz')).status).toBe(200);
    expect((await get(t, '/readyz')).status).toBe(200);
    expect((await get(t, '/metrics')).status).toBe(401);
    expect((await get(t, '/metrics', `Bearer ${TOKEN}`)).status).toBe(200);
    expect((await get(t, '/')).status).toBe(401);
    const viewer = await get(t, '/', basic('haineko', 'kijitora'));
    expect(viewer.status).toBe(200);
    expect(viewer.headers.get('content-type')).toMatch(/^text\/html/);
    expect((await get(t, '/api/v1/messages/01ARZ3NDEKTSV4RRFFQ69G5FAV')).status).toBe(401);
    const del = await fetch(`${t.httpUrl}/api/v1/messages/01ARZ3NDEKTSV4RRFFQ69G5FAV`, { method: 'DELETE' });
    expect(del.status).toBe(401);
  });

  it('POST /submit is not covered: Haineko\'s relayhosts and password rules answer it', async () => {
    const res = await fetch(`${t.httpUrl}/submit`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    const body = await res.text();
    expect(res.status).not.toBe(401);
    expect(res.headers.get('www-authenticate')).toBeNull();
    expect(body).not.toContain('unauthorized');
  });

  it('the Host check still comes first (403 before 401)', async () => {
    const status = await new Promise<number>((resolve, reject) => {
      const req = httpRequest({ host: '127.0.0.1', port: t.addresses.http.port, path: '/api/v1/messages', headers: { host: 'attacker.example' } }, (res) => {
        res.resume();
        resolve(res.statusCode!);
      });
      req.on('error', reject);
      req.end();
    });
    expect(status).toBe(403);
  });

  it('the WebSocket feed refuses with the Basic challenge, as the API does', async () => {
    for (const auth of [undefined, basic('haineko', 'wrong')]) {
      const r = await upgradeAnswer(t, '/api/v1/events', auth);
      expect(r.status).toBe(401);
      expect(r.headers['www-authenticate']).toBe('Basic realm="mailwire"');
    }
  });

  it('the WebSocket feed: 401 without credentials; Basic, a bearer header or ?access_token= let it in', async () => {
    expect(await upgrade(t, '/api/v1/events')).toBe(401);
    expect(await upgrade(t, '/api/v1/events', basic('haineko', 'wrong'))).toBe(401);
    expect(await upgrade(t, '/api/v1/events', basic('haineko', 'kijitora'))).toBe(101);
    expect(await upgrade(t, '/api/v1/events', `Bearer ${TOKEN}`)).toBe(101);
    expect(await upgrade(t, `/api/v1/events?access_token=${encodeURIComponent(TOKEN)}`)).toBe(101);
    expect(await upgrade(t, `/api/v1/events?access_token=nope`)).toBe(401);
  });

  it('a user added to the password file works without a restart', async () => {
    writeFileSync(join(t.dir, 'config', 'password'), `${PASSWORD_FILE}neko: '${hashPassword('long random pass', 'ssha256')}'\n`);
    await waitFor(async () => (await get(t, '/api/v1/messages', basic('neko', 'long random pass'))).status === 200);
    expect((await get(t, '/api/v1/messages', basic('haineko', 'kijitora'))).status).toBe(200);
  });
});

describe('access control off on loopback by default', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ spamd: false, files: { password: PASSWORD_FILE } });
  });
  afterAll(() => t.stop());

  it('serves the API without credentials', async () => {
    expect((await get(t, '/api/v1/messages')).status).toBe(200);
  });
});

describe('access control on with nobody to log in', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ spamd: false, config: { http: { auth: { enabled: true } } } });
  });
  afterAll(() => t.stop());

  it('does not start wide open', async () => {
    expect((await get(t, '/api/v1/messages')).status).toBe(401);
    expect((await get(t, '/healthz')).status).toBe(200);
  });
});

describe('failed-attempt throttle', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ spamd: false, config: { http: { auth: { enabled: true, tokens: [TOKEN] } } }, files: { password: PASSWORD_FILE } });
  });
  afterAll(() => t.stop());

  it('after 20 wrong attempts from one address: 429 with Retry-After, even for right credentials', async () => {
    for (let i = 0; i < 20; i++) expect((await get(t, '/api/v1/messages', basic('haineko', `guess${i}`))).status).toBe(401);
    const r = await get(t, '/api/v1/messages', basic('haineko', 'kijitora'));
    expect(r.status).toBe(429);
    expect(JSON.parse(r.body)).toEqual({ error: 'too_many_requests', message: 'too many failed authentication attempts; try again later' });
    expect(Number(r.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(Number(r.headers.get('retry-after'))).toBeLessThanOrEqual(60);
    // Requests without credentials are not attempts: still a plain 401 challenge.
    expect((await get(t, '/api/v1/messages')).status).toBe(401);
    // The feed says the same (it answered 401 without a challenge): 429 with Retry-After.
    const feed = await upgradeAnswer(t, '/api/v1/events', basic('haineko', 'kijitora'));
    expect(feed.status).toBe(429);
    expect(Number(feed.headers['retry-after'])).toBeGreaterThan(0);
    expect(Number(feed.headers['retry-after'])).toBeLessThanOrEqual(60);
    expect((await get(t, '/healthz')).status).toBe(200);
  });
});

describe('the access decision (pure)', () => {
  const passwords = { verifyPassword: (u: string, p: string) => u === 'haineko' && p === 'kijitora', count: () => 1 };
  const req = (authorization?: string, url = '/api/v1/messages', ip = '192.0.2.1'): AuthRequest =>
    ({ headers: authorization ? { authorization } : {}, url, socket: { remoteAddress: ip } }) as unknown as AuthRequest;

  it('auto: off on loopback, on everywhere else; true and false force it', () => {
    for (const host of ['127.0.0.1', '127.1.2.3', '::1', '[::1]', 'localhost']) expect([host, accessEnabled('auto', host)]).toEqual([host, false]);
    for (const host of ['0.0.0.0', '::', '192.0.2.1', '2001:db8::1', 'mail.example.org']) expect([host, accessEnabled('auto', host)]).toEqual([host, true]);
    expect(accessEnabled(true, '127.0.0.1')).toBe(true);
    expect(accessEnabled(false, '0.0.0.0')).toBe(false);
  });

  it('the default config (auto) is on for 0.0.0.0 and off for 127.0.0.1', () => {
    const config = httpSchema.parse({}).auth;
    expect(config).toEqual({ enabled: 'auto', tokens: [], realm: 'mailwire' });
    expect(createHttpAccess({ config, httpHost: '0.0.0.0', passwords, logger: silentLogger() }).enabled).toBe(true);
    expect(createHttpAccess({ config, httpHost: '127.0.0.1', passwords, logger: silentLogger() }).check(req())).toEqual({ ok: true, user: null, via: 'off' });
  });

  it('with no users and no tokens a random token is made and logged once at warn; it works as a bearer token and on the feed', () => {
    const chunks: string[] = [];
    const logger = createLogger('info', new Writable({ write: (c, _e, cb) => (chunks.push(String(c)), cb()) }));
    const noUsers = { verifyPassword: () => false, count: () => 0 };
    const access = createHttpAccess({ config: httpSchema.parse({}).auth, httpHost: '0.0.0.0', passwords: noUsers, logger });
    const token = access.generatedToken!;
    expect(token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    const lines = chunks.join('').trim().split('\n').map((l) => JSON.parse(l));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ level: 40, mod: 'auth' });
    expect(lines[0].msg).toContain(`Authorization: Bearer ${token}`);
    expect(access.check(req(`Bearer ${token}`))).toEqual({ ok: true, user: null, via: 'bearer' });
    expect(access.check(req(`?access_token=${token}`))).toMatchObject({ ok: false, status: 401 });
    expect(access.authorize(req(undefined, `/api/v1/events?access_token=${token}`) as never).ok).toBe(true);
    expect(access.authorize(req(undefined, '/api/v1/events') as never).ok).toBe(false);
    // A second app start makes a different token.
    expect(createHttpAccess({ config: httpSchema.parse({}).auth, httpHost: '0.0.0.0', passwords: noUsers, logger: silentLogger() }).generatedToken).not.toBe(token);
  });

  it('no generated token when users or tokens exist, or when access control is off', () => {
    const config = httpSchema.parse({}).auth;
    expect(createHttpAccess({ config, httpHost: '0.0.0.0', passwords, logger: silentLogger() }).generatedToken).toBeNull();
    expect(createHttpAccess({ config: { ...config, tokens: [TOKEN] }, httpHost: '0.0.0.0', passwords: { verifyPassword: () => false, count: () => 0 }, logger: silentLogger() }).generatedToken).toBeNull();
    expect(createHttpAccess({ config, httpHost: '127.0.0.1', passwords: { verifyPassword: () => false, count: () => 0 }, logger: silentLogger() }).generatedToken).toBeNull();
  });

  it('logs a failed attempt at info with address, scheme and user, never the password', () => {
    const chunks: string[] = [];
    const logger = createLogger('info', new Writable({ write: (c, _e, cb) => (chunks.push(String(c)), cb()) }));
    const access = createHttpAccess({ config: { ...httpSchema.parse({}).auth, enabled: true }, httpHost: '127.0.0.1', passwords, logger });
    expect(access.check(req(basic('haineko', 'hunter2-secret')))).toEqual({ ok: false, status: 401, reason: 'invalid', challenge: 'Basic realm="mailwire"' });
    expect(access.check(req(basic('haineko', 'kijitora')))).toEqual({ ok: true, user: 'haineko', via: 'basic' });
    const lines = chunks.join('').trim().split('\n').map((l) => JSON.parse(l));
    expect(lines).toEqual([expect.objectContaining({ level: 30, ip: '192.0.2.1', scheme: 'basic', user: 'haineko', msg: 'HTTP authentication failed' })]);
    expect(chunks.join('')).not.toContain('hunter2');
  });

  it('the throttle window ends: the address may try again after a minute', () => {
    let now = 1_000_000;
    const access = createHttpAccess({ config: { ...httpSchema.parse({}).auth, enabled: true }, httpHost: '127.0.0.1', passwords, logger: silentLogger(), now: () => now });
    for (let i = 0; i < 20; i++) access.check(req(basic('haineko', 'x')));
    expect(access.check(req(basic('haineko', 'kijitora')))).toEqual({ ok: false, status: 429, reason: 'throttled', retryAfterS: 60 });
    // Another address is not affected.
    expect(access.check(req(basic('haineko', 'kijitora'), '/', '192.0.2.2'))).toMatchObject({ ok: true });
    now += 60_000;
    expect(access.check(req(basic('haineko', 'kijitora')))).toMatchObject({ ok: true, via: 'basic' });
  });

  it('IPv6 clients are counted per /64: fresh addresses of one network share the allowance', () => {
    const access = createHttpAccess({ config: { ...httpSchema.parse({}).auth, enabled: true }, httpHost: '127.0.0.1', passwords, logger: silentLogger() });
    for (let i = 1; i <= 20; i++) expect(access.check(req(basic('haineko', 'x'), '/', `2001:db8:1:2::${i.toString(16)}`))).toMatchObject({ status: 401 });
    expect(access.check(req(basic('haineko', 'kijitora'), '/', '2001:db8:1:2:ffff::1'))).toMatchObject({ ok: false, status: 429 });
    // Another /64 is another client.
    expect(access.check(req(basic('haineko', 'kijitora'), '/', '2001:db8:1:3::1'))).toMatchObject({ ok: true });
  });

  it('config: short tokens and quotes in the realm are refused with the key named', () => {
    expect(httpSchema.safeParse({ auth: { tokens: ['short'] } }).error?.issues[0]).toMatchObject({ path: ['auth', 'tokens', 0] });
    expect(httpSchema.safeParse({ auth: { realm: 'a"b' } }).error?.issues[0]).toMatchObject({ path: ['auth', 'realm'] });
    expect(httpSchema.safeParse({ auth: { enabled: 'yes' } }).error?.issues[0]).toMatchObject({ path: ['auth', 'enabled'] });
    expect(httpSchema.safeParse({ auth: { token: [] } }).error?.issues[0]).toMatchObject({ code: 'unrecognized_keys' });
  });
});
