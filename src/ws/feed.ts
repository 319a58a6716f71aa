/**
 * The live event feed, /api/v1/events, on the HTTP server's upgrade event. The only module
 * that imports ws. Protocol: protocol.ts and docs/events.md.
 *
 * Source of truth: the store's event log, not the bus. A bus event only wakes the feed up; it
 * then reads the log after the last position it fanned out (`#hubSeq`). So every frame carries
 * its log seq, live frames and replayed frames come from the same place in the same order, and
 * the seam between replay and live is a comparison of seqs:
 *
 *   - a client replaying (?since=) is fed from the log in bounded pages, paced by its socket,
 *     and ignored by the fan-out meanwhile;
 *   - when a replay query comes back empty, the client turns live with its cursor at the log's
 *     end *as read just before that query*. Commits run on the store's writer thread and can
 *     land between any two reads, but seqs grow with commit order: every entry up to that end
 *     was committed before the empty query ran, so none of them is visible (they are received
 *     events of messages deleted since), and anything committed later is above the cursor and
 *     comes through the fan-out. No gap;
 *   - the fan-out sends a client only entries above its cursor: no duplicate, even when the
 *     fan-out is behind the client's replay.
 *   - the event-log trim (on the writer thread as well) moves the log's horizon in the same
 *     transaction that removes entries, so each read of the log is followed by a look at the
 *     horizon: past the reader's position, the page is thrown away and the client is told to
 *     start afresh (4410), never fed a log with a hole in it.
 *
 * No work is done while nobody listens: the bus subscription and the heartbeat timer exist
 * only while at least one client is connected. Each live frame is serialised once and the same
 * Buffer goes to every client (ws does not copy it), so memory per slow client is its share of
 * frames the others already hold, bounded by http.feed.max_buffered_bytes.
 */
import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import type { EventBus } from '../bus/bus.js';
import type { AnyEvent } from '../events/types.js';
import type { HostPolicy } from '../http/host-check.js';
import type { Logger } from '../log/logger.js';
import type { Metrics } from '../metrics/metrics.js';
import type { EventLog, LoggedEvent } from '../store/types.js';
import { clientKey } from '../util/net.js';
import { normaliseOrigins } from './origin.js';
import { CLOSE, controlFrame, eventFrame, matchesRcpt, parseFeedQuery, type FeedQuery, type Since } from './protocol.js';
import { checkUpgrade, refuseUpgrade, type Gate, type Refusal } from './upgrade.js';

export interface EventFeedOptions {
  /** The HTTP server the feed shares (fastify's `server`). */
  server: Server;
  log: EventLog;
  bus: EventBus;
  logger: Logger;
  metrics: Metrics;
  /** The same Host policy as the REST API (DNS rebinding). */
  hostPolicy: HostPolicy;
  /** http.allowed_origins: browser origins allowed besides the server's own. */
  allowedOrigins: readonly string[];
  /** Access control (src/auth/); a refusal answers the upgrade with its 401 or 429. Absent: everyone. */
  authorize?: Gate['authorize'];
  maxClients: number;
  /** Of those, from one address (IPv4) or /64 (IPv6). */
  maxClientsPerIp: number;
  maxBufferedBytes: number;
  heartbeatMs: number;
}

export interface EventFeed {
  /** Connected clients (replaying, live or closing). */
  readonly clients: number;
  /** Closes every client (1001) and stops answering upgrades; call before the HTTP server closes. */
  close(): Promise<void>;
}

type ClientState = 'replaying' | 'live' | 'closing';

interface Client {
  ws: WebSocket;
  rcpt: string | null;
  state: ClientState;
  /** Highest log seq this client has been sent or has been found not to need. */
  cursor: number;
  /** Answered the last ping. */
  alive: boolean;
  closed: Promise<void>;
  remote: string | undefined;
  /** The address (or IPv6 /64) it counts against for maxClientsPerIp. */
  key: string;
}

/**
 * Log entries read per query, for replay and fan-out alike. An event is ~5 KiB typically but
 * up to ~3 MiB (parse.max_text_bytes + max_html_bytes), so a page is bounded by count: 32
 * entries keeps the worst page under ~100 MiB transient and a typical one under 200 KiB.
 */
