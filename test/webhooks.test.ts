/**
 * Webhooks end to end: the real app, mail sent over SMTP with nodemailer, and a real HTTP
 * receiver on loopback (node:http) that answers what each test needs: 200, 503, 410, nothing
 * at all (not listening), or holding the request open.
 */
import Database from 'better-sqlite3';
import { createHash, createHmac } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { afterEach, describe, expect, it } from 'vitest';
import { EventBus } from '../src/bus/bus.js';
import { ConfigError, validateConfig } from '../src/config/load.js';
import { silentLogger } from '../src/log/logger.js';
import { createMetrics } from '../src/metrics/metrics.js';
import { openSqliteStore, type SqliteMessageStore } from '../src/store/sqlite-store.js';
import { deliveryId, openWebhookDeliveryStore } from '../src/store/webhook-deliveries.js';
import type { MailEvent, MailRejectedEvent } from '../src/events/types.js';
import { retryDelayMs, WebhookDispatcher } from '../src/webhooks/dispatcher.js';
import { verifySignature } from '../src/webhooks/signature.js';
import type { AttemptJson, DeliveryJson, WebhookInfo } from '../src/webhooks/types.js';
import { displayUrl } from '../src/webhooks/view.js';
import { queuedId, startTestApp, storedEvent, waitFor, type TestApp } from './helpers/app.js';
import { makeEvent } from './helpers/events.js';
import { freePort } from './helpers/ports.js';

const SECRET = 'test-secret-0123456789abcdef';

interface Received {
  headers: IncomingHttpHeaders;
  body: string;
  path: string;
}

type Answer = number | 'hold';

/** A webhook receiver: records every request and answers with `answer(request)`. */
class Receiver {
  readonly requests: Received[] = [];
  readonly held: ServerResponse[] = [];
  answer: (r: Received) => Answer = () => 200;
  #server: Server | null = null;
  port = 0;

