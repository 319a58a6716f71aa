/**
 * The ESMTP mailer: nodemailer with pooled connections per upstream. Each recipient is its own
 * transaction (MAIL, one RCPT, DATA), so the reply reported for a recipient is the upstream's
 * answer to the end of DATA for that recipient, not to QUIT (a Haineko defect).
 */
import nodemailer from 'nodemailer';
import type { Transporter } from 'nodemailer';
import type { Route } from '../routing/types.js';
import { cannotConnect, entryFromReply } from './reply.js';
import type { Delivery, ResponseEntry } from './types.js';
import { Slots } from '../util/slots.js';

// Distinct upstreams (host, port, TLS, credentials) kept open at once. A mailertable names a
// handful; the bound only matters if routes churn, and the oldest pool is closed to make room.
const MAX_POOLS = 32;
// Messages per pooled connection before it is recycled (nodemailer's default): long-lived
// sessions are what upstreams rate-limit and time out.
const MAX_MESSAGES_PER_CONNECTION = 100;
// retry, sleep and timeout are used as the route gives them: their bounds are the table
// schema's (routing/tables.ts), so a value the loader accepts is a value that is honoured.

export interface EsmtpOptions {
  /** Our name in EHLO. */
  hostname: string;
  /** Connections per upstream pool (the submit section's max_workers). */
  maxConnections: number;
}

/** nodemailer error fields we read (it attaches them to Error objects). */
interface SmtpError {
  code?: string;
  response?: string;
  responseCode?: number;
  command?: string;
  message?: string;
}

const COMMANDS: Record<string, string> = { 'MAIL FROM': 'MAIL', 'RCPT TO': 'RCPT', DATA: 'DATA', CONN: 'CONN', EHLO: 'EHLO', HELO: 'EHLO', STARTTLS: 'STARTTLS' };

function commandName(cmd: string | undefined): string {
  if (!cmd) return 'CONN';
  if (cmd.startsWith('AUTH')) return 'AUTH';
  return COMMANDS[cmd] ?? cmd.split(' ')[0]!.toUpperCase();
}

/** `tls_verify: false` in a mailertable entry accepts an upstream's self-signed certificate. */
export function tlsVerify(route: Route): boolean {
  return route.options['tls_verify'] !== false;
}

/** A pooled transport and the slots for its connections (a message waits for one outside its deadline). */
interface Pool {
  transport: Transporter;
  slots: Slots;
}

export class EsmtpMailer {
  readonly #pools = new Map<string, Pool>();

  constructor(private readonly opts: EsmtpOptions) {}

  async deliver(d: Delivery): Promise<ResponseEntry> {
    const pool = this.#pool(d.route);
    return (await sendWithRetry(d, 'ESMTP', () => pool.transport, pool.slots)).entry;
  }

  #pool(route: Route): Pool {
    const cred = route.credentials;
    const key = JSON.stringify([route.host, route.port, route.starttls, tlsVerify(route), route.timeoutMs, cred?.username ?? null, cred?.password ?? null]);
    const existing = this.#pools.get(key);
    if (existing) {
      // Map order is insertion order: re-inserting keeps the most recently used last.
      this.#pools.delete(key);
      this.#pools.set(key, existing);
      return existing;
    }
    if (this.#pools.size >= MAX_POOLS) {
      const [oldKey, oldest] = this.#pools.entries().next().value as [string, Pool];
      this.#pools.delete(oldKey);
      oldest.transport.close();
    }
    const transport = nodemailer.createTransport({
      pool: true,
      maxConnections: this.opts.maxConnections,
      maxMessages: MAX_MESSAGES_PER_CONNECTION,
      ...smtpOptions(route, this.opts.hostname),
    });
    // The waiting line is bounded by the requests (submit.max_concurrent x max_workers).
    const pool = { transport, slots: new Slots(this.opts.maxConnections, Number.MAX_SAFE_INTEGER) };
    this.#pools.set(key, pool);
    return pool;
  }

  close(): void {
    for (const p of this.#pools.values()) p.transport.close();
    this.#pools.clear();
  }
}

