/**
 * What the relay mailers take and give back. A delivery is one recipient in its own
 * transaction (as Haineko did), so each result carries that recipient's own final reply.
 */
import type { Route } from '../routing/types.js';

/**
 * One entry of a Haineko /submit `response[]`: every key is always present, so clients can
 * read them without checking. `error` is 0 or 1, as Haineko sends it.
 */
export interface ResponseEntry {
  dsn: string | null;
  code: number;
  host: string | null;
  port: number | null;
  rcpt: string | null;
  error: 0 | 1;
  mailer: string | null;
  command: string;
  message: string[];
}

/** The message a mailer sends: the same content for every recipient, built once. */
export interface OutboundMessage {
  /** The 16-character queue id of the submission (also in Received: and Message-Id). */
  queueid: string;
  /** The RFC 5322 bytes for one recipient (the To: header names that recipient). */
  raw(rcpt: string): Buffer;
  /**
   * The submission as Haineko JSON, for the Haineko mailer (it forwards the request, not the
   * MIME bytes), or null when the message did not come from /submit (the SMTP relay path).
   */
  json: Record<string, unknown> | null;
}

export interface Delivery {
  sender: string;
  rcpt: string;
  route: Route;
  message: OutboundMessage;
}

/** A mailer delivers one recipient and reports the outcome as a value, never by throwing. */
export type Mailer = (delivery: Delivery) => Promise<ResponseEntry>;