  async listen(port = 0): Promise<this> {
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const r: Received = { headers: req.headers, body: Buffer.concat(chunks).toString('utf8'), path: req.url ?? '' };
        this.requests.push(r);
        const a = this.answer(r);
        if (a === 'hold') this.held.push(res);
        else res.writeHead(a, { 'content-type': 'text/plain' }).end(a === 200 ? 'ok' : `status ${a}`);
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => resolve());
    });
    this.#server = server;
    this.port = (server.address() as AddressInfo).port;
    return this;
  }

  url(path = '/hook'): string {
    return `http://127.0.0.1:${this.port}${path}`;
  }

  async close(): Promise<void> {
    for (const res of this.held.splice(0)) res.destroy();
    const server = this.#server;
    this.#server = null;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

function hook(url: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  // Fast retries so tests wait milliseconds, not minutes.
  return { name: 'hook', url, secret: SECRET, backoff_base_ms: 50, backoff_max_ms: 200, timeout_ms: 2000, ...extra };
}

async function sendMail(t: TestApp, to: string[] = ['user@example.test'], subject = 'Webhook test'): Promise<string> {
  const transport = nodemailer.createTransport({ host: '127.0.0.1', port: t.smtpPort, secure: false, tls: { rejectUnauthorized: false } });
  try {
    const info = await transport.sendMail({ from: 'sender@client.test', to, subject, text: 'Hello webhook' });
    return queuedId(info.response);
  } finally {
    transport.close();
  }
}

async function getJson<T>(t: TestApp, path: string, status = 200): Promise<T> {
  const res = await fetch(`${t.httpUrl}${path}`);
  expect(res.status).toBe(status);
  return (await res.json()) as T;
}

async function deliveriesOf(t: TestApp, messageId: string): Promise<DeliveryJson[]> {
  return (await getJson<{ items: DeliveryJson[] }>(t, `/api/v1/webhooks/deliveries?message=${messageId}`)).items;
}

/** The one delivery of a message to a webhook, once `until` holds for it. */
async function waitDelivery(t: TestApp, messageId: string, until: (d: DeliveryJson) => boolean, webhook = 'hook'): Promise<DeliveryJson> {
  return waitFor(async () => (await deliveriesOf(t, messageId)).find((d) => d.webhook === webhook && until(d)));
}

async function attemptsOf(t: TestApp, deliveryId: string): Promise<DeliveryJson & { attempts: AttemptJson[] }> {
  return getJson(t, `/api/v1/webhooks/deliveries/${deliveryId}`);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('webhooks', () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  async function receiver(port = 0): Promise<Receiver> {
    const r = await new Receiver().listen(port);
    cleanups.push(() => r.close());
    return r;
  }

  async function app(webhooks: Record<string, unknown>[], dir?: string): Promise<TestApp> {
    const t = await startTestApp({ spamd: false, config: { webhooks }, ...(dir ? { dir } : {}) });
    let stopped = false;
    cleanups.push(async () => {
      if (!stopped) await t.stop();
      stopped = true;
    });
    return t;
  }

  it('POSTs the stored event, signed with the secret, with exact headers', async () => {
    const r = await receiver();
    const t = await app([hook(r.url())]);
    const id = await sendMail(t);
    const delivery = await waitDelivery(t, id, (d) => d.status === 'delivered');
    expect(r.requests).toHaveLength(1);
    const req = r.requests[0]!;
    const stored = await storedEvent(t, id);

    expect(req.path).toBe('/hook');
    expect(req.headers['content-type']).toBe('application/json');
    expect(req.headers['user-agent']).toBe('mailwire/0.1.0');
    expect(req.headers['x-mailwire-event']).toBe('mail.received');
    expect(req.headers['x-mailwire-delivery']).toBe(delivery.id);
    expect(req.headers['x-mailwire-attempt']).toBe('1');
    expect(req.headers['content-length']).toBe(String(Buffer.byteLength(req.body)));
    const ts = req.headers['x-mailwire-timestamp'] as string;
    expect(ts).toMatch(/^[0-9]{10}$/);
    expect(Math.abs(Number(ts) - Date.now() / 1000)).toBeLessThan(300);

    // The receiver's check, computed here independently of mailwire's code.
    const mac = createHmac('sha256', SECRET).update(`${ts}.${req.body}`).digest('hex');
    expect(req.headers['x-mailwire-signature']).toBe(`v1=${mac}`);
    expect(verifySignature(SECRET, ts, req.body, req.headers['x-mailwire-signature'] as string)).toBe(true);
    expect(verifySignature('another-secret-0123456789', ts, req.body, req.headers['x-mailwire-signature'] as string)).toBe(false);
    expect(verifySignature(SECRET, String(Number(ts) + 1), req.body, req.headers['x-mailwire-signature'] as string)).toBe(false);
    expect(verifySignature(SECRET, ts, req.body.replace('Hello webhook', 'Hello webhooK'), req.headers['x-mailwire-signature'] as string)).toBe(false);

    // The body is the feed's frame with the whole stored event.
    expect(JSON.parse(req.body)).toEqual({ type: 'mail.received', data: stored });
    expect(req.body).toBe(JSON.stringify({ type: 'mail.received', data: stored }));

    // Visible through the API, every attempt included.
    expect(delivery).toMatchObject({ webhook: 'hook', event: { type: 'mail.received', id }, status: 'delivered', attemptCount: 1, lastStatus: 200, lastError: null, nextAttemptAt: null });
    const detail = await attemptsOf(t, delivery.id);
    expect(detail.attempts).toHaveLength(1);
    expect(detail.attempts[0]).toMatchObject({ n: 1, status: 200, error: null, response: 'ok' });

    const metrics = await (await fetch(`${t.httpUrl}/metrics`)).text();
    expect(metrics).toContain('mailwire_webhook_deliveries_total{webhook="hook",outcome="delivered"} 1');
    expect(metrics).toContain('mailwire_webhook_attempts_total{webhook="hook",result="success"} 1');
  });

  it('sends only what the rcpt and domains filters match', async () => {
    const r = await receiver();
    const t = await app([
      hook(r.url('/by-rcpt'), { name: 'by-rcpt', rcpt: ['Alice@X.test'] }),
      hook(r.url('/by-domain'), { name: 'by-domain', domains: ['y.test'] }),
      hook(r.url('/all'), { name: 'all' }),
    ]);
    const toAlice = await sendMail(t, ['alice@x.test']);
    const toY = await sendMail(t, ['bob@y.test']);
    const toNone = await sendMail(t, ['carol@z.test']);
    const toBoth = await sendMail(t, ['carol@z.test', 'ALICE@x.test', 'dave@y.test']);
    // Deliveries are enqueued in log order: once the last message's exist, every earlier one was considered.
    await waitFor(async () => (await deliveriesOf(t, toBoth)).length === 3);
    const names = async (id: string): Promise<string[]> => (await deliveriesOf(t, id)).map((d) => d.webhook).sort();
    expect(await names(toAlice)).toEqual(['all', 'by-rcpt']);
    expect(await names(toY)).toEqual(['all', 'by-domain']);
    expect(await names(toNone)).toEqual(['all']);
    expect(await names(toBoth)).toEqual(['all', 'by-domain', 'by-rcpt']);
    await waitFor(async () => r.requests.length === 8);
    const paths = (id: string): string[] => r.requests.filter((q) => (JSON.parse(q.body) as { data: MailEvent }).data.id === id).map((q) => q.path).sort();
    expect(paths(toNone)).toEqual(['/all']);
    expect(paths(toAlice)).toEqual(['/all', '/by-rcpt']);
  });

  it('retries while the receiver is down and delivers once it is up', async () => {
    const port = await freePort(); // nothing listens here yet
    const t = await app([hook(`http://127.0.0.1:${port}/hook`)]);
    const id = await sendMail(t);
    const failing = await waitDelivery(t, id, (d) => d.attemptCount >= 2);
    expect(failing.status).toBe('pending');
    expect(failing.lastStatus).toBe(null);
    expect(failing.lastError).toBe(`ECONNREFUSED 127.0.0.1:${port}`);

    const r = await receiver(port);
    const done = await waitDelivery(t, id, (d) => d.status === 'delivered');
    expect(r.requests).toHaveLength(1);
    expect(r.requests[0]!.headers['x-mailwire-attempt']).toBe(String(done.attemptCount));
    const detail = await attemptsOf(t, done.id);
    expect(detail.attempts.map((a) => a.status)).toEqual([...Array<null>(done.attemptCount - 1).fill(null), 200]);
    expect(detail.attempts.slice(0, -1).every((a) => a.error === `ECONNREFUSED 127.0.0.1:${port}`)).toBe(true);
  });

  it('retries a 503 with the same delivery id and body, and a new signature each time', async () => {
    const r = await receiver();
    let n = 0;
    r.answer = () => (++n <= 2 ? 503 : 200);
    const t = await app([hook(r.url())]);
    const id = await sendMail(t);
    const done = await waitDelivery(t, id, (d) => d.status === 'delivered');
    expect(done.attemptCount).toBe(3);
    expect(r.requests.map((q) => q.headers['x-mailwire-attempt'])).toEqual(['1', '2', '3']);
    expect(new Set(r.requests.map((q) => q.headers['x-mailwire-delivery']))).toEqual(new Set([done.id]));
    expect(new Set(r.requests.map((q) => q.body)).size).toBe(1);
    for (const q of r.requests) {
      expect(verifySignature(SECRET, q.headers['x-mailwire-timestamp'] as string, q.body, q.headers['x-mailwire-signature'] as string)).toBe(true);
    }
    const detail = await attemptsOf(t, done.id);
    expect(detail.attempts.map((a) => [a.n, a.status, a.error, a.response])).toEqual([
      [1, 503, 'HTTP 503', 'status 503'],
      [2, 503, 'HTTP 503', 'status 503'],
      [3, 200, null, 'ok'],
    ]);
  });

  it('keeps pending deliveries across a restart and delivers them exactly once', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mailwire-webhooks-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const port = await freePort();
    const config = [hook(`http://127.0.0.1:${port}/hook`)];
    const first = await app(config, dir);
    const id = await sendMail(first);
    const before = await waitDelivery(first, id, (d) => d.attemptCount >= 1);
    await first.stop();

    const r = await receiver(port);
    const second = await app(config, dir);
    const done = await waitDelivery(second, id, (d) => d.status === 'delivered');
    expect(done.id).toBe(before.id);
    expect(r.requests).toHaveLength(1);
    expect(r.requests[0]!.headers['x-mailwire-delivery']).toBe(before.id);
    expect(done.attemptCount).toBeGreaterThan(before.attemptCount);
    expect((await deliveriesOf(second, id)).length).toBe(1);
  });

  /**
   * A data directory whose webhook cursor a first run has set at the end of the event log, with
   * a receiver; `commitBehind` then stores a message with no app running (nothing enqueues it).
   */
  async function afterFirstRun(): Promise<{ dir: string; r: Receiver; config: Record<string, unknown>[]; commitBehind(subject: string): Promise<MailEvent> }> {
    const dir = mkdtempSync(join(tmpdir(), 'mailwire-webhooks-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const r = await receiver();
    const config = [hook(r.url())];
    const first = await app(config, dir);
    await first.stop();
    return {
      dir,
      r,
      config,
      async commitBehind(subject) {
        const store = openSqliteStore(join(dir, 'data'));
        const raw = join(dir, 'raw.eml');
        writeFileSync(raw, `Subject: ${subject}\r\n\r\nbody\r\n`);
        const event = makeEvent({ envelope: { rcptTo: ['user@example.test'] } });
        expect(await store.commit(event, { path: raw })).toBe('inserted');
        await store.close();
        return event;
      },
    };
  }

  it('delivers an event committed while nothing enqueued it (a crash after commit)', async () => {
    const { dir, r, config, commitBehind } = await afterFirstRun();
    // The store commits a message, and the process "dies" before the bus reaches the webhooks.
    const event = await commitBehind('crash');

    const second = await app(config, dir);
    await waitDelivery(second, event.id, (d) => d.status === 'delivered');
    expect(r.requests).toHaveLength(1);
    expect(JSON.parse(r.requests[0]!.body)).toEqual({ type: 'mail.received', data: event });
  });

  it('an event enqueued again after the delivery store lost its last transactions (a power cut) keeps its delivery id', async () => {
    const { dir, r, config, commitBehind } = await afterFirstRun();
    // The delivery store as a power cut may leave it: from before the event was enqueued.
    const dbFile = join(dir, 'data', 'webhooks.sqlite');
    const before = readFileSync(dbFile);
    const event = await commitBehind('twice');
    const second = await app(config, dir);
    await waitDelivery(second, event.id, (d) => d.status === 'delivered');
    await second.stop();
    writeFileSync(dbFile, before);
    const third = await app(config, dir);
    await waitDelivery(third, event.id, (d) => d.status === 'delivered');
    expect(r.requests).toHaveLength(2);
    const [a, b] = r.requests.map((q) => q.headers['x-mailwire-delivery']);
    expect(a).toMatch(/^[0-7][0-9A-HJKMNP-TV-Z]{25}$/);
    expect(b).toBe(a);
  });

  it('stops retrying for good on 410 Gone', async () => {
    const r = await receiver();
    r.answer = (q) => ((JSON.parse(q.body) as { data: { subject: string } }).data.subject === 'gone' ? 410 : 200);
    const t = await app([hook(r.url())]);
    const id = await sendMail(t, undefined, 'gone');
    const gone = await waitDelivery(t, id, (d) => d.status === 'gone');
    expect(gone).toMatchObject({ attemptCount: 1, lastStatus: 410, lastError: 'HTTP 410', nextAttemptAt: null });
    // Well past the longest backoff (200 ms +20 %): nothing more was tried.
    await sleep(1000);
    expect(r.requests).toHaveLength(1);
    expect((await attemptsOf(t, gone.id)).attempts).toHaveLength(1);
    // Other deliveries to the same webhook still go.
    const next = await sendMail(t, undefined, 'fine');
    await waitDelivery(t, next, (d) => d.status === 'delivered');
    expect(r.requests).toHaveLength(2);
  });

  it('gives up after max_attempts', async () => {
    const r = await receiver();
    r.answer = () => 500;
    const t = await app([hook(r.url(), { max_attempts: 3 })]);
    const id = await sendMail(t);
    const failed = await waitDelivery(t, id, (d) => d.status === 'failed');
    expect(failed).toMatchObject({ attemptCount: 3, lastStatus: 500, lastError: 'HTTP 500' });
    expect(r.requests).toHaveLength(3);
  });

  it('never holds the SMTP reply for a receiver that hangs, and times the attempt out', async () => {
    const r = await receiver();
    r.answer = () => 'hold';
    const t = await app([hook(r.url(), { concurrency: 1, timeout_ms: 500 })]);
    const first = await sendMail(t);
    await waitFor(async () => r.held.length === 1);
    // The receiver holds the first request open; the next message is still answered 250.
    const second = await sendMail(t);
    expect(second).not.toBe(first);
    expect(r.held).toHaveLength(1);
    expect(r.requests).toHaveLength(1);
    // The held attempt ends at its deadline and is retried.
    const timedOut = await waitDelivery(t, first, (d) => d.attemptCount >= 1);
    expect(timedOut).toMatchObject({ status: 'pending', lastStatus: null, lastError: 'timeout after 500 ms' });
    r.answer = () => 200;
    await waitDelivery(t, first, (d) => d.status === 'delivered');
    await waitDelivery(t, second, (d) => d.status === 'delivered');
  });

  it('cancels pending deliveries of a deleted message and sends mail.deleted', async () => {
    const port = await freePort();
    const t = await app([hook(`http://127.0.0.1:${port}/hook`, { events: ['mail.received', 'mail.deleted'], domains: ['example.test'] })]);
    const id = await sendMail(t);
    await waitDelivery(t, id, (d) => d.attemptCount >= 1);
    expect((await fetch(`${t.httpUrl}/api/v1/messages/${id}`, { method: 'DELETE' })).status).toBe(204);
    const r = await receiver(port);
    const received = await waitDelivery(t, id, (d) => d.event.type === 'mail.received' && d.status !== 'pending');
    expect(received).toMatchObject({ status: 'cancelled', lastError: 'message deleted before delivery' });
    await waitDelivery(t, id, (d) => d.event.type === 'mail.deleted' && d.status === 'delivered');
    expect(r.requests).toHaveLength(1);
    const body = JSON.parse(r.requests[0]!.body) as { type: string; data: { type: string; id: string; version: number; at: string } };
    expect(r.requests[0]!.headers['x-mailwire-event']).toBe('mail.deleted');
    expect(body).toEqual({ type: 'mail.deleted', data: { type: 'mail.deleted', version: 1, id, at: body.data.at } });
  });

  it('drops the oldest pending delivery when the queue is full', async () => {
    const port = await freePort();
    const t = await app([hook(`http://127.0.0.1:${port}/hook`, { max_pending: 2, backoff_base_ms: 60_000, backoff_max_ms: 60_000 })]);
    const ids = [await sendMail(t), await sendMail(t), await sendMail(t)];
    await waitFor(async () => (await deliveriesOf(t, ids[2]!)).length === 1);
    const oldest = await waitDelivery(t, ids[0]!, (d) => d.status === 'failed');
    expect(oldest.lastError).toBe('queue full: dropped for a newer event (max_pending)');
    expect((await deliveriesOf(t, ids[1]!))[0]!.status).toBe('pending');
    expect((await deliveriesOf(t, ids[2]!))[0]!.status).toBe('pending');
  });

  it('lists webhooks without secrets, and filters deliveries', async () => {
    const r = await receiver();
    // A Slack/Discord/Teams-style url: the token is the path itself.
    const secretPath = '/services/T0001/B0002/XyZsecretPathToken123';
    const t = await app([hook(`${r.url()}?token=abc`, { name: 'crm', events: ['mail.received', 'mail.deleted'] }), hook(r.url(secretPath), { name: 'other', rcpt: ['nobody@example.test'] })]);
    const id = await sendMail(t);
    await waitDelivery(t, id, (d) => d.status === 'delivered', 'crm');
    const res = await fetch(`${t.httpUrl}/api/v1/webhooks`);
    const text = await res.text();
    expect(text).not.toContain(SECRET);
    expect(text).not.toContain('token=abc');
    expect(text).not.toContain('XyZsecretPathToken123');
    expect(text).not.toContain('/hook');
    const origin = `http://127.0.0.1:${r.port}`;
    const { items } = JSON.parse(text) as { items: WebhookInfo[] };
    expect(items).toEqual([
      {
        name: 'crm', url: `${origin}/…`, events: ['mail.received', 'mail.deleted'], rcpt: [], domains: [],
        timeoutMs: 2000, concurrency: 4, maxAttempts: 30, maxAgeS: 86400, maxPending: 10000,
        deliveries: { pending: 0, delivered: 1, failed: 0, gone: 0, cancelled: 0 },
      },
      {
        name: 'other', url: `${origin}/…`, events: ['mail.received'], rcpt: ['nobody@example.test'], domains: [],
        timeoutMs: 2000, concurrency: 4, maxAttempts: 30, maxAgeS: 86400, maxPending: 10000,
        deliveries: { pending: 0, delivered: 0, failed: 0, gone: 0, cancelled: 0 },
      },
    ]);
    expect((await getJson<{ items: DeliveryJson[] }>(t, '/api/v1/webhooks/deliveries?webhook=crm&status=delivered&event=mail.received')).items).toHaveLength(1);
    expect((await getJson<{ items: DeliveryJson[] }>(t, '/api/v1/webhooks/deliveries?webhook=other')).items).toHaveLength(0);
    expect((await getJson<{ items: DeliveryJson[] }>(t, '/api/v1/webhooks/deliveries?status=failed')).items).toHaveLength(0);
    const second = await sendMail(t);
    await waitDelivery(t, second, (d) => d.status === 'delivered', 'crm');
    const page1 = await getJson<{ items: DeliveryJson[]; next: string }>(t, '/api/v1/webhooks/deliveries?limit=1');
    expect(page1.items.map((d) => d.event.id)).toEqual([second]);
    const page2 = await getJson<{ items: DeliveryJson[]; next: string | null }>(t, `/api/v1/webhooks/deliveries?limit=1&before=${page1.next}`);
    expect(page2).toMatchObject({ items: [{ event: { id } }], next: null });

    for (const bad of ['limit=0', 'limit=501', 'limit=1e2', 'status=done', 'webhook=Bad%20Name', 'before=abc', 'event=x', 'message=nope']) {
      expect(await getJson(t, `/api/v1/webhooks/deliveries?${bad}`, 400)).toMatchObject({ error: 'bad_request' });
    }
    expect(await getJson(t, '/api/v1/webhooks/deliveries/01ARZ3NDEKTSV4RRFFQ69G5FAV', 404)).toEqual({ error: 'not_found', message: 'delivery not found' });
    expect(await getJson(t, '/api/v1/webhooks/deliveries/..%2f', 404)).toMatchObject({ error: 'not_found' });
  });

  it('sends mail.rejected events from the bus to webhooks that ask for them', async () => {
    const r = await receiver();
    const t = await app([hook(r.url(), { name: 'rejections', events: ['mail.rejected'], domains: ['example.test'] })]);
    const rejected = { type: 'mail.rejected', version: 1, id: '01ARZ3NDEKTSV4RRFFQ69G5FAV', at: '2026-11-22T10:00:00.000Z', phase: 'rcpt', code: 550, enhancedCode: '5.1.1', reason: 'no such user', envelope: { mailFrom: 'a@client.test', rcptTo: ['nobody@example.test'] } } as const;
    t.app.bus.publish({ ...rejected, envelope: { ...rejected.envelope, rcptTo: ['x@elsewhere.test'] } }); // filtered out
    t.app.bus.publish({ ...rejected, envelope: { ...rejected.envelope, rcptTo: [...rejected.envelope.rcptTo] } });
    await waitDelivery(t, rejected.id, (d) => d.status === 'delivered', 'rejections');
    expect(r.requests).toHaveLength(1);
    expect(r.requests[0]!.headers['x-mailwire-event']).toBe('mail.rejected');
    expect(JSON.parse(r.requests[0]!.body)).toEqual({ type: 'mail.rejected', data: rejected });
    // mail.received is not among its events.
    const id = await sendMail(t);
    await storedEvent(t, id);
    expect(await deliveriesOf(t, id)).toEqual([]);
  });

  it('cancels pending deliveries of a webhook removed from the config', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mailwire-webhooks-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const port = await freePort();
    const first = await app([hook(`http://127.0.0.1:${port}/old`, { name: 'old' })], dir);
    const id = await sendMail(first);
    const pending = await waitDelivery(first, id, (d) => d.attemptCount >= 1, 'old');
    await first.stop();
    const r = await receiver();
    const second = await app([hook(r.url(), { name: 'new' })], dir);
    const cancelled = await attemptsOf(second, pending.id);
    expect(cancelled).toMatchObject({ status: 'cancelled', lastError: 'webhook no longer configured', nextAttemptAt: null });
    // The new webhook starts at the end of the log: it is not sent what came before it.
    const next = await sendMail(second);
    await waitDelivery(second, next, (d) => d.status === 'delivered', 'new');
    expect(r.requests).toHaveLength(1);
    expect((await deliveriesOf(second, id)).map((d) => d.webhook)).toEqual(['old']);
  });

  it('cancels the pending deliveries of a deleted message at once, not when they next come due', async () => {
    const port = await freePort(); // down: the delivery stays pending
    const t = await app([hook(`http://127.0.0.1:${port}/hook`, { backoff_base_ms: 60_000, backoff_max_ms: 60_000 })]);
    const id = await sendMail(t);
    const pending = await waitDelivery(t, id, (d) => d.attemptCount === 1);
    expect(pending.status).toBe('pending');
    expect(Date.parse(pending.nextAttemptAt!) - Date.now()).toBeGreaterThan(30_000); // next try far away
    expect((await fetch(`${t.httpUrl}/api/v1/messages/${id}`, { method: 'DELETE' })).status).toBe(204);
    // Well before the next attempt (48 s at the earliest) and with no attempt made.
    const cancelled = await waitDelivery(t, id, (d) => d.status !== 'pending', 'hook');
    expect(cancelled).toMatchObject({ id: pending.id, status: 'cancelled', attemptCount: 1, lastError: 'message deleted before delivery', nextAttemptAt: null });
    expect((await attemptsOf(t, pending.id)).attempts).toHaveLength(1);
    const metrics = await (await fetch(`${t.httpUrl}/metrics`)).text();
    expect(metrics).toContain('mailwire_webhook_deliveries_total{webhook="hook",outcome="cancelled"} 1');
  });

  it('sends mail.deleted to a filtered webhook by the deleted message\'s recipients, even one not sent mail.received', async () => {
    const r = await receiver();
    const t = await app([
      hook(r.url('/deleted-only'), { name: 'deleted-only', events: ['mail.deleted'], domains: ['example.test'] }),
      hook(r.url('/by-rcpt'), { name: 'by-rcpt', events: ['mail.deleted'], rcpt: ['other@elsewhere.test'] }),
    ]);
    const mine = await sendMail(t, ['user@example.test']);
    const theirs = await sendMail(t, ['Other@Elsewhere.test']);
    await storedEvent(t, mine);
    await storedEvent(t, theirs);
    for (const id of [mine, theirs]) expect((await fetch(`${t.httpUrl}/api/v1/messages/${id}`, { method: 'DELETE' })).status).toBe(204);
    await waitDelivery(t, mine, (d) => d.status === 'delivered', 'deleted-only');
    await waitDelivery(t, theirs, (d) => d.status === 'delivered', 'by-rcpt');
    expect((await deliveriesOf(t, mine)).map((d) => d.webhook)).toEqual(['deleted-only']);
    expect((await deliveriesOf(t, theirs)).map((d) => d.webhook)).toEqual(['by-rcpt']);
    expect(r.requests.map((q) => q.path).sort()).toEqual(['/by-rcpt', '/deleted-only']);
    // The public event, without the recipients the log keeps for filtering.
    for (const q of r.requests) {
      const body = JSON.parse(q.body) as { data: { id: string; at: string } };
      expect(body).toEqual({ type: 'mail.deleted', data: { type: 'mail.deleted', version: 1, id: body.data.id, at: body.data.at } });
    }
  });

  it('keeps buffered mail.rejected events when enqueueing them fails, and sends them once it works again', async () => {
    const r = await receiver();
    const t = await app([hook(r.url(), { name: 'rejections', events: ['mail.rejected'] })]);
    const rejected = (id: string): MailRejectedEvent => ({
      type: 'mail.rejected', version: 1, id, at: '2026-11-22T10:00:00.000Z', phase: 'rcpt', code: 550, enhancedCode: '5.1.1', reason: 'no such user', envelope: { rcptTo: ['nobody@example.test'] },
    });
    // A real write failure of the delivery store, injected from a second connection.
    const side = new Database(join(t.config.storage.data_dir, 'webhooks.sqlite'));
    cleanups.push(() => {
      side.close();
    });
    side.exec("CREATE TRIGGER fault BEFORE INSERT ON deliveries BEGIN SELECT RAISE(ABORT, 'injected write failure'); END");
    const first = '01ARZ3NDEKTSV4RRFFQ69G5FA1';
    t.app.bus.publish(rejected(first));
    // The dispatcher's enqueue tick was scheduled (setImmediate) before this one: it has failed.
    await new Promise((resolve) => setImmediate(resolve));
    expect((await getJson<{ items: DeliveryJson[] }>(t, '/api/v1/webhooks/deliveries')).items).toEqual([]);
    side.exec('DROP TRIGGER fault');
    const second = '01ARZ3NDEKTSV4RRFFQ69G5FA2';
    t.app.bus.publish(rejected(second));
    await waitDelivery(t, first, (d) => d.status === 'delivered', 'rejections');
    await waitDelivery(t, second, (d) => d.status === 'delivered', 'rejections');
    expect(r.requests.map((q) => (JSON.parse(q.body) as { data: { id: string } }).data.id).sort()).toEqual([first, second]);
  });

  it('answers the API with no webhooks configured', async () => {
    const t = await app([]);
    expect(await getJson(t, '/api/v1/webhooks')).toEqual({ items: [] });
    expect(await getJson(t, '/api/v1/webhooks/deliveries')).toEqual({ items: [], next: null });
  });
});

describe('webhook catch-up from the event log', () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  function tempStore(): { dir: string; dataDir: string; store: SqliteMessageStore; raw: string } {
    const dir = mkdtempSync(join(tmpdir(), 'mailwire-webhooks-log-'));
    const dataDir = join(dir, 'data');
    mkdirSync(dataDir, { recursive: true });
    const store = openSqliteStore(dataDir);
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    cleanups.push(() => store.close());
    const raw = join(dir, 'raw.eml');
    writeFileSync(raw, 'Subject: log\r\n\r\nbody\r\n');
    return { dir, dataDir, store, raw };
  }

  it('reads entry heads: seq, type, id, time and recipients, a deletion with its message\'s recipients', async () => {
    const { store, raw } = tempStore();
    const a = makeEvent({ envelope: { rcptTo: ['A@x.test', 'b@y.test'] } });
    const b = makeEvent({ envelope: { rcptTo: ['c@z.test'] } });
    expect(await store.commit(a, { path: raw })).toBe('inserted');
    expect(await store.commit(b, { path: raw })).toBe('inserted');
    expect(await store.delete(a.id)).toBe(true);
    const heads = store.eventHeadsAfter(0, 10);
    // a's received entry is left out (its message is gone); its deletion follows, with a's recipients.
    expect(heads).toEqual([
      { seq: 2, type: 'mail.received', id: b.id, at: b.receivedAt, rcptTo: ['c@z.test'] },
      { seq: 3, type: 'mail.deleted', id: a.id, at: expect.any(String), rcptTo: ['A@x.test', 'b@y.test'] },
    ]);
    expect(store.eventHeadsAfter(2, 10).map((h) => h.seq)).toEqual([3]);
    expect(store.eventHeadsAfter(0, 1).map((h) => h.seq)).toEqual([2]);
    expect(store.eventHeadsAfter(3, 10)).toEqual([]);
    // The public event stays { type, version, id, at }: the recipients are the log's own.
    expect(store.eventsAfter({ seq: 2 }, 10)).toEqual([{ seq: 3, event: { type: 'mail.deleted', version: 1, id: a.id, at: heads[1]!.at } }]);
    expect(() => store.eventHeadsAfter(-1, 10)).toThrow(RangeError);
    expect(() => store.eventHeadsAfter(0, 0)).toThrow(RangeError);
  });

  it('catches up after downtime over several rounds without loading a whole event from the log', async () => {
    const { dataDir, store, raw } = tempStore();
    const r = await new Receiver().listen();
    cleanups.push(() => r.close());
    const webhooks = validateConfig({ webhooks: [hook(r.url(), { events: ['mail.received', 'mail.deleted'], domains: ['match.test'] })] }, '/tmp').webhooks;
    const dispatcher = (s: SqliteMessageStore): WebhookDispatcher =>
      new WebhookDispatcher({ webhooks, dataDir, store: s, bus: new EventBus(), logger: silentLogger(), metrics: createMetrics({ processMetrics: false }) });
    // A first run puts the webhook's cursor at the (empty) log's end.
    const first = dispatcher(store);
    first.start();
    await first.stop();

    // While it is down: 300 messages (more than one round of 256), half for the webhook; two deleted.
    const events = Array.from({ length: 300 }, (_, i) => makeEvent({ envelope: { rcptTo: [i % 2 === 0 ? `u${i}@match.test` : `u${i}@other.test`] } }));
    expect(new Set(await Promise.all(events.map((e) => store.commit(e, { path: raw }))))).toEqual(new Set(['inserted']));
    const deletedMatching = events[10]!;
    const deletedOther = events[11]!;
    expect(await store.delete(deletedMatching.id)).toBe(true);
    expect(await store.delete(deletedOther.id)).toBe(true);

    // The catch-up may read entry heads and single messages (to send them), never pages of whole events.
    const tripwire = new Proxy(store, {
      get(target, prop) {
        if (prop === 'eventsAfter') return () => { throw new Error('catch-up loaded whole events from the log'); };
        const value: unknown = Reflect.get(target, prop, target);
        return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
      },
    });
    const second = dispatcher(tripwire);
    second.start();
    cleanups.push(() => second.stop());
    const expected = events.filter((e, i) => i % 2 === 0 && e !== deletedMatching).map((e) => e.id);
    await waitFor(async () => r.requests.length === expected.length + 1);
    const sent = r.requests.map((q) => JSON.parse(q.body) as { type: string; data: { id: string } });
    expect(sent.filter((f) => f.type === 'mail.received').map((f) => f.data.id).sort()).toEqual([...expected].sort());
    expect(sent.filter((f) => f.type === 'mail.deleted').map((f) => f.data.id)).toEqual([deletedMatching.id]);
    const received = sent.find((f) => f.data.id === expected[0]);
    expect(received).toEqual({ type: 'mail.received', data: events[0] });
  });
});

