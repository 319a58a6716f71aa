/**
 * The Haineko mailer: POSTs the submission, for one recipient, to another Haineko-compatible
 * /submit (another mailwire or a Haineko) and reports that server's answer for the recipient.
 * The loop header travels in `header.x-haineko-loop`, as between Haineko servers.
 */
import { cannotConnect, MAX_REPLY_LINE_CHARS, MAX_REPLY_LINES } from './reply.js';
import type { Delivery, ResponseEntry } from './types.js';

// Haineko's default port.
const DEFAULT_PORT = 2794;
// The answer is one small JSON document (a few hundred bytes per recipient). The body is read
// as it arrives and the connection dropped past this, so a broken or hostile upstream cannot
// make us buffer an endless response.
export const MAX_RESPONSE_BYTES = 1024 * 1024;

/** The body, or null once it grows past `max` bytes (the caller then aborts the request). */
async function readBounded(res: Response, max: number): Promise<string | null> {
  const declared = Number(res.headers.get('content-length'));
  if (Number.isFinite(declared) && declared > max) return null;
  if (!res.body) return '';
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > max) {
      await reader.cancel().catch(() => undefined);
      return null;
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** A string field of the upstream's entry, only if it has the expected shape. */
function field(v: unknown, shape: RegExp): string | null {
  return typeof v === 'string' && shape.test(v) ? v : null;
}

export function hainekoUrl(d: Delivery): string {
  const url = d.route.options['url'];
  if (typeof url === 'string' && url.length > 0) return url;
  const host = d.route.host.includes(':') ? `[${d.route.host}]` : d.route.host;
  return `http://${host}:${d.route.port || DEFAULT_PORT}/submit`;
}

export async function deliverToHaineko(d: Delivery): Promise<ResponseEntry> {
  const where = { host: d.route.host, port: d.route.port, mailer: 'Haineko' };
  if (!d.message.json) return { ...cannotConnect(where, d.rcpt, 'the Haineko mailer relays only /submit requests'), code: 554, dsn: '5.3.3', command: 'DATA' };
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  const cred = d.route.credentials;
  if (cred) headers['authorization'] = `Basic ${Buffer.from(`${cred.username}:${cred.password}`).toString('base64')}`;
  // The route's timeout bounds the whole exchange, the body included; abort() also drops the
  // connection when the body is too large.
  const abort = new AbortController();
  const signal = AbortSignal.any([abort.signal, AbortSignal.timeout(d.route.timeoutMs)]);
  let res: Response;
  try {
    res = await fetch(hainekoUrl(d), {
      method: 'POST',
      headers,
      // The envelope sender as the route has it (a hook's setSender included), not the request's.
      body: JSON.stringify({ ...d.message.json, mail: d.sender, rcpt: [d.rcpt] }),
      signal,
      redirect: 'error',
    });
  } catch (err) {
    return cannotConnect(where, d.rcpt, (err as Error).message);
  }
  let body: unknown = null;
  try {
    const text = await readBounded(res, MAX_RESPONSE_BYTES);
    if (text === null) {
      abort.abort();
      return { ...cannotConnect(where, d.rcpt, `HTTP ${res.status}: response larger than ${MAX_RESPONSE_BYTES / 1024 / 1024} MiB, dropped`), command: 'DATA' };
    }
    body = JSON.parse(text);
  } catch (err) {
    // A timeout while reading is a failed exchange; broken JSON is handled below as "no response".
    if (signal.aborted) return { ...cannotConnect(where, d.rcpt, (err as Error).message), command: 'DATA' };
    body = null;
  }
  const list = (body as { response?: unknown } | null)?.response;
  const entries = Array.isArray(list) ? (list as Record<string, unknown>[]) : [];
  const mine = entries.find((e) => typeof e?.['rcpt'] === 'string' && (e['rcpt'] as string).toLowerCase() === d.rcpt.toLowerCase()) ?? entries[0];
  if (!mine) return { ...cannotConnect(where, d.rcpt, `HTTP ${res.status} without a Haineko response`), command: 'DATA' };
  // Only plain values are converted: String() of a parsed {"toString": 1} would throw.
  const rawCode = typeof mine['code'] === 'string' ? Number(mine['code']) : mine['code'];
  const code = typeof rawCode === 'number' && Number.isInteger(rawCode) && rawCode >= 0 && rawCode <= 999 ? rawCode : 0;
  // Echoed to our client: capped as an SMTP reply is (reply.ts).
  const message = Array.isArray(mine['message'])
    ? (mine['message'] as unknown[])
        .slice(0, MAX_REPLY_LINES)
        .map((l) => (typeof l === 'string' || typeof l === 'number' ? String(l) : '').slice(0, MAX_REPLY_LINE_CHARS))
    : [];
  return {
    dsn: field(mine['dsn'], /^[245]\.\d{1,3}\.\d{1,3}$/),
    code,
    host: d.route.host,
    port: d.route.port,
    rcpt: d.rcpt,
    error: mine['error'] === 1 || mine['error'] === '1' || code >= 400 ? 1 : 0,
    mailer: 'Haineko',
    command: field(mine['command'], /^[A-Z]{1,16}$/) ?? 'DATA',
    message,
  };
}
