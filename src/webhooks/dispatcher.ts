/**
 * Webhook delivery: events in, signed POSTs out, with retries that survive a restart.
 *
 * Enqueueing follows the store's event log, not the bus payload: each webhook has a cursor (the
 * last log seq considered for it), and a catch-up reads the log after the lowest cursor, inserts
 * the deliveries that match and moves the cursors, in one transaction. The bus only says "look
 * again". So an event committed to the store while the process died before enqueueing it is
 * found at the next start, and no event is enqueued twice. A webhook seen for the first time
 * starts at the end of the log (it does not replay history). mail.rejected events are not in
 * the log: they are enqueued from the bus as they come, inline.
 *
 * Everything runs after the SMTP reply: the store publishes after commit, which follows the 250,
 * and the bus handler only schedules work (setImmediate), so a webhook never slows SMTP.
 */
import { existsSync } from 'node:fs';
import type { Agent } from 'node:http';
import type { EventBus } from '../bus/bus.js';
import type { WebhookConfig } from '../config/sections/webhooks.js';
import type { AnyEvent, MailDeletedEvent, MailRejectedEvent } from '../events/types.js';
import type { Logger } from '../log/logger.js';
import type { Metrics } from '../metrics/metrics.js';
import type { EventLog, LogEntryHead, MessageStore } from '../store/types.js';
import {
  DELETED_REASON,
  deliveryStorePath,
  openWebhookDeliveryStore,
  type AttemptResult,
  type Delivery,
  type NewDelivery,
  type WebhookDeliveryStore,
} from '../store/webhook-deliveries.js';
import { WebhookFilter } from './filter.js';
import { createAgent, send, type SendOutcome } from './send.js';
import { signPayload } from './signature.js';
import { MAILWIRE_VERSION } from './version.js';
import { WebhooksApi } from './view.js';

/**
 * Log entries read per catch-up round; rounds yield to the event loop between them. A round
 * reads entry heads only (seq, type, id, time, recipients: ~100 bytes plus ~40 per recipient),
 * never the events, so even a catch-up after days down holds well under a few MiB at a time.
 */
const CATCH_UP_BATCH = 256;
/** Wait before enqueueing or pumping again after the delivery store failed (a locked or full disk). */
const RETRY_AFTER_ERROR_MS = 5000;
/**
 * mail.rejected events waiting for the next enqueue tick. A flood of rejections (a dictionary
 * attack) arrives faster than nothing; beyond this they are dropped and counted.
 */
const MAX_REJECTED_BUFFER = 1000;
/** An attempt in flight holds its delivery this much past its deadline (a crash then retries it). */
const LEASE_MARGIN_MS = 1000;
/** Finished deliveries are kept this long and at most this many per webhook, for the API. */
const FINISHED_RETENTION_MS = 7 * 86_400_000;
const FINISHED_KEEP_PER_WEBHOOK = 10_000;
const PRUNE_INTERVAL_MS = 10 * 60_000;
/** setTimeout's ceiling: a longer delay fires at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export interface DispatcherDeps {
  webhooks: readonly WebhookConfig[];
  dataDir: string;
  store: MessageStore & EventLog;
  bus: EventBus;
  logger: Logger;
  metrics: Metrics;
}

interface Hook {
  config: WebhookConfig;
  filter: WebhookFilter;
  url: URL;
  agent: Agent;
  inflight: Set<number>;
}

/** Wait before attempt n+1 after n failed: base * 2^(n-1), capped, with +-20 % jitter. */
export function retryDelayMs(failedAttempts: number, baseMs: number, maxMs: number, random: () => number = Math.random): number {
  const exp = Math.min(maxMs, baseMs * 2 ** Math.min(failedAttempts - 1, 40));
  return Math.max(1, Math.min(maxMs, Math.round(exp * (0.8 + 0.4 * random()))));
}