describe('webhook url display', () => {
  it('shows the origin only, "/…" standing for a path or query that may hold a token', () => {
    expect(displayUrl('https://hooks.slack.com/services/T0/B0/secret')).toBe('https://hooks.slack.com/…');
    expect(displayUrl('https://discord.com/api/webhooks/123/token')).toBe('https://discord.com/…');
    expect(displayUrl('https://crm.example.org:8443/hook?token=abc')).toBe('https://crm.example.org:8443/…');
    expect(displayUrl('https://crm.example.org/?token=abc')).toBe('https://crm.example.org/…');
    expect(displayUrl('https://crm.example.org')).toBe('https://crm.example.org');
    expect(displayUrl('http://[::1]:3000/')).toBe('http://[::1]:3000');
  });
});

describe('webhook configuration', () => {
  const base = { url: 'https://hooks.example.org/mail', secret: SECRET };
  const check = (webhooks: unknown[]): string => {
    try {
      validateConfig({ webhooks }, '/tmp');
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      return (err as Error).message;
    }
    throw new Error('config was accepted');
  };

  it('rejects bad urls, missing or short secrets and duplicate names, naming the key', () => {
    expect(check([{ ...base, url: 'ftp://hooks.example.org/' }])).toBe('config: webhooks.0.url: must be an http:// or https:// URL');
    expect(check([{ ...base, url: 'hooks.example.org/mail' }])).toBe('config: webhooks.0.url: must be an absolute http:// or https:// URL');
    expect(check([{ ...base, url: 'https://user:pw@hooks.example.org/' }])).toMatch(/^config: webhooks\.0\.url: must not contain a user name or password/);
    expect(check([{ url: base.url }])).toMatch(/^config: webhooks\.0\.secret: /);
    expect(check([{ ...base, secret: 'short' }])).toBe('config: webhooks.0.secret: must be at least 16 characters (try: openssl rand -hex 32)');
    expect(check([base, base])).toBe('config: webhooks.1.name: webhook name hooks.example.org-' + defaultHash(base.url) + ' is used twice; give each webhook its own name');
    expect(check([{ ...base, events: ['mail.sent'] }])).toMatch(/^config: webhooks\.0\.events\.0: /);
    expect(check([{ ...base, rcpt: ['not-an-address'] }])).toBe('config: webhooks.0.rcpt.0: must be an address (local@domain)');
    expect(check([{ ...base, backoff_base_ms: 5000, backoff_max_ms: 1000 }])).toBe('config: webhooks.0.backoff_base_ms: backoff_base_ms must not exceed backoff_max_ms');
    expect(check([{ ...base, sekret: 'x' }])).toBe('config: unknown key webhooks.0.sekret');
  });

  it('fills in defaults and a stable name', () => {
    const [w] = validateConfig({ webhooks: [{ ...base, rcpt: ['Bob@Example.ORG'], domains: ['Example.NET'] }] }, '/tmp').webhooks;
    expect(w).toEqual({
      name: `hooks.example.org-${defaultHash(base.url)}`,
      url: base.url,
      secret: SECRET,
      events: ['mail.received'],
      rcpt: ['bob@example.org'],
      domains: ['example.net'],
      timeout_ms: 10_000,
      concurrency: 4,
      backoff_base_ms: 5000,
      backoff_max_ms: 3_600_000,
      max_attempts: 30,
      max_age_s: 86_400,
      max_pending: 10_000,
    });
    expect(validateConfig({}, '/tmp').webhooks).toEqual([]);
  });

  it('backs off exponentially with jitter, capped', () => {
    expect([1, 2, 3, 4].map((n) => retryDelayMs(n, 1000, 3_600_000, () => 0.5))).toEqual([1000, 2000, 4000, 8000]);
    expect(retryDelayMs(30, 1000, 3_600_000, () => 0.5)).toBe(3_600_000);
    expect(retryDelayMs(1, 1000, 3_600_000, () => 0)).toBe(800);
    expect(retryDelayMs(1, 1000, 3_600_000, () => 1)).toBe(1200);
    expect(retryDelayMs(100, 1000, 3_600_000, () => 1)).toBe(3_600_000);
  });
});

