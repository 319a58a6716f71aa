/**
 * The WebSocket feed /api/v1/events end to end: the real app on port 0, a real `ws` client,
 * mail sent over SMTP with nodemailer. Frames are compared with what the REST API serves.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import nodemailer, { type Transporter } from 'nodemailer';
import type SMTPTransport from 'nodemailer/lib/smtp-transport/index.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { EventBus } from '../src/bus/bus.js';
import type { MailEvent, MailRejectedEvent } from '../src/events/types.js';
import type { LoggedEvent } from '../src/store/types.js';
import { DEFAULT_HOST_POLICY } from '../src/http/host-check.js';
import { silentLogger } from '../src/log/logger.js';
import { createMetrics } from '../src/metrics/metrics.js';
import { openSqliteStore, type SqliteMessageStore } from '../src/store/sqlite-store.js';
import { StoreWriter } from '../src/store/writer.js';
import { createEventFeed, type EventFeed } from '../src/ws/feed.js';
import { queuedId, startTestApp, storedEvent, waitFor, type TestApp } from './helpers/app.js';
import { makeEvent } from './helpers/events.js';

interface Frame {
  type: string;
  seq: number | null;
  data: unknown;
}

/** Where the feed listens: the test app, or a bare HTTP server with the feed on it. */
interface Target {
  addresses: { http: { port: number } };
}

interface Closed {
  code: number;
  reason: string;
}

/** A feed client that records every frame and how the connection ended. */
class FeedClient {
  readonly frames: Frame[] = [];
  closed: Closed | null = null;
  readonly whenClosed: Promise<Closed>;

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data) => this.frames.push(JSON.parse(data.toString()) as Frame));
    this.whenClosed = new Promise((resolve) =>
      ws.on('close', (code, reason) => {
        this.closed = { code, reason: reason.toString() };
        resolve(this.closed);
      }),
    );
    ws.on('error', () => {});
  }

  /** Opens the feed; rejects with the HTTP status when the upgrade is refused. */
  static open(t: Target, query = '', headers: Record<string, string> = {}, path = '/api/v1/events', localAddress?: string): Promise<FeedClient> {
    // localAddress: another 127.x.y.z source address, to appear as another client.
    const ws = new WebSocket(`ws://127.0.0.1:${t.addresses.http.port}${path}${query}`, { headers, ...(localAddress ? { localAddress } : {}) });
    const client = new FeedClient(ws);
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve(client));
      ws.once('unexpected-response', (req, res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => {
          req.destroy();
          reject(new Refused(res.statusCode ?? 0, body));
        });
      });
      ws.once('error', reject);
    });
  }

  /** Opens the feed and waits for feed.ready (replay done, live from here). */
  static async ready(t: Target, query = '', headers: Record<string, string> = {}): Promise<FeedClient> {
    const c = await FeedClient.open(t, query, headers);
    await c.waitFor((f) => f.type === 'feed.ready');
    return c;
  }

  mail(): Frame[] {
    return this.frames.filter((f) => f.type.startsWith('mail.'));
  }

  receivedIds(): string[] {
    return this.frames.filter((f) => f.type === 'mail.received').map((f) => (f.data as MailEvent).id);
  }

  async waitFor(pred: (f: Frame) => boolean, timeoutMs = 10_000): Promise<Frame> {
    return waitFor(async () => this.frames.find(pred), timeoutMs);
  }

  /** The socket under the WebSocket: pausing it makes a client that never reads. */
  get socket(): Socket {
    return (this.ws as unknown as { _socket: Socket })._socket;
  }

  close(): Promise<Closed> {
    this.ws.close();
    return this.whenClosed;
  }
}

class Refused extends Error {
  constructor(
    readonly status: number,
    readonly body: string,
  ) {
    super(`upgrade refused: ${status} ${body}`);
  }
}

async function refusal(p: Promise<FeedClient>): Promise<{ status: number; body: unknown }> {
  try {
    const c = await p;
    await c.close();
  } catch (err) {
    if (err instanceof Refused) return { status: err.status, body: JSON.parse(err.body) };
    throw err;
  }
  throw new Error('the upgrade was accepted');
}

function transport(t: TestApp): Transporter<SMTPTransport.SentMessageInfo> {
  return nodemailer.createTransport({ host: '127.0.0.1', port: t.smtpPort, secure: false, ignoreTLS: true, pool: true, maxConnections: 1 });
}