const PAGE = 32;
/**
 * A replay sends up to this much ahead of what the client's socket has taken, then waits: a
 * client resuming after a long absence is fed at its own pace instead of having the whole
 * backlog queued in the server's memory.
 */
const REPLAY_HIGH_WATER = 256 * 1024;
/**
 * Messages a client may send: only {"type":"feed.ping"}. ws refuses bigger frames (close 1009)
 * before buffering them.
 */
const MAX_CLIENT_PAYLOAD = 1024;
/**
 * After a close frame, how long a dropped client has to read it before the socket
 * is destroyed: a client that stopped reading would otherwise hold its buffer until ws's own
 * 30 s close timeout.
 */
const CLOSE_GRACE_MS = 5000;
/** At stop, how long clients get to answer the 1001 close before their sockets are destroyed. */
const STOP_GRACE_MS = 1000;
/** The "max_clients reached" warning is logged at most this often. */
const LIMIT_WARN_INTERVAL_MS = 60_000;
/** A WebSocket close reason is at most 123 bytes (RFC 6455 5.5: control frames carry <= 125). */
const MAX_REASON = 123;

export function createEventFeed(options: EventFeedOptions): EventFeed {
  return new Feed(options);
}

class Feed implements EventFeed {
  readonly #o: EventFeedOptions;
  readonly #log: Logger;
  readonly #wss = new WebSocketServer({ noServer: true, clientTracking: false, perMessageDeflate: false, maxPayload: MAX_CLIENT_PAYLOAD });
  readonly #origins: ReadonlySet<string>;
  readonly #clients = new Set<Client>();
  readonly #gauge;
  readonly #dropped;
  readonly #frames;
  readonly #refused;
  /** Connected clients per clientKey; an address leaves the map with its last client. */
  readonly #perIp = new Map<string, number>();
  /** Last log seq the fan-out has handled. Meaningful while subscribed. */
  #hubSeq = 0;
  #unsubscribe: (() => void) | null = null;
  #heartbeat: NodeJS.Timeout | null = null;
  #drainScheduled: NodeJS.Immediate | null = null;
  #stopping = false;
  #lastLimitWarn = -Infinity;

  constructor(o: EventFeedOptions) {
    this.#o = o;
    this.#log = o.logger.child({ mod: 'ws' });
    this.#origins = normaliseOrigins(o.allowedOrigins);
    this.#gauge = o.metrics.gauge('mailwire_ws_clients', 'Connected clients of the WebSocket event feed');
    this.#dropped = o.metrics.counter('mailwire_ws_dropped_total', 'Feed clients cut off by the server, by reason (slow, heartbeat)', ['reason']);
    this.#frames = o.metrics.counter('mailwire_ws_frames_total', 'Frames sent to feed clients, by frame type', ['type']);
    this.#refused = o.metrics.counter('mailwire_ws_refused_total', 'Feed upgrade requests refused, by reason', ['reason']);
    o.server.on('upgrade', this.#onUpgrade);
  }

  get clients(): number {
    return this.#clients.size;
  }

  // --- the upgrade request -------------------------------------------------------------------

  readonly #onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    // An exception here would escape into Node's HTTP parser and take the process down.
    try {
      this.#upgrade(req, socket, head);
    } catch (err) {
      this.#log.error({ err }, 'feed upgrade failed');
      socket.destroy();
    }
  };

