/**
 * The Host header check (DNS-rebinding defence). Requests go through node:http or a raw
 * socket, never fetch(): fetch sets Host from the URL, and the point is to send any Host.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { connect } from 'node:net';
import { mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { httpSchema } from '../src/config/schema.js';
import type { MailEvent } from '../src/events/types.js';
import { silentLogger } from '../src/log/logger.js';
import { DEFAULT_HOST_POLICY, hostAllowed, hostKnown, isLoopbackBind, requestHostAllowed, type HostPolicy } from '../src/http/host-check.js';
import { crossSiteRequest } from '../src/http/submit.js';
import { createHttpServer } from '../src/http/server.js';
import { openSqliteStore, type SqliteMessageStore } from '../src/store/sqlite-store.js';
import { makeEvent } from './helpers/events.js';

const API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'; sandbox";
const REFUSED = { error: 'forbidden_host', message: 'Host header not allowed; add it to http.allowed_hosts' };

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/** A request with exactly this Host header; `null` sends none at all. */
function send(port: number, host: string | null, path = '/api/v1/messages', method = 'GET'): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      { host: '127.0.0.1', port, path, method, setHost: false, headers: host === null ? {} : { host } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/** Raw bytes on a socket, for what node:http will not send (two Host headers); returns the status line. */
function rawStatusLine(port: number, request: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => socket.write(request));
    let data = '';
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      data += chunk;
      const eol = data.indexOf('\r\n');
      if (eol >= 0) {
        socket.destroy();
        resolve(data.slice(0, eol));
      }
    });
    socket.on('error', reject);
    socket.on('end', () => resolve(data));
  });
}

function expectRefused(res: Answer): void {
  expect(res.status).toBe(403);
  expect(JSON.parse(res.body)).toEqual(REFUSED);
  expect(res.headers['content-type']).toBe('application/json; charset=utf-8');
  expect(res.headers['x-content-type-options']).toBe('nosniff');
  expect(res.headers['referrer-policy']).toBe('no-referrer');
  expect(res.headers['x-frame-options']).toBe('DENY');
  expect(res.headers['content-security-policy']).toBe(API_CSP);
  expect(res.headers['cache-control']).toBe('no-store');
}

let dir: string;
let store: SqliteMessageStore;
let event: MailEvent;
const deleted: string[] = [];
const apps: FastifyInstance[] = [];

async function start(hostPolicy?: HostPolicy): Promise<number> {
  const web = join(dir, 'web');
  const app = createHttpServer({
    store,
    logger: silentLogger(),
    webDir: web,
    readiness: () => ({ ready: true, checks: {} }),
    onDelete: (id) => deleted.push(id),
    ...(hostPolicy ? { hostPolicy } : {}),
  });
  apps.push(app);
  await app.listen({ port: 0, host: '127.0.0.1' });
  return (app.server.address() as AddressInfo).port;
}

let port: number; // loopback-bound, no policy given (the default)
let allowPort: number; // loopback-bound, allowed_hosts ['mail.example.org', '.corp.example']

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'mailwire-http-host-'));
  store = openSqliteStore(join(dir, 'data'));
  const spool = join(dir, 'spool');
  mkdirSync(spool);
  mkdirSync(join(dir, 'web'));
  writeFileSync(join(dir, 'web', 'index.html'), '<!doctype html><title>mailwire</title>');
  event = makeEvent({ subject: 'Secret' });
  writeFileSync(join(spool, 'tmp'), 'Subject: Secret\r\n\r\nx\r\n');
  renameSync(join(spool, 'tmp'), join(spool, event.id));
  await store.commit(event, { path: join(spool, event.id) });

  port = await start();
  allowPort = await start({ boundHost: '127.0.0.1', allowedHosts: ['mail.example.org', '.corp.example'] });
});