/** Sends one message and returns its queued id (from the 250 reply). */
async function send(tr: Transporter<SMTPTransport.SentMessageInfo>, opts: { to?: string; subject?: string; text?: string; html?: string } = {}): Promise<string> {
  const info = await tr.sendMail({
    from: 'sender@example.org',
    to: opts.to ?? 'rcpt@example.test',
    subject: opts.subject ?? 'feed test',
    text: opts.text ?? 'hello\n',
    ...(opts.html ? { html: opts.html } : {}),
  });
  return queuedId(info.response);
}

async function metric(t: TestApp, name: string, headers: Record<string, string> = {}): Promise<number> {
  const text = await (await fetch(`${t.httpUrl}/metrics`, { headers })).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(' ')[1]) : 0;
}

describe('feed with the default configuration', () => {
  let t: TestApp;
  let tr: Transporter<SMTPTransport.SentMessageInfo>;
  beforeAll(async () => {
    t = await startTestApp({ spamd: false, config: { http: { allowed_origins: ['https://viewer.example.org'] } } });
    tr = transport(t);
  });
  afterAll(async () => {
    tr.close();
    await t.stop();
  });

  it('sends feed.ready, then a live frame equal to the stored event', async () => {
    const c = await FeedClient.open(t);
    const ready = await c.waitFor((f) => f.type === 'feed.ready');
    expect(ready).toEqual({ type: 'feed.ready', seq: null, data: { seq: expect.any(Number), replayed: 0 } });
    const id = await send(tr, { subject: 'live one' });
    const frame = await c.waitFor((f) => f.type === 'mail.received');
    expect(Object.keys(frame).sort()).toEqual(['data', 'seq', 'type']);
    expect(frame.seq).toBe((ready.data as { seq: number }).seq + 1);
    expect(frame.data).toEqual(await storedEvent(t, id));
    expect((frame.data as MailEvent).subject).toBe('live one');
    await c.close();
  });

  it('replays exactly the 10 messages missed while disconnected, in order, then goes live', async () => {
    const c1 = await FeedClient.ready(t);
    const firstId = await send(tr, { subject: 'before the gap' });
    const first = await c1.waitFor((f) => f.type === 'mail.received');
    expect((first.data as MailEvent).id).toBe(firstId);
    await c1.close();

    const missed: string[] = [];
    for (let i = 0; i < 10; i++) {
      const id = await send(tr, { subject: `missed ${i}` });
      await storedEvent(t, id); // stored before the next is sent: log order is send order
      missed.push(id);
    }

    for (const since of [String(first.seq), firstId]) {
      const c2 = await FeedClient.open(t, `?since=${since}`);
      const ready = await c2.waitFor((f) => f.type === 'feed.ready');
      expect(ready.data).toEqual({ seq: first.seq! + 10, replayed: 10 });
      expect(c2.frames.map((f) => f.type)).toEqual([...Array<string>(10).fill('mail.received'), 'feed.ready']);
      expect(c2.receivedIds()).toEqual(missed);
      expect(c2.mail().map((f) => f.seq)).toEqual(Array.from({ length: 10 }, (_, i) => first.seq! + 1 + i));
      for (const [i, f] of c2.mail().entries()) expect(f.data).toEqual(await storedEvent(t, missed[i]!));
      await c2.close();
    }

    const c3 = await FeedClient.ready(t, `?since=${first.seq}`);
    const liveId = await send(tr, { subject: 'live after replay' });
    await c3.waitFor((f) => f.type === 'mail.received' && (f.data as MailEvent).id === liveId);
    expect(c3.receivedIds()).toEqual([...missed, liveId]);
    expect(c3.mail().at(-1)?.seq).toBe(first.seq! + 11);
    await c3.close();
  });

  it('has no gap and no duplicate at the seam when mail arrives during the replay', async () => {
    const probe = await FeedClient.ready(t);
    const since = (probe.frames[0]!.data as { seq: number }).seq;
    // A backlog of more than one replay page (32), then more mail on three connections while
    // clients connect one after the other, each replaying from the same point.
    const backlog = 40;
    const concurrent = 45;
    const senders = [transport(t), transport(t), transport(t)];
    const ids: string[] = [];
    for (let i = 0; i < backlog; i++) ids.push(await send(senders[i % 3]!, { subject: `backlog ${i}` }));
    await storedEvent(t, ids.at(-1)!);
    let next = 0;
    const sending = Promise.all(
      senders.map(async (s) => {
        while (next < concurrent) {
          next++;
          ids.push(await send(s, { subject: `during ${next}` }));
        }
      }),
    );
    const clients: FeedClient[] = [];
    for (let i = 0; i < 6; i++) {
      clients.push(await FeedClient.open(t, `?since=${since}`));
      await new Promise((r) => setTimeout(r, 40));
    }
    await sending;
    for (const s of senders) s.close();
    const total = backlog + concurrent;
    await probe.waitFor(() => probe.mail().length >= total);
    for (const c of [probe, ...clients]) {
      await waitFor(async () => c.mail().length >= total);
      await new Promise((r) => setTimeout(r, 100)); // a duplicate would arrive now
      const seqs = c.mail().map((f) => f.seq);
      expect(seqs).toEqual(Array.from({ length: total }, (_, i) => since + 1 + i));
      expect(new Set(c.receivedIds())).toEqual(new Set(ids));
      expect(c.frames.filter((f) => f.type === 'feed.ready').length).toBe(1);
      await c.close();
    }
  });

  it('filters on rcpt (exact, case-insensitive), live and in replay; deletes go to everyone', async () => {
    const c = await FeedClient.ready(t, '?rcpt=Bob%40Example.TEST');
    const since = (c.frames[0]!.data as { seq: number }).seq;
    const other = await send(tr, { to: 'alice@example.test' });
    const bob = await send(tr, { to: ['carol@example.test', 'bob@example.test'].join(', ') });
    const bobby = await send(tr, { to: 'bobby@example.test' });
    await c.waitFor((f) => f.type === 'mail.received');
    await storedEvent(t, bobby);
    expect((await fetch(`${t.httpUrl}/api/v1/messages/${other}`, { method: 'DELETE' })).status).toBe(204);
    await c.waitFor((f) => f.type === 'mail.deleted');
    expect(c.mail().map((f) => [f.type, (f.data as { id: string }).id])).toEqual([
      ['mail.received', bob],
      ['mail.deleted', other],
    ]);
    await c.close();

    const replay = await FeedClient.ready(t, `?since=${since}&rcpt=bob@example.test`);
    expect(replay.mail().map((f) => [f.type, (f.data as { id: string }).id])).toEqual([
      ['mail.received', bob],
      ['mail.deleted', other],
    ]);
    await replay.close();
  });

  it('sends mail.deleted for a deleted message; a replay leaves the deleted message out', async () => {
    const c = await FeedClient.ready(t);
    const since = (c.frames[0]!.data as { seq: number }).seq;
    const id = await send(tr, { subject: 'to be deleted' });
    const received = await c.waitFor((f) => f.type === 'mail.received');
    expect((await fetch(`${t.httpUrl}/api/v1/messages/${id}`, { method: 'DELETE' })).status).toBe(204);
    const deleted = await c.waitFor((f) => f.type === 'mail.deleted');
    expect(deleted).toEqual({ type: 'mail.deleted', seq: received.seq! + 1, data: { type: 'mail.deleted', version: 1, id, at: expect.any(String) } });
    expect(new Date((deleted.data as { at: string }).at).toISOString()).toBe((deleted.data as { at: string }).at);
    await c.close();

    const replay = await FeedClient.ready(t, `?since=${since}`);
    expect(replay.mail()).toEqual([deleted]);
    expect(replay.frames.at(-1)?.data).toEqual({ seq: deleted.seq, replayed: 1 });
    // since = the deleted message's own id still works: its place in the log is kept.
    const fromId = await FeedClient.ready(t, `?since=${id}`);
    expect(fromId.mail()).toEqual([deleted]);
    await Promise.all([replay.close(), fromId.close()]);
  });

  it('passes mail.rejected events from the bus to live clients, with seq null', async () => {
    const c = await FeedClient.ready(t);
    const event: MailRejectedEvent = {
      type: 'mail.rejected',
      version: 1,
      id: '01J0000000000000000000000R',
      at: new Date().toISOString(),
      phase: 'rcpt',
      code: 550,
      enhancedCode: '5.1.1',
      reason: 'no such user',
      envelope: { mailFrom: 'a@example.org', rcptTo: ['nobody@example.test'] },
    };
    const filtered = await FeedClient.ready(t, '?rcpt=someone@example.test');
    t.app.bus.publish(event);
    expect(await c.waitFor((f) => f.type === 'mail.rejected')).toEqual({ type: 'mail.rejected', seq: null, data: event });
    await c.close();
    expect(filtered.mail()).toEqual([]);
    await filtered.close();
  });

  it('answers {"type":"feed.ping"} with feed.pong', async () => {
    const c = await FeedClient.ready(t);
    c.ws.send(JSON.stringify({ type: 'feed.ping' }));
    expect(await c.waitFor((f) => f.type === 'feed.pong')).toEqual({ type: 'feed.pong', seq: null, data: null });
    await c.close();
  });

  it('closes with 1009 when a client sends a frame over 1 KiB', async () => {
    const c = await FeedClient.ready(t);
    c.ws.send('x'.repeat(1025));
    expect((await c.whenClosed).code).toBe(1009);
  });

  it('refuses an unknown since with feed.error and close 4404, a malformed one with 4400', async () => {
    const cases: [string, number, string][] = [
      ['?since=01ARZ3NDEKTSV4RRFFQ69G5FAV', 4404, 'unknown_since'],
      ['?since=999999999', 4404, 'unknown_since'],
      ['?since=abc', 4400, 'bad_request'],
      ['?since=1&since=2', 4400, 'bad_request'],
      [`?rcpt=${'a'.repeat(300)}`, 4400, 'bad_request'],
    ];
    for (const [query, code, error] of cases) {
      const c = await FeedClient.open(t, query);
      const closed = await c.whenClosed;
      expect(closed.code, query).toBe(code);
      expect(c.frames).toEqual([{ type: 'feed.error', seq: null, data: { code: error, message: expect.any(String) } }]);
      expect(closed.reason).toBe((c.frames[0]!.data as { message: string }).message);
    }
  });

  it('checks Origin: none, same origin and allowlisted are accepted; foreign and null get 403', async () => {
    const port = t.addresses.http.port;
    for (const origin of [undefined, `http://127.0.0.1:${port}`, `https://127.0.0.1:${port}`, 'https://viewer.example.org', 'https://VIEWER.example.org:443']) {
      const c = await FeedClient.ready(t, '', origin ? { Origin: origin } : {});
      await c.close();
    }
    for (const origin of ['https://evil.example', `http://127.0.0.1:${port + 1}`, `http://localhost:${port}`, 'null', 'https://viewer.example.org:8443']) {
      expect(await refusal(FeedClient.open(t, '', { Origin: origin })), origin).toEqual({
        status: 403,
        body: { error: 'forbidden_origin', message: expect.any(String) },
      });
    }
    expect(await metric(t, 'mailwire_ws_refused_total{reason="origin"}')).toBe(5);
  });

  it('refuses a Host that is not allowed (DNS rebinding) with 403', async () => {
    expect(await refusal(FeedClient.open(t, '', { Host: 'attacker.example' }))).toEqual({
      status: 403,
      body: { error: 'forbidden_host', message: expect.any(String) },
    });
  });

  it('answers 404 to an upgrade on any other path', async () => {
    for (const path of ['/api/v1/event', '/api/v1/events/', '/']) {
      expect(await refusal(FeedClient.open(t, '', {}, path))).toEqual({ status: 404, body: { error: 'not_found', message: 'not found' } });
    }
  });

  it('subscribes to the bus only while a client is connected', async () => {
    await waitFor(async () => (await metric(t, 'mailwire_ws_clients')) === 0);
    const idle = t.app.bus.subscriberCount; // other subscribers (the test helper's schema check)
    const a = await FeedClient.ready(t);
    const b = await FeedClient.ready(t);
    expect(t.app.bus.subscriberCount).toBe(idle + 1);
    expect(await metric(t, 'mailwire_ws_clients')).toBe(2);
    await a.close();
    await waitFor(async () => (await metric(t, 'mailwire_ws_clients')) === 1);
    expect(t.app.bus.subscriberCount).toBe(idle + 1);
    await b.close();
    await waitFor(async () => (await metric(t, 'mailwire_ws_clients')) === 0);
    expect(t.app.bus.subscriberCount).toBe(idle);
  });
});

