/** What the HTTP API reads about webhooks (src/http/webhooks.ts); the dispatcher provides it. */
import type { DeliveryStatus } from '../store/webhook-deliveries.js';

export type { DeliveryStatus };

/** A configured webhook as the API shows it: never the secret. */
export interface WebhookInfo {
  name: string;
  /** Its origin only ("https://hooks.slack.com/…"): path and query often carry a token. */
  url: string;
  events: string[];
  rcpt: string[];
  domains: string[];
  timeoutMs: number;
  concurrency: number;
  maxAttempts: number;
  maxAgeS: number;
  maxPending: number;
  /** Stored deliveries by status (finished ones are pruned after a while; see docs/webhooks.md). */
  deliveries: Record<DeliveryStatus, number>;
}

export interface DeliveryJson {
  id: string;
  webhook: string;
  event: { type: string; id: string };
  status: DeliveryStatus;
  attemptCount: number;
  createdAt: string;
  /** When the next attempt is due (pending only); while an attempt is in flight, its deadline. */
  nextAttemptAt: string | null;
  finishedAt: string | null;
  /** The last attempt's HTTP status; null if it got no response. */
  lastStatus: number | null;
  lastError: string | null;
}

export interface AttemptJson {
  n: number;
  at: string;
  ms: number;
  status: number | null;
  error: string | null;
  response: string | null;
}

export interface DeliveryListQuery {
  webhook?: string;
  status?: DeliveryStatus;
  event?: string;
  /** A message (or event) id: the deliveries of that one event. */
  eventId?: string;
  limit?: number;
  before?: string;
}

export interface WebhooksView {
  webhooks(): WebhookInfo[];
  /** Newest first. Throws DeliveryQueryError for a bad limit or cursor. */
  deliveries(query: DeliveryListQuery): { items: DeliveryJson[]; next: string | null };
  delivery(id: string): (DeliveryJson & { attempts: AttemptJson[] }) | null;
}

export class DeliveryQueryError extends Error {
  override name = 'DeliveryQueryError';
}