  #upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const o = this.#o;
    const gate = checkUpgrade(req, { hostPolicy: o.hostPolicy, origins: this.#origins, ...(o.authorize ? { authorize: o.authorize } : {}) });
    if (!gate.ok) {
      if (gate.refusal.reason === 'origin') this.#log.debug({ origin: req.headers.origin?.slice(0, 100) }, 'feed upgrade refused: Origin not allowed');
      return this.#refuse(socket, gate.refusal);
    }
    if (this.#stopping) return this.#refuse(socket, { status: 503, reason: 'stopping', code: 'unavailable', message: 'the server is stopping' });
    if (this.#clients.size >= o.maxClients) {
      const now = Date.now();
      // A flood of refused clients must not become a flood of log lines.
      if (now - this.#lastLimitWarn >= LIMIT_WARN_INTERVAL_MS) {
        this.#lastLimitWarn = now;
        this.#log.warn({ max: o.maxClients }, 'feed upgrade refused: http.feed.max_clients reached');
      }
      return this.#refuse(socket, { status: 503, reason: 'limit', code: 'too_many_clients', message: 'too many feed clients; try again later' });
    }
    // One address must not take every slot: the viewer of everyone else would fall back to polling.
    const key = clientKey(req.socket.remoteAddress ?? '');
    if ((this.#perIp.get(key) ?? 0) >= o.maxClientsPerIp) {
      return this.#refuse(socket, { status: 429, reason: 'limit_per_ip', code: 'too_many_clients_from_address', message: 'too many feed clients from your address; close some first' });
    }
    const parsed = parseFeedQuery(gate.url.searchParams);
    this.#wss.handleUpgrade(req, socket, head, (ws) => this.#onConnection(ws, req, key, parsed));
  }

  #refuse(socket: Duplex, refusal: Refusal): void {
    this.#refused.inc({ reason: refusal.reason });
    refuseUpgrade(socket, refusal);
  }

  // --- clients -------------------------------------------------------------------------------

  #onConnection(ws: WebSocket, req: IncomingMessage, key: string, parsed: ReturnType<typeof parseFeedQuery>): void {
    let onClosed!: () => void;
    const client: Client = {
      ws,
      rcpt: parsed.ok ? parsed.query.rcpt : null,
      state: 'replaying',
      cursor: 0,
      alive: true,
      closed: new Promise((resolve) => (onClosed = resolve)),
      remote: req.socket.remoteAddress,
      key,
    };
    this.#clients.add(client);
    this.#perIp.set(client.key, (this.#perIp.get(client.key) ?? 0) + 1);
    this.#gauge.set(this.#clients.size);
    if (this.#clients.size === 1) this.#startListening();
    ws.on('pong', () => (client.alive = true));
    ws.on('message', (data, isBinary) => this.#onMessage(client, data, isBinary));
    ws.on('error', (err) => this.#log.debug({ err, remote: client.remote }, 'feed client error'));
    ws.on('close', () => {
      client.state = 'closing';
      this.#clients.delete(client);
      const left = (this.#perIp.get(client.key) ?? 1) - 1;
      if (left > 0) this.#perIp.set(client.key, left);
      else this.#perIp.delete(client.key);
      this.#gauge.set(this.#clients.size);
      if (this.#clients.size === 0) this.#stopListening();
      onClosed();
    });
    this.#log.debug({ remote: client.remote, query: parsed.ok ? parsed.query : null }, 'feed client connected');

    if (!parsed.ok) return this.#fail(client, CLOSE.badRequest, 'bad_request', parsed.message);
    this.#start(client, parsed.query).catch((err: unknown) => {
      this.#log.error({ err }, 'feed replay failed');
      this.#fail(client, CLOSE.internal, 'internal', 'reading the event log failed; reconnect with since');
    });
  }

  async #start(client: Client, query: FeedQuery): Promise<void> {
    const log = this.#o.log;
    if (query.since === null) {
      client.cursor = log.lastEventSeq();
      return this.#goLive(client, 0);
    }
    const from = this.#resolveSince(query.since);
    if (from === 'unknown') {
      const what = 'id' in query.since ? `message ${query.since.id}` : `seq ${query.since.seq}`;
      return this.#fail(client, CLOSE.unknownSince, 'unknown_since', `since: the event log has no ${what}`);
    }
    if (from === 'expired') return this.#expired(client);
    await this.#replay(client, from);
  }

  /** The log seq to replay after, or why there is none. */
  #resolveSince(since: Since): number | 'unknown' | 'expired' {
    const log = this.#o.log;
    const seq = 'seq' in since ? since.seq : log.receivedSeq(since.id);
    // A seq beyond the end belongs to some other log (a reset data directory).
    if (seq === null || seq > log.lastEventSeq()) return 'unknown';
    return seq < log.logHorizon() ? 'expired' : seq;
  }

  #expired(client: Client): void {
    this.#fail(client, CLOSE.sinceExpired, 'since_expired', 'since: the event log no longer goes back that far; reload the messages and connect without since');
  }

  /** Sends the log after seq `from`, page by page, paced by the client's socket; then live. */
  async #replay(client: Client, from: number): Promise<void> {
    const log = this.#o.log;
    let cursor = from;
    let replayed = 0;
    for (;;) {
      // The log's end before the query, the horizon after it (see the top of this file).
      const end = log.lastEventSeq();
      const page = log.eventsAfter({ seq: cursor }, PAGE) ?? [];
      // The log was trimmed past this client: entries ahead of it may be gone. Checked after
      // the query, because the trim runs on the writer thread and can land between two reads:
      // a trim that the query saw has moved the horizon by now (one transaction does both).
      if (cursor < log.logHorizon()) return this.#expired(client);
      if (page.length === 0) {
        // Caught up, in the same tick as the query that said so (see the top of this file).
        // Entries up to `end` not returned are received events of deleted messages.
        client.cursor = Math.max(cursor, end);
        return this.#goLive(client, replayed);
      }
      for (const entry of page) {
        if (client.state !== 'replaying') return;
        cursor = entry.seq;
        if (!matchesRcpt(entry.event, client.rcpt)) continue;
        const frame = eventFrame(entry.event, entry.seq);
        this.#frames.inc({ type: entry.event.type });
        replayed++;
        if (client.ws.bufferedAmount + frame.length > REPLAY_HIGH_WATER) await this.#sendAndWait(client, frame);
        else client.ws.send(frame, { binary: false });
      }
      // Between pages the loop yields, so a long replay (or a long filtered-out stretch) does
      // not hold the event loop; the next query and the live switch stay in one tick.
      await yieldToLoop();
      if (client.state !== 'replaying') return;
    }
  }

