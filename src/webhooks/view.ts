/** The webhooks API's answers, read from the delivery store (see src/http/webhooks.ts). */
import type { WebhookConfig } from '../config/sections/webhooks.js';
import { isMessageId } from '../events/id.js';
import { DELIVERY_STATUSES, type Delivery, type DeliveryQuery, type WebhookDeliveryStore } from '../store/webhook-deliveries.js';
import { DeliveryQueryError, type AttemptJson, type DeliveryJson, type DeliveryListQuery, type DeliveryStatus, type WebhookInfo, type WebhooksView } from './types.js';

export const DEFAULT_DELIVERY_LIMIT = 50;
/** A delivery is ~0.4 KiB of JSON: 500 is ~200 KiB per page at most. */
export const MAX_DELIVERY_LIMIT = 500;
const CURSOR_PATTERN = /^[1-9][0-9]{0,15}$/;
const NAME_PATTERN = /^[a-z0-9][a-z0-9_.-]{0,63}$/;

function iso(ms: number | null): string | null {
  return ms === null ? null : new Date(ms).toISOString();
}

export function deliveryJson(d: Delivery): DeliveryJson {
  return {
    id: d.id,
    webhook: d.webhook,
    event: { type: d.eventType, id: d.eventId },
    status: d.status,
    attemptCount: d.attemptCount,
    createdAt: new Date(d.createdAt).toISOString(),
    nextAttemptAt: d.status === 'pending' ? iso(d.nextAttemptAt) : null,
    finishedAt: iso(d.finishedAt),
    lastStatus: d.lastStatus,
    lastError: d.lastError,
  };
}

/**
 * The url's origin only, with "/…" standing for whatever follows. Tokens ride in the query
 * string and, for Slack, Discord or Teams incoming webhooks, in the path itself: the path is
 * as secret as the secret, and the API is not the config. The webhook's name tells them apart.
 */
export function displayUrl(url: string): string {
  const u = new URL(url);
  return u.pathname === '/' && u.search === '' ? u.origin : `${u.origin}/…`;
}

export class WebhooksApi implements WebhooksView {
  constructor(
    private readonly db: WebhookDeliveryStore,
    private readonly hooks: readonly WebhookConfig[],
  ) {}

  webhooks(): WebhookInfo[] {
    const counts = this.db.counts();
    return this.hooks.map((h) => {
      const c = counts.get(h.name) ?? {};
      const deliveries = Object.fromEntries(DELIVERY_STATUSES.map((s) => [s, c[s] ?? 0])) as Record<DeliveryStatus, number>;
      return {
        name: h.name,
        url: displayUrl(h.url),
        events: [...h.events],
        rcpt: [...h.rcpt],
        domains: [...h.domains],
        timeoutMs: h.timeout_ms,
        concurrency: h.concurrency,
        maxAttempts: h.max_attempts,
        maxAgeS: h.max_age_s,
        maxPending: h.max_pending,
        deliveries,
      };
    });
  }

  deliveries(query: DeliveryListQuery): { items: DeliveryJson[]; next: string | null } {
    const limit = query.limit ?? DEFAULT_DELIVERY_LIMIT;
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_DELIVERY_LIMIT) {
      throw new DeliveryQueryError(`limit must be an integer from 1 to ${MAX_DELIVERY_LIMIT}`);
    }
    const q: DeliveryQuery = { limit: limit + 1 };
    if (query.webhook !== undefined) {
      if (!NAME_PATTERN.test(query.webhook)) throw new DeliveryQueryError('webhook is not a webhook name');
      q.webhook = query.webhook;
    }
    if (query.status !== undefined) {
      if (!DELIVERY_STATUSES.includes(query.status)) throw new DeliveryQueryError(`status must be one of ${DELIVERY_STATUSES.join(', ')}`);
      q.status = query.status;
    }
    if (query.event !== undefined) {
      if (!/^mail\.[a-z]{1,32}$/.test(query.event)) throw new DeliveryQueryError('event must be an event type such as mail.received');
      q.eventType = query.event;
    }
    if (query.eventId !== undefined) {
      if (!isMessageId(query.eventId)) throw new DeliveryQueryError('message must be a message id');
      q.eventId = query.eventId;
    }
    if (query.before !== undefined) {
      const seq = CURSOR_PATTERN.test(query.before) ? Number(query.before) : NaN;
      if (!Number.isSafeInteger(seq)) throw new DeliveryQueryError('before is not a cursor this server handed out');
      q.before = seq;
    }
    const rows = this.db.list(q);
    const page = rows.slice(0, limit);
    const last = page[page.length - 1];
    return { items: page.map(deliveryJson), next: rows.length > limit && last ? String(last.seq) : null };
  }

  delivery(id: string): (DeliveryJson & { attempts: AttemptJson[] }) | null {
    if (!isMessageId(id)) return null;
    const found = this.db.get(id);
    if (!found) return null;
    return {
      ...deliveryJson(found.delivery),
      attempts: found.attempts.map((a) => ({ n: a.n, at: new Date(a.at).toISOString(), ms: a.ms, status: a.status, error: a.error, response: a.response })),
    };
  }
}