export class WebhookDispatcher {
  readonly #deps: DispatcherDeps;
  readonly #log: Logger;
  readonly #hooks: Hook[];
  readonly #stop = new AbortController();
  readonly #running = new Set<Promise<void>>();
  readonly #rejected: MailRejectedEvent[] = [];
  readonly #outcomes;
  readonly #attempts;
  readonly #seconds;
  #db: WebhookDeliveryStore | null = null;
  #unsubscribe: (() => void) | null = null;
  #tickScheduled = false;
  #timer: NodeJS.Timeout | null = null;
  #retryTick: NodeJS.Timeout | null = null;
  #pruneTimer: NodeJS.Timeout | null = null;
  #stopping = false;
  #api: WebhooksApi | null = null;

  constructor(deps: DispatcherDeps) {
    this.#deps = deps;
    this.#log = deps.logger.child({ mod: 'webhooks' });
    this.#hooks = deps.webhooks.map((config) => {
      const url = new URL(config.url);
      return { config, filter: new WebhookFilter(config), url, agent: createAgent(url, config.concurrency), inflight: new Set<number>() };
    });
    const m = deps.metrics;
    this.#outcomes = m.counter('mailwire_webhook_deliveries_total', 'Webhook deliveries finished, by webhook and outcome', ['webhook', 'outcome']);
    this.#attempts = m.counter('mailwire_webhook_attempts_total', 'Webhook attempts, by webhook and result', ['webhook', 'result']);
    this.#seconds = m.histogram('mailwire_webhook_attempt_seconds', 'Duration of one webhook attempt', ['webhook'], [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]);
  }

  /** What the HTTP API reads; null when no webhook was ever configured (nothing stored). */
  get api(): WebhooksApi | null {
    return this.#api;
  }

  start(): void {
    if (this.#hooks.length === 0) {
      // No work when nobody listens; only tidy up after webhooks removed from the config.
      if (existsSync(deliveryStorePath(this.#deps.dataDir))) {
        const db = openWebhookDeliveryStore(this.#deps.dataDir, this.#log);
        try {
          db.forgetOthers(new Set(), Date.now());
        } finally {
          db.close();
        }
      }
      return;
    }
    const db = (this.#db = openWebhookDeliveryStore(this.#deps.dataDir, this.#log));
    this.#api = new WebhooksApi(db, this.#hooks.map((h) => h.config));
    const removed = db.forgetOthers(new Set(this.#hooks.map((h) => h.config.name)), Date.now());
    if (removed > 0) this.#log.warn({ cancelled: removed }, 'pending deliveries of webhooks no longer configured were cancelled');
    const end = this.#deps.store.lastEventSeq();
    for (const hook of this.#hooks) {
      if (db.cursor(hook.config.name) === null) db.setCursor(hook.config.name, end);
    }
    this.#prune();
    this.#pruneTimer = setInterval(() => this.#prune(), PRUNE_INTERVAL_MS).unref();
    this.#unsubscribe = this.#deps.bus.subscribe((event) => this.#onEvent(event));
    // What a previous run committed but never enqueued, then whatever is pending and due.
    this.#scheduleTick();
    this.#log.info({ webhooks: this.#hooks.map((h) => h.config.name) }, 'webhooks started');
  }

  /**
   * The lowest log seq up to which every configured webhook has considered the log (Infinity
   * without webhooks): the event log may be trimmed up to here, never past it.
   */
  lowestCursor(): number {
    const db = this.#db;
    if (this.#hooks.length === 0) return Infinity;
    if (!db) return 0;
    return Math.min(...this.#hooks.map((h) => db.cursor(h.config.name) ?? 0));
  }

  /** Aborts attempts in flight (they are not counted and run again at the next start). */
  async stop(): Promise<void> {
    this.#stopping = true;
    this.#unsubscribe?.();
    if (this.#timer) clearTimeout(this.#timer);
    if (this.#retryTick) clearTimeout(this.#retryTick);
    if (this.#pruneTimer) clearInterval(this.#pruneTimer);
    this.#stop.abort();
    await Promise.allSettled([...this.#running]);
    for (const hook of this.#hooks) hook.agent.destroy();
    this.#db?.close();
  }

  #onEvent(event: AnyEvent): void {
    if (event.type === 'mail.rejected') {
      if (!this.#hooks.some((h) => h.filter.wantsType('mail.rejected'))) return;
      if (this.#rejected.length >= MAX_REJECTED_BUFFER) {
        for (const h of this.#hooks) if (h.filter.wantsType('mail.rejected')) this.#outcomes.inc({ webhook: h.config.name, outcome: 'dropped' });
        return;
      }
      this.#rejected.push(event);
    }
    this.#scheduleTick();
  }

  /** Coalesces a burst of events into one enqueue transaction, off the publisher's stack. */
  #scheduleTick(): void {
    if (this.#tickScheduled || this.#stopping) return;
    this.#tickScheduled = true;
    setImmediate(() => {
      this.#tickScheduled = false;
      if (this.#stopping) return;
      try {
        const more = this.#enqueue();
        if (more) this.#scheduleTick();
      } catch (err) {
        // Nothing is lost: the cursors did not move and buffered rejections are kept.
        this.#log.error({ err }, 'enqueueing webhook deliveries failed; retrying shortly');
        this.#retryTick ??= setTimeout(() => {
          this.#retryTick = null;
          this.#scheduleTick();
        }, RETRY_AFTER_ERROR_MS).unref();
      }
      this.#pump();
    });
  }

  /**
   * One round of catch-up from the event log (plus buffered rejections). True if there is more.
   * A mail.deleted seen here also cancels that message's pending mail.received deliveries, in
   * the same transaction, whether or not any webhook asks for mail.deleted.
   */
  #enqueue(): boolean {
    const db = this.#db;
    if (!db) return false;
    const cursors = new Map(this.#hooks.map((h) => [h.config.name, db.cursor(h.config.name) ?? 0]));
    const from = Math.min(...cursors.values());
    const heads = this.#deps.store.eventHeadsAfter(from, CATCH_UP_BATCH);
    const items: NewDelivery[] = [];
    const deleted: string[] = [];
    for (const head of heads) {
      if (head.type === 'mail.deleted') deleted.push(head.id);
      for (const hook of this.#hooks) {
        if (head.seq > (cursors.get(hook.config.name) ?? 0) && this.#wants(hook, head.type, head.rcptTo)) {
          // mail.received is read from the store when sent (it can be MiBs); a deletion is tiny.
          const payload = head.type === 'mail.received' ? null : frame(deletedEvent(head));
          items.push({ webhook: hook.config.name, eventType: head.type, eventId: head.id, logSeq: head.seq, payload });
        }
      }
    }
    // Taken out of the buffer only once their transaction has committed: a failed enqueue
    // leaves them for the next round (the buffer stays bounded: #onEvent drops past the cap).
    const rejected = this.#rejected.slice();
    for (const event of rejected) {
      for (const hook of this.#hooks) {
        if (this.#wants(hook, event.type, event.envelope.rcptTo ?? [])) {
          items.push({ webhook: hook.config.name, eventType: event.type, eventId: event.id, logSeq: null, payload: frame(event) });
        }
      }
    }
    const last = heads[heads.length - 1]?.seq;
    const moved = new Map<string, number>();
    if (last !== undefined) for (const [name, seq] of cursors) if (seq < last) moved.set(name, last);
    if (items.length > 0 || moved.size > 0 || deleted.length > 0) {
      const caps = new Map(this.#hooks.map((h) => [h.config.name, h.config.max_pending]));
      const inflight = new Set(this.#hooks.flatMap((h) => [...h.inflight]));
      const { dropped, cancelled } = db.enqueue({ items, cursors: moved, caps, deleted, inflight }, Date.now());
      for (const [webhook, n] of dropped) {
        this.#outcomes.inc({ webhook, outcome: 'dropped' }, n);
        this.#log.warn({ webhook, dropped: n }, 'webhook queue full: oldest pending deliveries dropped');
      }
      for (const [webhook, n] of cancelled) this.#outcomes.inc({ webhook, outcome: 'cancelled' }, n);
    }
    this.#rejected.splice(0, rejected.length);
    return heads.length === CATCH_UP_BATCH;
  }

  /**
   * Whether a webhook takes an event of this type with these envelope recipients. Every event
   * type is filtered the same way: mail.deleted by the recipients of the message deleted. A
   * deletion logged before the store kept those (null) goes only to unfiltered webhooks.
   */
  #wants(hook: Hook, type: string, rcptTo: readonly string[] | null): boolean {
    if (!hook.filter.wantsType(type)) return false;
    if (rcptTo === null) return !hook.filter.filtered;
    return hook.filter.matchesRecipients(rcptTo);
  }

  /** Starts every due delivery a webhook has room for, then sleeps until the next one is due. */
  #pump(): void {
    const db = this.#db;
    if (!db || this.#stopping) return;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    try {
      this.#pumpOnce(db);
    } catch (err) {
      // The delivery store failed (locked past busy_timeout, disk full, ...): nothing is lost,
      // every pending delivery is still there; try again a little later.
      this.#log.error({ err }, 'starting webhook deliveries failed; retrying shortly');
      if (this.#timer) clearTimeout(this.#timer);
      this.#timer = setTimeout(() => this.#pump(), RETRY_AFTER_ERROR_MS).unref();
    }
  }

  #pumpOnce(db: WebhookDeliveryStore): void {
    const now = Date.now();
    let wake = Infinity;
    for (const hook of this.#hooks) {
      const free = hook.config.concurrency - hook.inflight.size;
      if (free <= 0) continue; // a finishing attempt pumps again
      const due = db.due(hook.config.name, now, free + hook.inflight.size).filter((d) => !hook.inflight.has(d.seq));
      for (const delivery of due.slice(0, free)) this.#launch(hook, delivery);
      if (hook.inflight.size < hook.config.concurrency) wake = Math.min(wake, db.nextDue(hook.config.name) ?? Infinity);
    }
    if (wake !== Infinity) {
      this.#timer = setTimeout(() => this.#pump(), Math.min(MAX_TIMER_MS, Math.max(0, wake - Date.now()))).unref();
    }
  }

  #launch(hook: Hook, delivery: Delivery): void {
    // Leased: a crash mid-attempt leaves it due shortly after the deadline, never lost. Before
    // it counts as in flight: if the store throws here, no run exists to take it out again.
    this.#db!.reschedule(delivery.seq, Date.now() + hook.config.timeout_ms + LEASE_MARGIN_MS);
    hook.inflight.add(delivery.seq);
    const run = this.#attempt(hook, delivery)
      .catch((err: unknown) => this.#log.error({ err, webhook: hook.config.name, delivery: delivery.id }, 'webhook attempt failed unexpectedly'))
      .finally(() => {
        hook.inflight.delete(delivery.seq);
        this.#running.delete(run);
        this.#pump();
      });
    this.#running.add(run);
  }

  async #attempt(hook: Hook, delivery: Delivery): Promise<void> {
    const db = this.#db!;
    const name = hook.config.name;
    const body = this.#body(delivery);
    if (body === null) {
      // Deleted before it could go: the user removed it, so it does not leave the box now.
      db.finish(delivery.seq, 'cancelled', Date.now(), DELETED_REASON);
      this.#outcomes.inc({ webhook: name, outcome: 'cancelled' });
      return;
    }
    const n = delivery.attemptCount + 1;
    const at = Date.now();
    const timestamp = Math.floor(at / 1000);
    const outcome = await send({
      url: hook.url,
      agent: hook.agent,
      body,
      timeoutMs: hook.config.timeout_ms,
      stop: this.#stop.signal,
      headers: {
        'content-type': 'application/json',
        'user-agent': `mailwire/${MAILWIRE_VERSION}`,
        'x-mailwire-event': delivery.eventType,
        'x-mailwire-delivery': delivery.id,
        'x-mailwire-attempt': String(n),
        'x-mailwire-timestamp': String(timestamp),
        'x-mailwire-signature': signPayload(hook.config.secret, timestamp, body),
      },
    });
    if (outcome.kind === 'aborted') {
      db.reschedule(delivery.seq, Date.now()); // stopping: due again at once on the next start
      return;
    }
    this.#seconds.observe({ webhook: name }, outcome.ms / 1000);
    const status = outcome.kind === 'response' ? outcome.status : null;
    const result = this.#decide(hook, delivery, n, outcome);
    this.#attempts.inc({ webhook: name, result: attemptResult(outcome) });
    db.recordAttempt(
      delivery.seq,
      {
        n,
        at,
        ms: outcome.ms,
        status,
        error: outcome.kind === 'error' ? outcome.error : status !== null && (status < 200 || status > 299) ? `HTTP ${status}` : null,
        response: outcome.kind === 'response' ? outcome.excerpt : null,
      },
      result,
    );
    if (result.status !== 'pending') this.#outcomes.inc({ webhook: name, outcome: result.status });
    this.#log.debug({ webhook: name, delivery: delivery.id, event: delivery.eventId, attempt: n, status, result: result.status }, 'webhook attempt');
  }

  #decide(hook: Hook, delivery: Delivery, n: number, outcome: Exclude<SendOutcome, { kind: 'aborted' }>): AttemptResult {
    if (outcome.kind === 'response' && outcome.status >= 200 && outcome.status <= 299) return { status: 'delivered' };
    // 410 Gone: the receiver says this will never be taken. Stop this delivery for good.
    if (outcome.kind === 'response' && outcome.status === 410) return { status: 'gone' };
    const c = hook.config;
    if (n >= c.max_attempts) return { status: 'failed' };
    const next = Date.now() + retryDelayMs(n, c.backoff_base_ms, c.backoff_max_ms);
    if (next > delivery.createdAt + c.max_age_s * 1000) return { status: 'failed' };
    return { status: 'pending', nextAttemptAt: next };
  }

  /** The request body: the frame { type, data } with the full event, as the WebSocket feed sends it. */
  #body(delivery: Delivery): Buffer | null {
    if (delivery.payload !== null) return Buffer.from(delivery.payload);
    const event = this.#deps.store.get(delivery.eventId);
    return event ? Buffer.from(frame(event)) : null;
  }

  #prune(): void {
    try {
      const removed = this.#db?.prune(Date.now() - FINISHED_RETENTION_MS, FINISHED_KEEP_PER_WEBHOOK) ?? 0;
      if (removed > 0) this.#log.debug({ removed }, 'old webhook deliveries pruned');
    } catch (err) {
      this.#log.warn({ err }, 'pruning webhook deliveries failed');
    }
  }
}

/** The public mail.deleted event of a log entry (the entry's recipients are not part of it). */
function deletedEvent(head: LogEntryHead): MailDeletedEvent {
  return { type: 'mail.deleted', version: 1, id: head.id, at: head.at };
}

function frame(event: AnyEvent): string {
  return JSON.stringify({ type: event.type, data: event });
}

function attemptResult(outcome: Exclude<SendOutcome, { kind: 'aborted' }>): string {
  if (outcome.kind === 'error') return outcome.timeout ? 'timeout' : 'network_error';
  if (outcome.status >= 200 && outcome.status <= 299) return 'success';
  return outcome.status === 410 ? 'gone' : 'http_error';
}