describe('feed with access control on', () => {
  const token = 'feed-test-token-0123456789abcdef';
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ spamd: false, config: { http: { auth: { enabled: true, tokens: [token] } } } });
  });
  afterAll(async () => t.stop());

  it('answers 401 without credentials; a bearer token or ?access_token= opens the feed', async () => {
    expect(await refusal(FeedClient.open(t))).toEqual({ status: 401, body: { error: 'unauthorized', message: expect.any(String) } });
    expect((await refusal(FeedClient.open(t, '?access_token=wrong-token-0123456789abcdef'))).status).toBe(401);
    const byHeader = await FeedClient.ready(t, '', { Authorization: `Bearer ${token}` });
    const byQuery = await FeedClient.ready(t, `?access_token=${token}&since=0`);
    expect(byQuery.frames.at(-1)).toEqual({ type: 'feed.ready', seq: null, data: { seq: 0, replayed: 0 } });
    await Promise.all([byHeader.close(), byQuery.close()]);
    expect(await metric(t, 'mailwire_ws_refused_total{reason="auth"}', { Authorization: `Bearer ${token}` })).toBe(2);
  });
});

describe('feed limits: slow clients, heartbeat, client count, stop', () => {
  let t: TestApp;
  let tr: Transporter<SMTPTransport.SentMessageInfo>;
  beforeAll(async () => {
    t = await startTestApp({ spamd: false, config: { http: { feed: { max_buffered_bytes: 64 * 1024, max_clients: 3 } } } });
    tr = transport(t);
  });
  afterAll(async () => {
    tr.close();
    await t.stop();
  });

  it('drops a client that does not read (close 1008) while a normal client keeps receiving', async () => {
    const normal = await FeedClient.ready(t);
    const slow = await FeedClient.ready(t);
    slow.socket.pause();
    // ~1.8 MiB events: the kernel's socket buffers take a few MiB before the server's own
    // buffer for the slow client passes 64 KiB.
    const big = 'x'.repeat(900 * 1024);
    const ids: string[] = [];
    for (let i = 0; i < 40 && (await metric(t, 'mailwire_ws_dropped_total{reason="slow"}')) === 0; i++) {
      ids.push(await send(tr, { subject: `big ${i}`, text: big, html: `<p>${big}</p>` }));
      await normal.waitFor((f) => f.type === 'mail.received' && (f.data as MailEvent).id === ids.at(-1));
    }
    expect(await metric(t, 'mailwire_ws_dropped_total{reason="slow"}')).toBe(1);
    // The normal client got every message, and keeps getting new ones.
    const after = await send(tr, { subject: 'after the drop' });
    await normal.waitFor((f) => f.type === 'mail.received' && (f.data as MailEvent).id === after);
    expect(normal.receivedIds()).toEqual([...ids, after]);
    // The slow client, reading again, finds what was queued and then the close frame.
    slow.socket.resume();
    const closed = await slow.whenClosed;
    expect(closed.code).toBe(1008);
    expect(closed.reason).toMatch(/^too slow/);
    expect(slow.receivedIds()).toEqual(ids.slice(0, slow.receivedIds().length));
    expect(slow.receivedIds().length).toBeLessThan(ids.length);
    await normal.close();
  });

  it('refuses more than http.feed.max_clients with 503', async () => {
    const open = [await FeedClient.ready(t), await FeedClient.ready(t), await FeedClient.ready(t)];
    expect(await refusal(FeedClient.open(t))).toEqual({ status: 503, body: { error: 'too_many_clients', message: expect.any(String) } });
    await open.pop()!.close();
    const again = await FeedClient.ready(t);
    await Promise.all([...open, again].map((c) => c.close()));
  });
});