  /** Sends and resolves once the frame reached the socket, or the client is gone. */
  #sendAndWait(client: Client, frame: Buffer): Promise<void> {
    const written = new Promise<void>((resolve) => client.ws.send(frame, { binary: false }, () => resolve()));
    return Promise.race([written, client.closed]);
  }

  #goLive(client: Client, replayed: number): void {
    if (client.state !== 'replaying') return;
    client.state = 'live';
    this.#sendControl(client, controlFrame('feed.ready', { seq: client.cursor, replayed }), 'feed.ready');
  }

  #onMessage(client: Client, data: RawData, isBinary: boolean): void {
    if (isBinary || client.state === 'closing') return;
    let type: unknown;
    try {
      type = (JSON.parse(data.toString()) as { type?: unknown } | null)?.type;
    } catch {
      return;
    }
    // An application-level ping for browsers, which cannot see WebSocket pings.
    if (type === 'feed.ping') this.#sendControl(client, controlFrame('feed.pong', null), 'feed.pong');
  }

  #sendControl(client: Client, frame: Buffer, type: string): void {
    if (client.ws.bufferedAmount > this.#o.maxBufferedBytes) return this.#drop(client, 'slow');
    client.ws.send(frame, { binary: false });
    this.#frames.inc({ type });
  }

  /** An error frame, then the close; the socket is destroyed if the client does not answer. */
  #fail(client: Client, code: number, errorCode: string, message: string): void {
    if (client.state === 'closing') return;
    client.ws.send(controlFrame('feed.error', { code: errorCode, message }), { binary: false });
    this.#frames.inc({ type: 'feed.error' });
    this.#closeClient(client, code, message);
  }

  #drop(client: Client, reason: 'slow' | 'heartbeat'): void {
    if (client.state === 'closing') return;
    this.#dropped.inc({ reason });
    this.#log.info({ remote: client.remote, reason, buffered: client.ws.bufferedAmount }, 'feed client dropped');
    if (reason === 'heartbeat') {
      // It does not answer pings: a close frame would never be read.
      client.state = 'closing';
      client.ws.terminate();
      return;
    }
    this.#closeClient(client, CLOSE.tooSlow, 'too slow: send buffer over http.feed.max_buffered_bytes; reconnect with since');
  }

  #closeClient(client: Client, code: number, reason: string): void {
    client.state = 'closing';
    client.ws.close(code, truncateReason(reason));
    const timer = setTimeout(() => client.ws.terminate(), CLOSE_GRACE_MS).unref();
    void client.closed.then(() => clearTimeout(timer));
  }

  // --- fan-out -------------------------------------------------------------------------------

  #startListening(): void {
    this.#hubSeq = this.#o.log.lastEventSeq();
    this.#unsubscribe = this.#o.bus.subscribe(this.#onBusEvent);
    this.#heartbeat = setInterval(() => this.#beat(), this.#o.heartbeatMs).unref();
  }

  #stopListening(): void {
    this.#unsubscribe?.();
    this.#unsubscribe = null;
    if (this.#heartbeat) clearInterval(this.#heartbeat);
    this.#heartbeat = null;
    if (this.#drainScheduled) clearImmediate(this.#drainScheduled);
    this.#drainScheduled = null;
  }

  readonly #onBusEvent = (event: AnyEvent): void => {
    // Rejections are not in the log (nothing to resume): straight to live clients.
    if (event.type === 'mail.rejected') return this.#fanOut(event, null);
    // The bus publishes after the commit, so the log already has it. Several publishes in one
    // turn of the loop (a commit batch) cost one log query.
    this.#drainScheduled ??= setImmediate(() => this.#drain());
  };

  #drain(): void {
    this.#drainScheduled = null;
    if (this.#unsubscribe === null) return;
    let page: LoggedEvent[];
    try {
      page = this.#o.log.eventsAfter({ seq: this.#hubSeq }, PAGE) ?? [];
      // After the query, as in #replay.
      if (this.#hubSeq < this.#o.log.logHorizon()) {
        // The trim overtook the fan-out (it stalled for longer than the log keeps entries): a
        // mail.deleted may be gone, so the live clients start afresh rather than miss it.
        for (const c of this.#clients) if (c.state === 'live') this.#expired(c);
        this.#hubSeq = this.#o.log.lastEventSeq();
        return;
      }
    } catch (err) {
      this.#log.error({ err }, 'reading the event log for the feed failed; closing feed clients');
      for (const c of this.#clients) this.#fail(c, CLOSE.internal, 'internal', 'reading the event log failed; reconnect with since');
      return;
    }
    for (const entry of page) {
      this.#hubSeq = entry.seq;
      this.#fanOut(entry.event, entry.seq);
    }
    // A full page: there may be more; continue on the next turn rather than hold the loop.
    if (page.length === PAGE) this.#drainScheduled = setImmediate(() => this.#drain());
  }

  /** One event to every live client that wants it; serialised at most once. */
  #fanOut(event: AnyEvent, seq: number | null): void {
    let frame: Buffer | null = null;
    let sent = 0;
    for (const c of this.#clients) {
      if (c.state !== 'live') continue;
      if (seq !== null) {
        // Already sent by its replay (the fan-out may lag behind a replay that just ended).
        if (seq <= c.cursor) continue;
        c.cursor = seq;
      }
      if (!matchesRcpt(event, c.rcpt)) continue;
      if (c.ws.bufferedAmount > this.#o.maxBufferedBytes) {
        this.#drop(c, 'slow');
        continue;
      }
      frame ??= eventFrame(event, seq);
      c.ws.send(frame, { binary: false });
      sent++;
    }
    if (sent > 0) this.#frames.inc({ type: event.type }, sent);
  }

  #beat(): void {
    for (const c of this.#clients) {
      if (c.state === 'closing') continue;
      if (!c.alive) {
        this.#drop(c, 'heartbeat');
        continue;
      }
      c.alive = false;
      c.ws.ping();
    }
  }

  // --- stop ----------------------------------------------------------------------------------

  async close(): Promise<void> {
    this.#stopping = true;
    this.#stopListening();
    const clients = [...this.#clients];
    for (const c of clients) {
      if (c.state !== 'closing') {
        c.state = 'closing';
        c.ws.close(CLOSE.goingAway, 'server stopping');
      }
    }
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(clients.map((c) => c.closed)), new Promise((r) => (timer = setTimeout(r, STOP_GRACE_MS)))]);
    clearTimeout(timer);
    for (const c of clients) c.ws.terminate();
    await Promise.all(clients.map((c) => c.closed));
    // The upgrade listener stays: until the HTTP server has closed, late upgrades get 503.
  }
}

function truncateReason(reason: string): string {
  let out = reason;
  while (Buffer.byteLength(out) > MAX_REASON) out = out.slice(0, -1);
  return out;
}
