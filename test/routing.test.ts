/**
 * The Haineko tables: route lookup order, disabled routes, authinfo, relayhosts CIDR (v4, v6,
 * IPv4-mapped), recipients (case, IDNA), passwords, and reload from real files in a config dir.
 */
import { chmodSync, mkdtempSync, rmSync, writeFileSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { createLogger, silentLogger } from '../src/log/logger.js';
import { createRouting, routingFromTables, type RoutingTables, type TableRouting } from '../src/routing/index.js';
import { waitFor } from './helpers/app.js';

const opts = { hostname: 'mx.mailwire.test' };
const r = (tables: Partial<Record<keyof RoutingTables, unknown>>): TableRouting => routingFromTables(tables as Partial<RoutingTables>, opts);

const MAILERTABLE = {
  'example.org': { mailer: 'ESMTP', host: '192.0.2.1', port: 587, auth: 'kijitora-smtpd', starttls: 1, retry: 2, sleep: 1, timeout: 10 },
  'disabled.example': { mailer: 'ESMTP', host: '192.0.2.9', disabled: 1 },
  'xn--bcher-kva.example': { mailer: 'File', host: '/var/tmp' },
  default: { mailer: 'ESMTP', host: '192.0.2.222', port: 2525, auth: '', retry: 0, timeout: 10 },
};
const SENDERMT = {
  'sender.example': { mailer: 'Haineko', host: '192.0.2.50' },
  'off.example': { mailer: 'Screen', disabled: true },
};
const AUTHINFO = { 'kijitora-smtpd': { username: 'kijitora', password: 'nekochan' } };

describe('route lookup (mailertable, sendermt, default)', () => {
  const routing = r({ mailertable: MAILERTABLE, sendermt: SENDERMT, authinfo: AUTHINFO });

  it('routes by the recipient domain first, with every field and the authinfo credentials', () => {
    expect(routing.route('neko@example.org', 'a@sender.example')).toEqual({
      mailer: 'ESMTP',
      host: '192.0.2.1',
      port: 587,
      auth: 'kijitora-smtpd',
      credentials: { username: 'kijitora', password: 'nekochan' },
      starttls: true,
      retry: 2,
      sleepMs: 1000,
      timeoutMs: 10_000,
      options: {},
      source: 'mailertable:example.org',
    });
  });

  it('matches the recipient domain case-insensitively and in Unicode or xn-- form, exact domain only', () => {
    expect(routing.route('Neko@EXAMPLE.ORG', '').source).toBe('mailertable:example.org');
    expect(routing.route('a@bücher.example', '').source).toBe('mailertable:xn--bcher-kva.example');
    expect(routing.route('a@BÜCHER.example', '').host).toBe('/var/tmp');
    expect(routing.route('a@sub.example.org', '').source).toBe('mailertable:default');
  });

  it('falls to sendermt by the sender domain when the recipient domain is not in mailertable', () => {
    const route = routing.route('x@elsewhere.example', 'kijitora@Sender.Example');
    expect(route).toMatchObject({ mailer: 'Haineko', host: '192.0.2.50', port: 2794, source: 'sendermt:sender.example', auth: null, credentials: null });
  });

  it('falls to mailertable default when neither matches', () => {
    expect(routing.route('x@elsewhere.example', 'a@nowhere.example')).toMatchObject({
      mailer: 'ESMTP',
      host: '192.0.2.222',
      port: 2525,
      auth: null,
      credentials: null,
      retry: 0,
      timeoutMs: 10_000,
      sleepMs: 5000,
      starttls: false,
      source: 'mailertable:default',
    });
  });

  it('skips a disabled mailertable entry: sendermt, then default decide', () => {
    expect(routing.route('a@disabled.example', 'b@sender.example').source).toBe('sendermt:sender.example');
    expect(routing.route('a@disabled.example', 'b@nowhere.example').source).toBe('mailertable:default');
  });

  it('skips a disabled sendermt entry', () => {
    expect(routing.route('a@elsewhere.example', 'b@off.example').source).toBe('mailertable:default');
  });

  it('skips sendermt for the null sender and an unparsable sender', () => {
    expect(routing.route('a@elsewhere.example', '').source).toBe('mailertable:default');
    expect(routing.route('a@elsewhere.example', 'not-an-address').source).toBe('mailertable:default');
  });

  it('never treats a recipient domain literally named "default" as a domain entry', () => {
    const t = r({ mailertable: { default: { mailer: 'Discard' } }, sendermt: { 'sender.example': { mailer: 'Screen' } } });
    expect(t.route('a@default', 'b@sender.example').source).toBe('sendermt:sender.example');
  });

  it('without any default the built-in route is Discard (never an unconfigured relay)', () => {
    expect(r({}).route('a@example.org', 'b@example.net')).toEqual({
      mailer: 'Discard',
      host: '',
      port: 0,
      auth: null,
      credentials: null,
      starttls: false,
      retry: 0,
      sleepMs: 5000,
      timeoutMs: 60_000,
      options: {},
      source: 'builtin:default',
    });
  });

  it('a disabled default falls to the built-in Discard route', () => {
    expect(r({ mailertable: { default: { host: '192.0.2.1', disabled: 1 } } }).route('a@x.example', '').source).toBe('builtin:default');
  });

  it("applies Haineko's defaults: ESMTP to 127.0.0.1:25, 59 s timeout, no STARTTLS, no retry", () => {
    expect(r({ mailertable: { 'x.example': {} } }).route('a@x.example', '')).toMatchObject({
      mailer: 'ESMTP',
      host: '127.0.0.1',
      port: 25,
      timeoutMs: 59_000,
      starttls: false,
      retry: 0,
    });
    expect(r({ mailertable: { 'x.example': { mailer: 'File' } } }).route('a@x.example', '')).toMatchObject({ host: '/tmp', port: 0 });
    expect(r({ mailertable: { 'x.example': null } }).route('a@x.example', '').source).toBe('builtin:default');
  });

  it('resolves credentials at lookup time; an unknown authinfo key gives no credentials', () => {
    const t = r({ mailertable: { 'x.example': { auth: 'missing' }, 'y.example': { auth: 0 } }, authinfo: AUTHINFO });
    expect(t.route('a@x.example', '')).toMatchObject({ auth: 'missing', credentials: null });
    expect(t.route('a@y.example', '')).toMatchObject({ auth: null, credentials: null });
    expect(r({ mailertable: { 'x.example': { auth: 'constructor' } } }).route('a@x.example', '').credentials).toBeNull();
  });

  it('takes Haineko flags as 0/1, YAML booleans or quoted numbers, and mailer names in any case', () => {
    const t = r({ mailertable: { 'x.example': { mailer: 'esmtp', port: '587', starttls: '1', disabled: false, retry: '1', sleep: 0.5, debug: 1 } } });
    expect(t.route('a@x.example', '')).toMatchObject({ mailer: 'ESMTP', port: 587, starttls: true, retry: 1, sleepMs: 500 });
  });

  it('passes mailer options through, flags as booleans', () => {
    const t = r({
      mailertable: {
        'x.example': { mailer: 'MX', options: { resolver: ['192.0.2.53', '192.0.2.54:5353', '[2001:db8::53]:53'], tls_verify: 0 } },
        'y.example': { options: { tls_verify: '1' } },
        'z.example': { mailer: 'Haineko', options: { url: 'https://haineko.example/submit' } },
        'f.example': { mailer: 'File', options: { directory: '/var/spool/x' } },
      },
    });
    expect(t.route('a@x.example', '')).toMatchObject({ mailer: 'MX', port: 25, options: { resolver: ['192.0.2.53', '192.0.2.54:5353', '[2001:db8::53]:53'], tls_verify: false } });
    expect(t.route('a@y.example', '').options).toEqual({ tls_verify: true });
    expect(t.route('a@z.example', '').options).toEqual({ url: 'https://haineko.example/submit' });
    expect(t.route('a@f.example', '').options).toEqual({ directory: '/var/spool/x' });
  });

  it('refuses an option its mailer does not read, and bad option values, with the key named', () => {
    expect(() => r({ mailertable: { 'x.example': { mailer: 'File', options: { dir: '/tmp/x' } } } })).toThrow('x.example.options.dir: unknown option for the File mailer (directory)');
    expect(() => r({ mailertable: { 'x.example': { options: { resolver: '192.0.2.53' } } } })).toThrow('x.example.options.resolver: unknown option for the ESMTP mailer (tls_verify)');
    expect(() => r({ mailertable: { 'x.example': { mailer: 'Discard', options: { x: 1 } } } })).toThrow('x.example.options.x: unknown option for the Discard mailer (it takes none)');
    expect(() => r({ mailertable: { 'x.example': { options: { tls_verify: 'no' } } } })).toThrow('x.example.options.tls_verify: must be 0/1 or true/false');
    expect(() => r({ mailertable: { 'x.example': { mailer: 'MX', options: { resolver: 'dns.example' } } } })).toThrow('x.example.options.resolver: must be DNS server addresses (ip or ip:port), not names: "dns.example"');
    expect(() => r({ mailertable: { 'x.example': { mailer: 'Haineko', options: { url: 'http://relayuser:S3cret@127.0.0.1:2794/submit' } } } })).toThrow(
      'x.example.options.url: must not hold a user or password: put them in authinfo and name the key in auth',
    );
    expect(() => r({ mailertable: { 'x.example': { mailer: 'Haineko', options: { url: 'file:///etc/passwd' } } } })).toThrow('x.example.options.url: must be an http:// or https:// URL');
  });

  it('refuses bad entries with the key named', () => {
    expect(() => r({ mailertable: { 'x.example': { mailer: 'SendGrid' } } })).toThrow(/x\.example\.mailer: unsupported mailer "SendGrid"/);
    expect(() => r({ mailertable: { 'x.example': { port: 70000 } } })).toThrow(/x\.example\.port/);
    expect(() => r({ mailertable: { 'x.example': { retry: 50 } } })).toThrow(/x\.example\.retry/);
    expect(() => r({ mailertable: { 'x.example': { timeout: 3600 } } })).toThrow(/x\.example\.timeout: at most 600 s/);
    expect(() => r({ mailertable: { 'not a domain!': {} } })).toThrow(/not a domain!: not a domain name/);
    expect(() => r({ sendermt: { 'x.example': { starttls: 'yes' } } })).toThrow(/x\.example\.starttls/);
    expect(() => r({ authinfo: { k: { username: 'u' } } })).toThrow(/k\.password/);
  });
});

describe('relayhosts', () => {
  it('without a file (or with an empty list) only loopback may relay', () => {
    for (const t of [r({}), r({ relayhosts: { 'open-relay': 0, relayhosts: [] } })]) {
      expect(t.relayAllowed('127.0.0.1')).toBe(true);
      expect(t.relayAllowed('127.1.2.3')).toBe(true);
      expect(t.relayAllowed('::1')).toBe(true);
      expect(t.relayAllowed('::ffff:127.0.0.1')).toBe(true);
      expect(t.relayAllowed('192.0.2.1')).toBe(false);
      expect(t.relayAllowed('2001:db8::1')).toBe(false);
    }
  });

  it('matches single addresses and CIDR ranges, IPv4 and IPv6, and IPv4-mapped IPv6 clients', () => {
    const t = r({ relayhosts: { 'open-relay': 0, relayhosts: ['127.0.0.1', '192.0.2.0/24', '198.51.100.7', '2001:db8:1::/48', '::ffff:203.0.113.0/120'] } });
    expect(t.relayAllowed('192.0.2.200')).toBe(true);
    expect(t.relayAllowed('192.0.3.1')).toBe(false);
    expect(t.relayAllowed('198.51.100.7')).toBe(true);
    expect(t.relayAllowed('198.51.100.8')).toBe(false);
    expect(t.relayAllowed('::ffff:192.0.2.5')).toBe(true);
    expect(t.relayAllowed('::FFFF:198.51.100.7')).toBe(true);
    expect(t.relayAllowed('2001:db8:1:ffff::1')).toBe(true);
    expect(t.relayAllowed('2001:db8:2::1')).toBe(false);
    expect(t.relayAllowed('::ffff:203.0.113.9')).toBe(true);
    expect(t.relayAllowed('fe80::1%eth0')).toBe(false);
    // A listed list replaces the loopback default entirely (Haineko adds 127.0.0.1 only to an empty list).
    expect(t.relayAllowed('::1')).toBe(false);
    expect(t.relayAllowed('127.0.0.1')).toBe(true);
  });

  it('never matches garbage or an empty address', () => {
    const t = r({ relayhosts: { relayhosts: ['0.0.0.0/0'] } });
    expect(t.relayAllowed('192.0.2.1')).toBe(true);
    expect(t.relayAllowed('')).toBe(false);
    expect(t.relayAllowed('not-an-ip')).toBe(false);
    expect(t.relayAllowed('2001:db8::1')).toBe(false);
  });

  it('open-relay: 1 allows every client', () => {
    expect(r({ relayhosts: { 'open-relay': 1, relayhosts: ['127.0.0.1'] } }).relayAllowed('203.0.113.1')).toBe(true);
  });

  it('refuses a bad entry with the entry named', () => {
    expect(() => r({ relayhosts: { relayhosts: ['192.0.2.0/24', '192.0.2.300'] } })).toThrow('relayhosts: relayhosts.1: "192.0.2.300" is not an IPv4/IPv6 address or CIDR range');
    expect(() => r({ relayhosts: { relayhosts: ['10.0.0.0/33'] } })).toThrow(/relayhosts\.0/);
    expect(() => r({ relayhosts: { relayhosts: ['10'] } })).toThrow(/"10" is not/);
    expect(() => r({ relayhosts: { relayhost: [] } })).toThrow(/relayhost/);
  });
});

describe('recipients', () => {
  it('allows listed domains and exact addresses, case-insensitively and IDNA-normalised', () => {
    const t = r({ recipients: { 'open-relay': 0, domainpart: ['example.org', 'bücher.example'], recipients: ['sabatora@example.jp', 'Mi-Chan@Example.NET'] } });
    expect(t.recipientAllowed('anyone@example.org')).toBe(true);
    expect(t.recipientAllowed('anyone@EXAMPLE.ORG')).toBe(true);
    expect(t.recipientAllowed('x@xn--bcher-kva.example')).toBe(true);
    expect(t.recipientAllowed('x@BÜCHER.example')).toBe(true);
    expect(t.recipientAllowed('SabaTora@Example.JP')).toBe(true);
    expect(t.recipientAllowed('mi-chan@example.net')).toBe(true);
    expect(t.recipientAllowed('other@example.jp')).toBe(false);
    expect(t.recipientAllowed('anyone@sub.example.org')).toBe(false);
    expect(t.recipientAllowed('not-an-address')).toBe(false);
  });

  it('without a file only this server\'s own host name is allowed (Haineko)', () => {
    const t = r({});
    expect(t.recipientAllowed('root@mx.mailwire.test')).toBe(true);
    expect(t.recipientAllowed('root@example.org')).toBe(false);
  });

  it('an empty list allows nothing; open-relay: 1 allows everything', () => {
    expect(r({ recipients: { 'open-relay': 0 } }).recipientAllowed('root@mx.mailwire.test')).toBe(false);
    expect(r({ recipients: { 'open-relay': 1 } }).recipientAllowed('anyone@anywhere.example')).toBe(true);
  });

  it('refuses a bad entry with the entry named', () => {
    expect(() => r({ recipients: { domainpart: ['ok.example', 'bad domain'] } })).toThrow('recipients: domainpart.1: "bad domain" is not a domain name');
    expect(() => r({ recipients: { recipients: ['nobody'] } })).toThrow('recipients: recipients.0: "nobody" is not an email address');
  });
});

describe('password', () => {
  it('verifies users, and refuses a wrong password and an unknown user', () => {
    const t = r({ password: { haineko: '{SSHA}9p2euyteR33mp0TYKjmYhTlIt1ctxuRn' } });
    expect(t.count()).toBe(1);
    expect(t.verifyPassword('haineko', 'kijitora')).toBe(true);
    expect(t.verifyPassword('haineko', 'wrong')).toBe(false);
    expect(t.verifyPassword('Haineko', 'kijitora')).toBe(false);
    expect(t.verifyPassword('nobody', 'kijitora')).toBe(false);
    expect(t.verifyPassword('__proto__', 'kijitora')).toBe(false);
  });

  it('refuses plain text and other schemes with the user named', () => {
    expect(() => r({ password: { ok: '{SSHA}9p2euyteR33mp0TYKjmYhTlIt1ctxuRn', neko: 'kijitora' } })).toThrow(/password: neko: user "neko": not a \{SSHA\}/);
    expect(() => r({ password: { neko: '{PLAIN}kijitora' } })).toThrow(/user "neko": unsupported scheme \{PLAIN\}/);
    expect(() => r({ password: { neko: 12345 } })).toThrow(/user "neko": the value must be a quoted \{SSHA\} hash/);
    expect(() => r({ password: { 'a:b': '{SSHA}9p2euyteR33mp0TYKjmYhTlIt1ctxuRn' } })).toThrow(/cannot contain ':'/);
  });
});

describe('tables in a config directory', () => {
  const dirs: string[] = [];
  afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

  function dir(files: Record<string, string>): string {
    const d = mkdtempSync(join(tmpdir(), 'mailwire-routing-'));
    dirs.push(d);
    for (const [name, content] of Object.entries(files)) writeFileSync(join(d, name), content);
    return d;
  }

  function capture(): { logger: ReturnType<typeof createLogger>; lines: () => Array<Record<string, unknown>> } {
    const chunks: string[] = [];
    const stream = new Writable({ write: (c, _e, cb) => (chunks.push(String(c)), cb()) });
    return { logger: createLogger('debug', stream), lines: () => chunks.join('').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l)) };
  }

  it("reads Haineko's own example files unchanged", () => {
    const d = dir({
      mailertable: "default:\n    mailer: 'ESMTP'\n    host: '192.0.2.222'\n    port: 25\n    auth: ''\n    retry: 0\n    timeout: 10\n\n",
      relayhosts: "open-relay: 0\nrelayhosts:\n  - '127.0.0.1'\n  - '192.0.2.0/24'\n",
      recipients: "open-relay: 0\ndomainpart:\n  - 'example.org'\n\nrecipients:\n  - 'sabatora@example.jp'\n  - 'mi-chan@example.org'\n",
      authinfo: "# Example:\n#   kijitora-smtpd:\n#     username: 'kijitora'\n",
      sendermt: '# only comments\n',
      password: "# The following username is ``haineko'', password is ``kijitora''\nhaineko: '{SSHA}9p2euyteR33mp0TYKjmYhTlIt1ctxuRn'\n",
    });
    const t = createRouting(d, silentLogger(), { ...opts, watch: false });
    expect(t.route('a@b.example', '')).toMatchObject({ host: '192.0.2.222', port: 25, timeoutMs: 10_000, source: 'mailertable:default' });
    expect(t.relayAllowed('192.0.2.7')).toBe(true);
    expect(t.relayAllowed('10.0.0.1')).toBe(false);
    expect(t.recipientAllowed('x@example.org')).toBe(true);
    expect(t.recipientAllowed('sabatora@example.jp')).toBe(true);
    expect(t.verifyPassword('haineko', 'kijitora')).toBe(true);
    t.close();
  });

  it('warns about a password or authinfo file other users can read, unless it holds nothing but comments (as shipped)', () => {
    const shipped = capture();
    const d1 = dir({ password: '# user: {SSHA}...\n', authinfo: '# key:\n#   username: u\n' });
    for (const f of ['password', 'authinfo']) chmodSync(join(d1, f), 0o644);
    createRouting(d1, shipped.logger, { ...opts, watch: false }).close();
    expect(shipped.lines().filter((l) => String(l.msg).includes('readable by other users'))).toEqual([]);

    const filled = capture();
    const d2 = dir({ password: "haineko: '{SSHA}9p2euyteR33mp0TYKjmYhTlIt1ctxuRn'\n" });
    chmodSync(join(d2, 'password'), 0o644);
    createRouting(d2, filled.logger, { ...opts, watch: false }).close();
    expect(filled.lines().filter((l) => String(l.msg).includes('readable by other users')).map((l) => l.msg)).toEqual([
      `password is readable by other users; run: chmod 600 ${join(d2, 'password')}`,
    ]);
  });

  it('a file with every key commented out means the same as no file', () => {
    const t = createRouting(dir({ recipients: '# open-relay: 0\n', relayhosts: '# nothing\n' }), silentLogger(), { ...opts, watch: false });
    expect(t.recipientAllowed('root@mx.mailwire.test')).toBe(true);
    expect(t.relayAllowed('127.0.0.1')).toBe(true);
    expect(t.relayAllowed('192.0.2.1')).toBe(false);
    t.close();
  });

  it('a broken table at start throws, naming the file and the key; a misspelt key is named', () => {
    const d1 = dir({ relayhosts: 'relayhosts:\n  - 192.0.2.0/40\n' });
    expect(() => createRouting(d1, silentLogger(), opts)).toThrow(`${join(d1, 'relayhosts')}: relayhosts.0: "192.0.2.0/40" is not`);
    const d2 = dir({ mailertable: 'default:\n  hots: 192.0.2.1\n' });
    expect(() => createRouting(d2, silentLogger(), opts)).toThrow(`${join(d2, 'mailertable')}: unknown key default.hots`);
    const d3 = dir({ recipients: 'open_relay: 1\n' });
    expect(() => createRouting(d3, silentLogger(), opts)).toThrow(`${join(d3, 'recipients')}: unknown key open_relay`);
  });

  it('warns when authinfo or password is readable by others, and about a route naming a missing authinfo key, without secrets', () => {
    const d = dir({
      authinfo: "relay:\n  username: 'u1'\n  password: 'topsecret'\n",
      password: "neko: '{SSHA}9p2euyteR33mp0TYKjmYhTlIt1ctxuRn'\n",
      mailertable: "example.org:\n  auth: 'nosuch'\n",
    });
    chmodSync(join(d, 'authinfo'), 0o644);
    chmodSync(join(d, 'password'), 0o600);
    const { logger, lines } = capture();
    createRouting(d, logger, { ...opts, watch: false }).close();
    const warns = lines().filter((l) => l.level === 40);
    expect(warns.map((l) => [l.table, l.mode])).toEqual([
      ['authinfo', '0644'],
      ['mailertable', undefined],
    ]);
    expect(String(warns[0]!.msg)).toContain(`chmod 600 ${join(d, 'authinfo')}`);
    expect(String(warns[1]!.msg)).toContain('names authinfo key "nosuch"');
    expect(JSON.stringify(lines())).not.toContain('topsecret');
  });

  it('reloads a changed table, keeps the last good one on a broken edit, and falls back when the file is removed', async () => {
    const d = dir({ relayhosts: 'relayhosts: [192.0.2.0/24]\n', mailertable: 'default: { mailer: Discard }\n' });
    const { logger, lines } = capture();
    const t = createRouting(d, logger, opts);
    try {
      expect(t.relayAllowed('192.0.2.1')).toBe(true);
      writeFileSync(join(d, 'relayhosts'), 'relayhosts: [198.51.100.0/24]\n');
      await waitFor(async () => t.relayAllowed('198.51.100.1'));
      expect(t.relayAllowed('192.0.2.1')).toBe(false);

      writeFileSync(join(d, 'relayhosts'), 'relayhosts: [198.51.100.0/24, 192.0.2.999]\n');
      await waitFor(async () => lines().some((l) => l.msg === 'table has errors; keeping the last good version'));
      const err = lines().find((l) => l.level === 50)!;
      expect(err).toMatchObject({ table: 'relayhosts', reason: `${join(d, 'relayhosts')}: relayhosts.1: "192.0.2.999" is not an IPv4/IPv6 address or CIDR range` });
      expect(t.relayAllowed('198.51.100.1')).toBe(true);

      writeFileSync(join(d, 'mailertable'), 'default: { mailer: Screen }\nexample.org: { host: 192.0.2.5, port: 2526 }\n');
      await waitFor(async () => t.route('a@example.org', '').port === 2526);
      expect(t.route('a@x.example', '').mailer).toBe('Screen');

      writeFileSync(join(d, 'password'), "neko: '{SSHA}9p2euyteR33mp0TYKjmYhTlIt1ctxuRn'\n");
      await waitFor(async () => t.count() === 1);
      expect(t.verifyPassword('neko', 'kijitora')).toBe(true);

      unlinkSync(join(d, 'relayhosts'));
      await waitFor(async () => !t.relayAllowed('198.51.100.1'));
      expect(t.relayAllowed('127.0.0.1')).toBe(true);
    } finally {
      t.close();
    }
  });
});