describe('feed clients per address', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ spamd: false, config: { http: { feed: { max_clients: 10, max_clients_per_ip: 2 } } } });
  });
  afterAll(async () => t.stop());

  it('refuses a third client from one address with 429, serves another address, and frees the slot on close', async () => {
    const mine = [await FeedClient.ready(t), await FeedClient.ready(t)];
    expect(await refusal(FeedClient.open(t))).toEqual({
      status: 429,
      body: { error: 'too_many_clients_from_address', message: 'too many feed clients from your address; close some first' },
    });
    // 127.0.0.2 is another client to the server (Linux routes all of 127/8 to loopback).
    const other = await FeedClient.open(t, '', {}, '/api/v1/events', '127.0.0.2');
    await other.waitFor((f) => f.type === 'feed.ready');
    expect(await metric(t, 'mailwire_ws_refused_total{reason="limit_per_ip"}')).toBe(1);
    await mine.pop()!.close();
    await waitFor(async () => (await metric(t, 'mailwire_ws_clients')) === 2);
    const again = await FeedClient.ready(t);
    await Promise.all([...mine, other, again].map((c) => c.close()));
  });
});

describe('feed heartbeat', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ spamd: false, config: { http: { feed: { heartbeat_ms: 400 } } } });
  });
  afterAll(async () => t.stop());

  it('terminates a client that stops answering pings and keeps one that answers', async () => {
    const alive = await FeedClient.ready(t);
    const dead = await FeedClient.ready(t);
    dead.socket.pause();
    await waitFor(async () => (await metric(t, 'mailwire_ws_dropped_total{reason="heartbeat"}')) === 1);
    await waitFor(async () => (await metric(t, 'mailwire_ws_clients')) === 1);
    dead.socket.resume();
    expect((await dead.whenClosed).code).toBe(1006); // terminated: no close frame
    // Many intervals later the answering client is still there and still served.
    await new Promise((r) => setTimeout(r, 1500));
    expect(alive.closed).toBeNull();
    const tr = transport(t);
    const id = await send(tr);
    tr.close();
    await alive.waitFor((f) => f.type === 'mail.received' && (f.data as MailEvent).id === id);
    await alive.close();
  });
});

