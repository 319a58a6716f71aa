/**
 * `webhooks:` in mailwire.yml: a list of HTTP endpoints each event is POSTed to (src/webhooks/).
 * Every key is per webhook, so one slow or chatty receiver can be tuned without touching others.
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';

/** The event types a webhook may ask for (see src/events/types.ts). */
export const WEBHOOK_EVENT_TYPES = ['mail.received', 'mail.deleted', 'mail.rejected'] as const;

const NAME_PATTERN = /^[a-z0-9][a-z0-9_.-]{0,63}$/;
// A domain as it appears after the @ of an address: labels of letters, digits and hyphens
// (IDNs in their A-label form); address literals are not supported here.
const DOMAIN_PATTERN = /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/i;

function urlProblem(value: string): string | null {
  if (!URL.canParse(value)) return 'must be an absolute http:// or https:// URL';
  const url = new URL(value);
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return 'must be an http:// or https:// URL';
  // fetch() refuses URLs with credentials, and they would show up in logs and the API:
  // receivers authenticate requests by the signature instead.
  if (url.username !== '' || url.password !== '') return 'must not contain a user name or password (the signature authenticates requests)';
  if (url.hash !== '') return 'must not contain a #fragment';
  return null;
}

export const webhookSchema = z
  .object({
    // The webhook's name in the API, the metrics and the delivery records. Pending deliveries
    // are tied to it across restarts, so give one if the url may change. Default: the url's
    // host and a short hash of the url (stable while the url is).
    name: z.string().regex(NAME_PATTERN, 'lower-case letters, digits, ".", "_" and "-", at most 64, starting with a letter or digit').optional(),
    url: z.string().superRefine((value, ctx) => {
      const problem = urlProblem(value);
      if (problem) ctx.addIssue({ code: 'custom', message: problem });
    }),
    // HMAC-SHA256 key for X-Mailwire-Signature. 16 characters is the least that resists
    // guessing (~95 bits from a random printable string; use `openssl rand -hex 32`).
    // 1024 bounds what a typo (a pasted file) puts in memory and in every HMAC.
    secret: z.string().min(16, 'must be at least 16 characters (try: openssl rand -hex 32)').max(1024),
    events: z.array(z.enum(WEBHOOK_EVENT_TYPES)).min(1).default(['mail.received']),
    // Only events for these envelope recipients / recipient domains (either list matching is
    // enough). Both empty: every event. Bounded: each event is checked against every entry.
    rcpt: z.array(z.string().min(3).max(256).regex(/^[^@\s]+@[^@\s]+$/, 'must be an address (local@domain)')).max(1000).default([]),
    domains: z.array(z.string().regex(DOMAIN_PATTERN, 'must be a domain name (example.org)')).max(1000).default([]),
    // Deadline for one attempt, response headers and (bounded) body included. Receivers
    // should answer at once and work later; 10 s is GitHub's figure. A hung receiver then
    // holds one of `concurrency` slots for at most this long.
    timeout_ms: z.number().int().min(100).max(120_000).default(10_000),
    // Attempts in flight at once for this webhook: bounds sockets and memory per receiver.
    concurrency: z.number().int().min(1).max(64).default(4),
    // Retries: wait backoff_base_ms, then twice that, ... up to backoff_max_ms between attempts
    // (with +-20 % jitter, so a receiver coming back is not hit by every delivery at once).
    // The defaults retry for about 20 hours (5 s, 10 s, ... then hourly; 30 attempts), then fail.
    // Exponential so a receiver that is down briefly gets its events soon, and one down for
    // hours is not hammered; the cap keeps an hourly check going.
    backoff_base_ms: z.number().int().min(1).max(3_600_000).default(5_000),
    backoff_max_ms: z.number().int().min(1).max(24 * 3_600_000).default(3_600_000),
    max_attempts: z.number().int().min(1).max(100).default(30),
    // No retry is scheduled after this age: an event a day old is rarely worth sending.
    max_age_s: z.number().int().min(1).max(30 * 86_400).default(86_400),
    // Pending deliveries kept for this webhook. A receiver down for days while mail keeps coming
    // would otherwise grow the queue without end; past the cap the oldest pending delivery
    // fails with "queue full". A row is ~200 bytes (the event itself stays in the store), so
    // 10 000 is ~2 MB, and about a day of mail at one message every 9 seconds.
    max_pending: z.number().int().min(1).max(1_000_000).default(10_000),
  })
  .strict()
  .refine((w) => w.backoff_base_ms <= w.backoff_max_ms, { message: 'backoff_base_ms must not exceed backoff_max_ms', path: ['backoff_base_ms'] })
  .transform((w) => ({
    ...w,
    name: w.name ?? defaultName(w.url),
    rcpt: w.rcpt.map((r) => r.toLowerCase()),
    domains: w.domains.map((d) => d.toLowerCase()),
  }));

/** `<host>-<8 hex of sha256(url)>`: readable, and stable while the url does not change. */
export function defaultName(url: string): string {
  const host = new URL(url).hostname.replace(/^\[|\]$/g, '').replace(/[^a-z0-9_.-]/g, '-');
  const hash = createHash('sha256').update(url).digest('hex').slice(0, 8);
  return `${host.slice(0, 55)}-${hash}`.replace(/^[^a-z0-9]+/, '');
}

export const webhooksSchema = z
  .array(webhookSchema)
  // Each webhook is a timer, a few sockets and a filter run per event; 50 is far beyond any
  // real setup and keeps the per-event work small.
  .max(50)
  .superRefine((hooks, ctx) => {
    const seen = new Set<string>();
    hooks.forEach((w, i) => {
      if (seen.has(w.name)) {
        ctx.addIssue({ code: 'custom', message: `webhook name ${w.name} is used twice; give each webhook its own name`, path: [i, 'name'] });
      }
      seen.add(w.name);
    });
  })
  .default([]);

export type WebhookConfig = z.output<typeof webhookSchema>;
