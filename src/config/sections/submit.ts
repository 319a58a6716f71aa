/** `submit:` in mailwire.yml: limits of the Haineko-compatible POST /submit (src/submit/, src/relay/). */
import { z } from 'zod';

const MiB = 1024 * 1024;

export const submitSettingsSchema = z
  .object({
    // Bytes of the message content (body, HTML part and decoded attachments), counted in bytes,
    // not characters (Haineko counted characters, so 4 MiB of Japanese text was 12 MiB).
    // 4 MiB: transactional mail is small; bigger files belong behind a link. The HTTP body limit
    // of /submit is derived from it (JSON escaping and base64 make the request larger).
    max_message_size: z.number().int().positive().max(64 * MiB).default(4 * MiB),
    // Haineko's default: /submit is for transactional mail to a few people; a long list in
    // one request is a mass mailing, and each recipient is a transaction upstream.
    max_rcpts_per_message: z.number().int().positive().max(1000).default(4),
    // Deliveries of one request running at once, and connections per upstream pool. Bounds the
    // sockets one HTTP request can open; every recipient is still delivered.
    max_workers: z.number().int().positive().max(64).default(4),
    // POST /submit requests admitted and not yet answered (reading the body, relaying). Each
    // may buffer up to 3 x max_message_size + 64 KiB of body and hold max_workers upstream
    // connections: 8 (twice the default max_workers) keeps the worst case near 100 MiB with
    // the defaults, while a burst of small requests still overlaps. Beyond it, requests wait.
    max_concurrent: z.number().int().positive().max(1000).default(8),
    // Requests waiting for one of those slots, first come first served, before their body is
    // read (a waiting request costs a socket, not a buffer). 256 absorbs a burst from a busy
    // app server; beyond it, or after queue_wait seconds in line, 503 with Retry-After.
    max_queued: z.number().int().nonnegative().max(10_000).default(256),
    // Seconds a request may wait for a slot. The wait counts against the 30 s the HTTP server
    // gives a client to send its whole request, so at most 20 s leaves time for the body; 10 s
    // rides out a burst, and the client gets a clear 503 rather than a timeout of its own.
    queue_wait: z.number().positive().max(20).default(10),
    // Haineko's `-A`: every request must carry valid Basic credentials (config/password),
    // even from relayhosts. Off: credentials are checked when sent, relayhosts need none.
    require_auth: z.boolean().default(false),
    // The name this server adds to the loop header (X-Haineko-Loop); a message that already
    // carries it is refused. null: smtp.hostname, else the machine's host name.
    servername: z.string().min(1).regex(/^[A-Za-z0-9._-]+$/, 'a host name').nullable().default(null),
  })
  .strict();

export const submitSchema = submitSettingsSchema.default(submitSettingsSchema.parse({}));
export type SubmitConfig = z.infer<typeof submitSettingsSchema>;