afterAll(async () => {
  for (const app of apps) await app.close();
  await store?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('a loopback-bound server', () => {
  it.each(['127.0.0.1:PORT', '127.0.0.1', '127.1.2.3:PORT', 'localhost:PORT', 'LOCALHOST', 'localhost.:PORT', '[::1]:PORT', '[::1]', '[0:0:0:0:0:0:0:1]:PORT', 'foo.localhost', 'a.b.localhost:PORT'])(
    'serves Host %s',
    async (host) => {
      const res = await send(port, host.replace('PORT', String(port)));
      expect(res.status).toBe(200);
      expect((JSON.parse(res.body) as { items: { id: string }[] }).items.map((i) => i.id)).toEqual([event.id]);
    },
  );

  it('refuses a foreign Host with 403, the error JSON and the security headers', async () => {
    const res = await send(port, `attacker.example:${port}`);
    expectRefused(res);
    expect(res.body).not.toContain(event.id);
  });

  it.each([
    'ATTACKER.EXAMPLE.',
    '127.0.0.1.attacker.example',
    'localhost.attacker.example',
    'attacker.example:8025',
    'evil-localhost',
    '0.0.0.0',
    '192.168.1.10:8025',
    '[::]',
    '[::ffff:7f00:1]',
    '2130706433',
    '127.1',
    'localhost..',
    'a b',
    'localhost/x',
    'user@localhost',
    'localhost:99999',
    'localhost:',
    '::1',
    '[::1',
    '',
    'x'.repeat(5000),
  ])('refuses Host %j', async (host) => {
    expectRefused(await send(port, host));
  });

  it('refuses a request without Host (HTTP/1.1 and HTTP/1.0)', async () => {
    expectRefused(await send(port, null));
    expectRefused(await send(port, null, `/api/v1/messages/${event.id}`, 'DELETE'));
    expect(await rawStatusLine(port, 'GET /api/v1/messages HTTP/1.0\r\n\r\n')).toBe('HTTP/1.1 403 Forbidden');
    expect(deleted).toEqual([]);
  });

  it('checks the authority of an absolute-form request target too', async () => {
    const abs = (target: string, host: string) => `GET ${target} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`;
    expect(await rawStatusLine(port, abs('http://attacker.example/api/v1/messages', '127.0.0.1'))).toBe('HTTP/1.1 403 Forbidden');
    expect(await rawStatusLine(port, abs('http://127.0.0.1/api/v1/messages', 'attacker.example'))).toBe('HTTP/1.1 403 Forbidden');
    expect(await rawStatusLine(port, abs('http://user@127.0.0.1/api/v1/messages', '127.0.0.1'))).toBe('HTTP/1.1 403 Forbidden');
    expect(await rawStatusLine(port, abs(`http://localhost:${port}/api/v1/messages`, '127.0.0.1'))).toBe('HTTP/1.1 200 OK');
  });

  it('refuses two Host headers, even if both are allowed', async () => {
    const twice = 'GET /api/v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: localhost\r\nConnection: close\r\n\r\n';
    expect(await rawStatusLine(port, twice)).toBe('HTTP/1.1 403 Forbidden');
    const once = 'GET /api/v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n';
    expect(await rawStatusLine(port, once)).toBe('HTTP/1.1 200 OK');
  });

  it.each([
    ['GET', '/api/v1/messages/ID'],
    ['GET', '/api/v1/messages/ID/raw'],
    ['GET', '/api/v1/messages/ID/attachments/0'],
    ['HEAD', '/api/v1/messages'],
    ['GET', '/'],
    ['GET', '/index.html'],
    ['GET', '/healthz'],
    ['GET', '/readyz'],
    ['GET', '/metrics'],
    ['GET', '/no/such/path'],
    ['OPTIONS', '/api/v1/messages'],
    ['POST', '/api/v1/messages'],
  ])('refuses %s %s from a foreign Host', async (method, path) => {
    const res = await send(port, 'attacker.example', path.replace('ID', event.id), method);
    expect(res.status).toBe(403);
    if (method !== 'HEAD') expect(JSON.parse(res.body)).toEqual(REFUSED);
    expect(res.headers['content-security-policy']).toBe(API_CSP);
  });

  it('serves the viewer and health to a loopback Host', async () => {
    const page = await send(port, `localhost:${port}`, '/');
    expect(page.status).toBe(200);
    expect(page.body).toContain('<title>mailwire</title>');
    expect((await send(port, `127.0.0.1:${port}`, '/healthz')).status).toBe(200);
  });

  it('DELETE from a foreign Host is refused and deletes nothing', async () => {
    const res = await send(port, `attacker.example:${port}`, `/api/v1/messages/${event.id}`, 'DELETE');
    expectRefused(res);
    expect(deleted).toEqual([]);
    const still = await send(port, `127.0.0.1:${port}`, `/api/v1/messages/${event.id}`);
    expect(still.status).toBe(200);
    expect((JSON.parse(still.body) as { id: string }).id).toBe(event.id);
  });

  it('counts refused requests in the metrics as 403', async () => {
    await send(port, 'attacker.example', '/healthz');
    const metrics = await send(port, '127.0.0.1', '/metrics');
    expect(metrics.body).toMatch(/mailwire_http_requests_total\{method="GET",route="\/healthz",status="403"\} [1-9]/);
  });
});

describe('a loopback-bound server with allowed_hosts', () => {
  it.each(['mail.example.org', `mail.example.org:PORT`, 'MAIL.Example.ORG.', 'x.corp.example', 'a.b.corp.example:PORT', 'corp.example', 'localhost:PORT', '127.0.0.1'])(
    'serves Host %s',
    async (host) => {
      expect((await send(allowPort, host.replace('PORT', String(allowPort)))).status).toBe(200);
    },
  );

  it.each(['evilcorp.example', 'corp.example.attacker', 'example.org', 'x.mail.example.org', 'mail.example.org.attacker.example', 'attacker.example'])(
    'refuses Host %s',
    async (host) => {
      expectRefused(await send(allowPort, host));
    },
  );
});

describe('a non-loopback-bound server (the policy says 0.0.0.0, the test listens on loopback)', () => {
  it('serves any well-formed Host while allowed_hosts is empty', async () => {
    const open = await start({ boundHost: '0.0.0.0', allowedHosts: [] });
    expect((await send(open, 'mail.lan:8025')).status).toBe(200);
    expect((await send(open, '192.168.1.10')).status).toBe(200);
    expectRefused(await send(open, 'a b'));
    expectRefused(await send(open, null));
  });

  it('serves only loopback, the bound address and allowed_hosts otherwise', async () => {
    const restricted = await start({ boundHost: '192.0.2.10', allowedHosts: ['mail.example.org'] });
    expect((await send(restricted, '192.0.2.10:8025')).status).toBe(200);
    expect((await send(restricted, 'mail.example.org')).status).toBe(200);
    expect((await send(restricted, 'localhost')).status).toBe(200);
    expectRefused(await send(restricted, 'attacker.example'));
    expectRefused(await send(restricted, '192.0.2.11'));
  });
});

describe('hostAllowed', () => {
  const loopback = DEFAULT_HOST_POLICY;
  const any: HostPolicy = { boundHost: '0.0.0.0', allowedHosts: [] };
  const anyV6: HostPolicy = { boundHost: '::', allowedHosts: [] };
  const listed: HostPolicy = { boundHost: '0.0.0.0', allowedHosts: ['mail.example.org', '.corp.example', '192.0.2.5', '[2001:db8::1]', 'fd00::7'] };
  const bound: HostPolicy = { boundHost: '2001:db8::20', allowedHosts: ['mail.example.org'] };
  const boundName: HostPolicy = { boundHost: 'mail.lan', allowedHosts: ['mail.example.org'] };

  it('always allows loopback names and addresses, with or without port', () => {
    for (const policy of [loopback, any, listed, bound]) {
      for (const host of ['localhost', 'localhost:1', 'LocalHost.', 'x.localhost', '127.0.0.1', '127.255.255.254:65535', '[::1]', '[::1]:8025', '[0::1]', '[0000:0000:0000:0000:0000:0000:0000:0001]:80']) {
        expect(hostAllowed(host, policy), `${host}`).toBe(true);
      }
    }
  });

  it('an IPv4-mapped loopback bind (::ffff:127.0.0.1, in any spelling) is a loopback bind: a foreign Host is refused, as auth: auto assumes', () => {
    for (const boundHost of ['::ffff:127.0.0.1', '[::ffff:127.0.0.1]', '::ffff:7f00:1', '0:0:0:0:0:ffff:7f00:1']) {
      const mapped: HostPolicy = { boundHost, allowedHosts: [] };
      expect(isLoopbackBind(boundHost), boundHost).toBe(true);
      expect(hostAllowed('attacker.example:8025', mapped), boundHost).toBe(false);
      // Loopback, and the bound address itself (docs/security.md).
      for (const host of ['127.0.0.1:8025', 'localhost', '[::1]', '[::ffff:127.0.0.1]:8025', '[::ffff:7f00:1]']) expect(hostAllowed(host, mapped), `${boundHost} ${host}`).toBe(true);
    }
  });

  it('on loopback, refuses everything else', () => {
    for (const host of ['attacker.example', '10.0.0.1', '[2001:db8::1]', '0.0.0.0', '[::]', 'localhostx', 'xlocalhost', 'localhost.x', '128.0.0.1', '126.255.255.255']) {
      expect(hostAllowed(host, loopback), host).toBe(false);
    }
  });

  it('on a non-loopback bind with no allowed_hosts, allows any well-formed Host', () => {
    for (const policy of [any, anyV6]) {
      for (const host of ['attacker.example', 'mail.lan:8025', '10.0.0.1', '[2001:db8::1]:8025', 'under_score.example']) {
        expect(hostAllowed(host, policy), host).toBe(true);
      }
    }
  });

  it('on a non-loopback bind with allowed_hosts, allows only those, loopback and the bound address', () => {
    for (const host of ['mail.example.org', 'MAIL.EXAMPLE.ORG.:443', 'corp.example', 'a.corp.example', '192.0.2.5', '192.0.2.5:8025', '[2001:db8::1]', '[2001:DB8:0:0:0:0:0:1]:8025', '[fd00::7]']) {
      expect(hostAllowed(host, listed), host).toBe(true);
    }
    for (const host of ['attacker.example', 'evilcorp.example', 'corp.example.evil', '192.0.2.6', '[2001:db8::2]', '0.0.0.0', 'example.org']) {
      expect(hostAllowed(host, listed), host).toBe(false);
    }
    expect(hostAllowed('[2001:db8::20]:8025', bound)).toBe(true);
    expect(hostAllowed('[2001:0db8:0::20]', bound)).toBe(true);
    expect(hostAllowed('[2001:db8::21]', bound)).toBe(false);
    expect(hostAllowed('mail.lan:8025', boundName)).toBe(true);
    expect(hostAllowed('MAIL.LAN.', boundName)).toBe(true);
    expect(hostAllowed('other.lan', boundName)).toBe(false);
  });

  it('refuses missing, empty and malformed Host values under every policy', () => {
    const junk = [
      undefined,
      '',
      ' ',
      'a b',
      ' localhost',
      'localhost ',
      'local\thost',
      'localhost\r\nx: y',
      'localhost:',
      'localhost:abc',
      'localhost:123456',
      'localhost:70000',
      'localhost:8025:8025',
      '::1',
      '::1:8025',
      '[::1',
      '::1]',
      '[::1]x',
      '[::1]:',
      '[::g]',
      '[127.0.0.1]',
      '[[::1]]',
      '.localhost',
      'localhost..',
      'a..b',
      '.',
      ':8025',
      'user@localhost',
      'localhost/',
      'localhost#',
      'localhost%00',
      'l\u00f6calhost',
      '*.example.org',
      'x'.repeat(5000),
      `${'a.'.repeat(200)}localhost`,
    ];
    for (const policy of [loopback, any, listed]) {
      for (const host of junk) expect(hostAllowed(host, policy), JSON.stringify(host)).toBe(false);
    }
  });

  it('accepts a long but valid name and the maximum port', () => {
    const name = `${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.example`;
    expect(hostAllowed(`${name}:65535`, any)).toBe(true);
    expect(hostAllowed(`${name}:65535`, loopback)).toBe(false);
    expect(hostAllowed('localhost:0', loopback)).toBe(true);
  });

  it('treats a leading-dot entry as the domain and the names under it, nothing else', () => {
    const suffix: HostPolicy = { boundHost: '127.0.0.1', allowedHosts: ['.Corp.Example.'] };
    expect(hostAllowed('corp.example', suffix)).toBe(true);
    expect(hostAllowed('a.b.corp.example:1', suffix)).toBe(true);
    expect(hostAllowed('evilcorp.example', suffix)).toBe(false);
    expect(hostAllowed('corp.example.evil', suffix)).toBe(false);
    expect(hostAllowed('example', suffix)).toBe(false);
  });

  it('does not widen on unusable allowed_hosts entries', () => {
    // A list of only entries that can never match still means "restricted", not "any Host".
    const broken: HostPolicy = { boundHost: '0.0.0.0', allowedHosts: ['bad entry'] };
    expect(hostAllowed('attacker.example', broken)).toBe(false);
    expect(hostAllowed('localhost', broken)).toBe(true);
  });

  it('isLoopbackBind knows loopback binds', () => {
    for (const host of ['127.0.0.1', '127.0.0.2', 'localhost', 'LOCALHOST', '::1', '[::1]', '0:0:0:0:0:0:0:1', 'x.localhost']) expect(isLoopbackBind(host), host).toBe(true);
    for (const host of ['0.0.0.0', '::', '192.0.2.1', 'mail.lan', '2001:db8::1', '']) expect(isLoopbackBind(host), host).toBe(false);
  });

  it('requestHostAllowed wants exactly one Host header', () => {
    const req = (rawHeaders: string[], url = '/api/v1/events') => {
      const headers: Record<string, string> = {};
      for (let i = 0; i < rawHeaders.length; i += 2) headers[rawHeaders[i]!.toLowerCase()] ??= rawHeaders[i + 1]!;
      return { headers, rawHeaders, url };
    };
    expect(requestHostAllowed(req(['Host', 'localhost']), loopback)).toBe(true);
    expect(requestHostAllowed(req(['Host', 'localhost:8025', 'Upgrade', 'websocket']), loopback)).toBe(true);
    expect(requestHostAllowed(req(['Host', 'attacker.example']), loopback)).toBe(false);
    expect(requestHostAllowed(req(['HOST', 'localhost', 'host', 'localhost']), loopback)).toBe(false);
    expect(requestHostAllowed(req([]), loopback)).toBe(false);
    expect(requestHostAllowed(req(['Host', 'localhost'], '*'), loopback)).toBe(true);
    expect(requestHostAllowed(req(['Host', 'localhost'], 'ws://127.0.0.1:8025/api/v1/events'), loopback)).toBe(true);
    expect(requestHostAllowed(req(['Host', 'localhost'], 'ws://attacker.example/api/v1/events'), loopback)).toBe(false);
    expect(requestHostAllowed(req(['Host', 'localhost'], 'attacker.example:443'), loopback)).toBe(false);
  });
});

describe('hostKnown, and the /submit CSRF check that relies on it', () => {
  const any: HostPolicy = { boundHost: '0.0.0.0', allowedHosts: [] };
  const listed: HostPolicy = { boundHost: '192.0.2.10', allowedHosts: ['mail.example.org', '.corp.example'] };
  const req = (host: string, origin: string) => ({ headers: { host, origin }, rawHeaders: ['Host', host, 'Origin', origin] });

  it('knows loopback, the bound address and allowed_hosts, never a Host served only because any Host is', () => {
    expect(hostKnown('attacker.example:8025', any)).toBe(false);
    expect(hostAllowed('attacker.example:8025', any)).toBe(true);
    expect(hostKnown('localhost:8025', any)).toBe(true);
    expect(hostKnown('127.0.0.1:8025', any)).toBe(true);
    for (const host of ['192.0.2.10:8025', 'mail.example.org', 'a.corp.example']) expect(hostKnown(host, listed), host).toBe(true);
    expect(hostKnown('attacker.example', listed)).toBe(false);
    expect(hostKnown('a b', any)).toBe(false);
  });

  it('a DNS-rebinding page is not "same origin" on a server that serves any Host; a known host is', () => {
    const none = new Set<string>();
    // attacker.example now resolves to this server: Host and Origin agree, the peer is in relayhosts.
    expect(crossSiteRequest(req('attacker.example:8025', 'http://attacker.example:8025'), none, any)).toBe(true);
    expect(crossSiteRequest(req('localhost:8025', 'http://localhost:8025'), none, any)).toBe(false);
    expect(crossSiteRequest(req('mail.example.org', 'https://mail.example.org'), none, listed)).toBe(false);
    // Listed in http.allowed_origins, the page is served whatever the Host.
    expect(crossSiteRequest(req('attacker.example:8025', 'http://attacker.example:8025'), new Set(['http://attacker.example:8025']), any)).toBe(false);
  });
});

describe('http.allowed_hosts in the config schema', () => {
  it('defaults to an empty list', () => {
    expect(httpSchema.parse({}).allowed_hosts).toEqual([]);
  });

  it.each(['mail.example.org', '.corp.example', 'MAIL.example.org.', '192.0.2.1', '[2001:db8::1]', '2001:db8::1'])('accepts %s', (entry) => {
    expect(httpSchema.safeParse({ allowed_hosts: [entry] }).success).toBe(true);
  });

  it.each(['mail.example.org:8025', '10.0.0.1:8025', 'abc.de:8025', '[::1]:8025', '*.example.org', 'a b', '', 'http://mail.example.org', '1::2::3'])(
    'refuses %j at start',
    (entry) => {
      expect(httpSchema.safeParse({ allowed_hosts: [entry] }).success).toBe(false);
    },
  );
});