/** The default name's hash, computed independently of the config module. */
function defaultHash(url: string): string {
  return createHash('sha256').update(url).digest('hex').slice(0, 8);
}

describe('the webhook delivery store', () => {
  it('drops for the queue cap the oldest pending delivery that has no attempt in flight', () => {
    const dir = mkdtempSync(join(tmpdir(), 'mailwire-deliveries-'));
    const db = openWebhookDeliveryStore(dir, silentLogger());
    try {
      const item = (eventId: string) => ({ webhook: 'hook', eventType: 'mail.received', eventId, logSeq: null, payload: null });
      const batch = (eventId: string, inflight: number[]) => ({ items: [item(eventId)], cursors: new Map(), caps: new Map([['hook', 2]]), deleted: [], inflight: new Set(inflight) });
      const [a, b, c] = ['01KAAAAAAAAAAAAAAAAAAAAAAA', '01KBBBBBBBBBBBBBBBBBBBBBBB', '01KCCCCCCCCCCCCCCCCCCCCCCC'];
      db.enqueue(batch(a, []), 1000);
      db.enqueue(batch(b, []), 1001);
      const first = db.get(deliveryId('hook', 'mail.received', a))!.delivery;
      // a's attempt is running: b goes for c, though a is older.
      expect(db.enqueue(batch(c, [first.seq]), 1002).dropped).toEqual(new Map([['hook', 1]]));
      const status = (id: string) => db.get(deliveryId('hook', 'mail.received', id))!.delivery.status;
      expect([status(a), status(b), status(c)]).toEqual(['pending', 'failed', 'pending']);
    } finally {
      db.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