/** Connection options shared by the pooled ESMTP mailer and the MX mailer. */
export function smtpOptions(route: Route, hostname: string, opportunisticTls = false) {
  return {
    host: route.host,
    port: route.port,
    secure: false,
    name: hostname,
    // starttls: true insists on TLS (no AUTH or mail in clear); false talks plain SMTP as
    // Haineko did, unless the caller asks for opportunistic TLS (MX delivery) or the route has
    // credentials: those never go out in clear to an upstream that offers STARTTLS (Haineko
    // sent them so; routing.ts warns about such a route at load).
    requireTLS: route.starttls,
    ignoreTLS: !route.starttls && !opportunisticTls && !route.credentials,
    tls: { rejectUnauthorized: route.starttls ? tlsVerify(route) : false, minVersion: 'TLSv1.2' as const },
    ...(route.credentials ? { auth: { user: route.credentials.username, pass: route.credentials.password } } : {}),
    connectionTimeout: route.timeoutMs,
    greetingTimeout: route.timeoutMs,
    socketTimeout: route.timeoutMs,
    // The raw message is bytes we built; never let nodemailer read files or URLs.
    disableFileAccess: true,
    disableUrlAccess: true,
    logger: false,
  };
}

/**
 * The outcome of a delivery. `uncertain`: the attempt's deadline passed with the transaction
 * perhaps past the final dot, so the upstream may have the message: it is reported as a
 * temporary failure but neither retried nor sent to another exchanger (a duplicate otherwise).
 */
export interface SendResult {
  entry: ResponseEntry;
  uncertain: boolean;
}

/** One transaction per recipient, with the route's retries for connection failures and 4xx. */
export async function sendWithRetry(d: Delivery, mailer: string, transport: () => Transporter, slots: Slots | null = null): Promise<SendResult> {
  const retries = Math.max(0, d.route.retry);
  let result: SendResult = { entry: cannotConnect(d.route, d.rcpt), uncertain: false };
  for (let attempt = 0; attempt <= retries; attempt++) {
    if (attempt > 0) await new Promise((r) => setTimeout(r, d.route.sleepMs));
    result = await sendOnce(d, mailer, transport(), slots);
    // Permanent answers and successes are final; connection failures and 4xx may pass.
    if (result.uncertain || result.entry.code < 400 || result.entry.code >= 500) break;
  }
  return result;
}

async function sendOnce(d: Delivery, mailer: string, transport: Transporter, slots: Slots | null): Promise<SendResult> {
  const where = { host: d.route.host, port: d.route.port, rcpt: d.rcpt, mailer };
  // A pooled transport queues messages beyond its connections; waiting for one here instead
  // keeps that wait out of the attempt's deadline (a busy pool is not a dead upstream).
  const release = slots ? await slots.acquire(Math.max(d.route.timeoutMs * 10, 60_000)) : () => {};
  if (!release) return { entry: cannotConnect(where, d.rcpt, 'no free connection to the upstream in time'), uncertain: false };
  // One overall deadline per attempt, the route's timeout: nodemailer's own timeouts are per
  // step and restart on every byte, so an upstream trickling its reply would never hit them.
  // On abort nodemailer closes only the connection carrying this message, not the pool.
  const deadline = AbortSignal.timeout(d.route.timeoutMs);
  try {
    const info = (await transport.sendMail({ envelope: { from: d.sender, to: [d.rcpt] }, raw: d.message.raw(d.rcpt), signal: deadline })) as { response?: string };
    return { entry: entryFromReply(info.response ?? '250 2.0.0 OK', { ...where, command: 'DATA' }), uncertain: false };
  } catch (err) {
    // The transaction may have been anywhere (even past the final dot): a temporary failure.
    if (deadline.aborted) return { entry: cannotConnect(where, d.rcpt, `ETIMEDOUT: no final reply within the route's timeout (${d.route.timeoutMs / 1000} s)`), uncertain: true };
    const e = err as SmtpError;
    if (e.response && e.responseCode) return { entry: entryFromReply(e.response, { ...where, command: commandName(e.command), code: e.responseCode }), uncertain: false };
    return { entry: cannotConnect(where, d.rcpt, e.code ? `${e.code}: ${e.message ?? ''}`.trim() : undefined), uncertain: false };
  } finally {
    release();
  }
}
