/** `http.feed:` in mailwire.yml: the WebSocket event feed /api/v1/events (src/ws/). */
import { z } from 'zod';

const MiB = 1024 * 1024;

const feedSectionSchema = z
  .object({
    // Open feed sockets at once; more get 503 on the upgrade. Each costs a file descriptor
    // and a little memory; a live frame is one buffer shared by every client, so 1000 clients
    // (the 500 of the benchmark, twice over) cost far less than 1000 copies of the mail.
    max_clients: z.number().int().positive().max(100_000).default(1000),
    // Of those, from one client address (an IPv6 client by its /64): one misbehaving script
    // or a flood from one host cannot take every slot. 100 is far more tabs than a person
    // opens, and leaves room for an office behind one NAT address.
    max_clients_per_ip: z.number().int().positive().max(100_000).default(100),
    // A client whose unsent data is above this when the next frame is due is dropped (close
    // 1008) instead of buffering without end: a stalled browser tab must not grow the server's
    // memory or slow the feed for others. 4 MiB holds over a thousand typical events, so a
    // client that merely hiccups is not dropped; it is the bound per client, plus one frame.
    max_buffered_bytes: z.number().int().min(1024).max(256 * MiB).default(4 * MiB),
    // A ping this often; a client that has not answered the previous one is cut off. Finds
    // half-open connections (a laptop that went to sleep) that would otherwise hold a slot
    // and a buffer forever. 30 s is well under the idle timeouts of common proxies (60 s).
    heartbeat_ms: z.number().int().min(100).max(600_000).default(30_000),
  })
  .strict();

export const feedSchema = feedSectionSchema.default(feedSectionSchema.parse({}));

export type FeedConfig = z.infer<typeof feedSectionSchema>;