describe('feed at stop', () => {
  it('closes clients with 1001 when the app stops', async () => {
    const t = await startTestApp({ spamd: false });
    const c = await FeedClient.ready(t);
    const stopped = t.stop();
    expect(await c.whenClosed).toEqual({ code: 1001, reason: 'server stopping' });
    await stopped;
  });
});

/**
 * The seam between replay and live, step by step. The pipeline commits and then publishes;
 * here the test does both itself on a real store and a real bus, so it can hold a publish back
 * (the moment between a commit and its publish) and stall a replay (a client that stops
 * reading), which the app run cannot pin down in time.
 */
describe('feed seam, on a real store and bus with publishes held back', () => {
  let dir: string;
  let store: SqliteMessageStore;
  let bus: EventBus;
  let server: Server;
  let feed: EventFeed;
  let target: Target;
  let n = 0;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'mailwire-feed-'));
    store = openSqliteStore(join(dir, 'data'));
    bus = new EventBus();
    ({ server, feed, target } = await feedServer(store, 256 * 1024 * 1024));
  });

  /** An HTTP server on port 0 with a feed over `log` on it. */
  async function feedServer(log: SqliteMessageStore, maxBufferedBytes: number): Promise<{ server: Server; feed: EventFeed; target: Target }> {
    const http = createServer((_req, res) => res.writeHead(404).end());
    await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
    const events = createEventFeed({
      server: http,
      log,
      bus,
      logger: silentLogger(),
      metrics: createMetrics({ processMetrics: false }),
      hostPolicy: DEFAULT_HOST_POLICY,
      allowedOrigins: [],
      maxClients: 10,
      maxClientsPerIp: 10,
      maxBufferedBytes,
      heartbeatMs: 60_000,
    });
    return { server: http, feed: events, target: { addresses: { http: { port: (http.address() as AddressInfo).port } } } };
  }
  afterAll(async () => {
    await feed.close();
    await new Promise((resolve) => server.close(resolve));
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Commits an event to the store, as the pipeline does, without publishing it. */
  async function commit(text = 'hi'): Promise<MailEvent> {
    const event = makeEvent({ subject: `seam ${++n}`, text });
    const raw = join(dir, `${event.id}.eml`);
    writeFileSync(raw, 'Subject: x\r\n\r\nx\r\n');
    expect(await store.commit(event, { path: raw })).toBe('inserted');
    return event;
  }

  /**
   * A feed of its own over the store, whose log runs `before` (once armed) just before its next
   * eventsAfter query: what the store's writer thread can do between two reads of the main
   * thread, here on a connection of the test's (a StoreWriter, synchronous).
   */
  async function feedWithWriteBeforeQuery(landing: (writer: StoreWriter, page: () => LoggedEvent[] | null) => LoggedEvent[] | null) {
    const writer = new StoreWriter(join(dir, 'data', 'mailwire.db'));
    const armed = { on: false };
    const log = new Proxy(store, {
      get(t, prop) {
        if (prop === 'eventsAfter') {
          return (since: { seq: number } | { id: string }, limit: number) => {
            const query = () => t.eventsAfter(since, limit);
            if (!armed.on) return query();
            armed.on = false;
            return landing(writer, query);
          };
        }
        const value: unknown = Reflect.get(t, prop);
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(t) : value;
      },
    });
    const own = await feedServer(log, 1024 * 1024);
    return {
      target: own.target,
      arm: () => (armed.on = true),
      async close() {
        writer.close();
        await own.feed.close();
        await new Promise((resolve) => own.server.close(resolve));
      },
    };
  }

  it('a commit landing right after the replay query that came back empty still reaches the client', async () => {
    // The client turns live at the end it read *before* that query, so the fan-out brings it
    // the new entry.
    let landed: MailEvent | null = null;
    const own = await feedWithWriteBeforeQuery((writer, query) => {
      const page = query();
      if (page?.length !== 0) throw new Error('expected the replay to be caught up');
      landed = makeEvent({ subject: 'landed' });
      writer.insertBatch([{ json: JSON.stringify(landed), raw: Buffer.from('x') }]);
      return page;
    });
    try {
      const before = await commit();
      own.arm();
      const resumed = await FeedClient.ready(own.target, `?since=${before.id}`);
      expect(landed).not.toBeNull();
      expect(resumed.receivedIds()).toEqual([]);
      // What the pipeline does once the writer has answered.
      bus.publish(landed!);
      await resumed.waitFor((f) => f.type === 'mail.received');
      expect(resumed.receivedIds()).toEqual([landed!.id]);
      await resumed.close();
    } finally {
      await own.close();
    }
  });

  it('a client that turns live while the fan-out is behind gets nothing twice', async () => {
    const live = await FeedClient.ready(target);
    const base = store.lastEventSeq();
    const a = await commit();
    bus.publish(a);
    await live.waitFor((f) => f.type === 'mail.received');
    // Committed, not yet published: the fan-out has not seen these.
    const held = [await commit(), await commit()];
    const resumed = await FeedClient.ready(target, `?since=${base}`);
    expect(resumed.receivedIds()).toEqual([a.id, held[0]!.id, held[1]!.id]);
    for (const e of held) bus.publish(e);
    const c = await commit();
    bus.publish(c);
    const all = [a, ...held, c].map((e) => e.id);
    for (const client of [live, resumed]) {
      await waitFor(async () => client.receivedIds().length >= 4);
      await new Promise((r) => setTimeout(r, 50));
      expect(client.receivedIds()).toEqual(all);
      expect(client.mail().map((f) => f.seq)).toEqual([base + 1, base + 2, base + 3, base + 4]);
    }
    await Promise.all([live.close(), resumed.close()]);
  });

  it('a replay stalled by its client misses nothing the fan-out sent meanwhile', async () => {
    const live = await FeedClient.ready(target);
    const base = store.lastEventSeq();
    // ~40 MiB of backlog: far more than the kernel's socket buffers, so the replay stalls.
    const big = 'y'.repeat(1024 * 1024);
    const backlog: string[] = [];
    for (let i = 0; i < 40; i++) {
      const e = await commit(big);
      bus.publish(e);
      backlog.push(e.id);
    }
    await waitFor(async () => live.receivedIds().length === 40);
    const stalled = await FeedClient.open(target, `?since=${base}`);
    stalled.socket.pause();
    await new Promise((r) => setTimeout(r, 100));
    // Live mail while the replay waits: the fan-out moves past the stalled client's cursor.
    const during: string[] = [];
    for (let i = 0; i < 5; i++) {
      const e = await commit();
      bus.publish(e);
      during.push(e.id);
    }
    await waitFor(async () => live.receivedIds().length === 45);
    expect(stalled.frames.some((f) => f.type === 'feed.ready')).toBe(false);
    stalled.socket.resume();
    await stalled.waitFor((f) => f.type === 'feed.ready');
    const after = await commit();
    bus.publish(after);
    await stalled.waitFor((f) => f.type === 'mail.received' && (f.data as MailEvent).id === after.id);
    expect(stalled.receivedIds()).toEqual([...backlog, ...during, after.id]);
    expect(stalled.frames.findIndex((f) => f.type === 'feed.ready')).toBe(45);
    expect(stalled.mail().map((f) => f.seq)).toEqual(Array.from({ length: 46 }, (_, i) => base + 1 + i));
    await Promise.all([live.close(), stalled.close()]);
  });

  const FUTURE = '2100-01-01T00:00:00.000Z';
  const expiredFrame = { type: 'feed.error', seq: null, data: { code: 'since_expired', message: expect.any(String) } };

  it('a since from before the trimmed horizon gets feed.error since_expired and close 4410; the horizon itself replays', async () => {
    const before = store.lastEventSeq();
    const kept = await commit();
    const gone = await commit();
    await store.delete(gone.id);
    expect((await store.trimEventLog(FUTURE, Infinity, 1000)).removed).toBe(2);
    const horizon = store.logHorizon();
    expect(horizon).toBe(store.lastEventSeq());

    for (const since of [String(before), String(horizon - 1), kept.id]) {
      const c = await FeedClient.open(target, `?since=${since}`);
      const closed = await c.whenClosed;
      expect(closed.code, since).toBe(4410);
      expect(c.frames).toEqual([expiredFrame]);
      expect(closed.reason).toBe((c.frames[0]!.data as { message: string }).message);
    }
    const resumed = await FeedClient.ready(target, `?since=${horizon}`);
    const next = await commit();
    bus.publish(next);
    await resumed.waitFor((f) => f.type === 'mail.received');
    expect(resumed.receivedIds()).toEqual([next.id]);
    await resumed.close();
  });

  it('a live client whose fan-out the trim overtook is closed with 4410 instead of missing a mail.deleted', async () => {
    const live = await FeedClient.ready(target);
    // Committed and deleted, neither published yet: the fan-out has read neither entry.
    const e = await commit();
    await store.delete(e.id);
    expect((await store.trimEventLog(FUTURE, Infinity, 1000)).removed).toBe(2);
    bus.publish({ type: 'mail.deleted', version: 1, id: e.id, at: new Date().toISOString() });
    const closed = await live.whenClosed;
    expect(closed.code).toBe(4410);
    expect(live.frames.at(-1)).toEqual(expiredFrame);
    expect(live.mail()).toEqual([]);
  });

  it('a replay the trim overtakes is closed with 4410 instead of skipping what was trimmed', async () => {
    const base = store.lastEventSeq();
    // A stalled replay (as above), then every message it has yet to send is deleted and trimmed.
    const big = 'z'.repeat(1024 * 1024);
    const backlog: MailEvent[] = [];
    for (let i = 0; i < 40; i++) backlog.push(await commit(big));
    const stalled = await FeedClient.open(target, `?since=${base}`);
    stalled.socket.pause();
    await new Promise((r) => setTimeout(r, 100));
    for (const e of backlog) await store.delete(e.id);
    expect((await store.trimEventLog(FUTURE, Infinity, 1000)).removed).toBe(80);
    stalled.socket.resume();
    const closed = await stalled.whenClosed;
    expect(closed.code).toBe(4410);
    // The first page (read before the trim) went out; nothing after it, and no feed.ready.
    expect(stalled.frames.at(-1)).toEqual(expiredFrame);
    expect(stalled.receivedIds()).toEqual(backlog.slice(0, 32).map((e) => e.id));
    expect(stalled.frames.some((f) => f.type === 'feed.ready')).toBe(false);
  });

  it('a trim landing between the horizon check and the query of a resume still closes with 4410', async () => {
    const own = await feedWithWriteBeforeQuery((writer, query) => {
      expect(writer.trim(FUTURE, Infinity, 1000).removed).toBe(2);
      return query();
    });
    try {
      const kept = await commit();
      const gone = await commit();
      await store.delete(gone.id);
      await commit();
      own.arm();
      const c = await FeedClient.open(own.target, `?since=${kept.id}`);
      const closed = await c.whenClosed;
      // Not the entries after the hole with gone's mail.deleted missing: start afresh.
      expect(closed.code).toBe(4410);
      expect(c.frames).toEqual([expiredFrame]);
    } finally {
      await own.close();
    }
  });

  it('a trim landing between the horizon check and the query of the live fan-out still closes with 4410', async () => {
    const own = await feedWithWriteBeforeQuery((writer, query) => {
      expect(writer.trim(FUTURE, Infinity, 1000).removed).toBe(2);
      return query();
    });
    try {
      const live = await FeedClient.ready(own.target);
      const e = await commit();
      await store.delete(e.id);
      own.arm();
      bus.publish({ type: 'mail.deleted', version: 1, id: e.id, at: new Date().toISOString() });
      const closed = await live.whenClosed;
      expect(closed.code).toBe(4410);
      expect(live.frames.at(-1)).toEqual(expiredFrame);
      expect(live.mail()).toEqual([]);
    } finally {
      await own.close();
    }
  });
});
