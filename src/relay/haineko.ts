/**
 * The Haineko mailer: POSTs the submission, for one recipient, to another Haineko-compatible
 * /submit (another mailwire or a Haineko) and reports that server's answer for the recipient.
 * The loop header travels in `header.x-haineko-loop`, as between Haineko servers.
 */
import { cannotConnect } from './reply.js';
import type { Delivery, ResponseEntry } from './types.js';

// Haineko's default port.
const DEFAULT_PORT = 2794;

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
  let res: Response;
  try {
    res = await fetch(hainekoUrl(d), {
      method: 'POST',
      headers,
      body: JSON.stringify({ ...d.message.json, rcpt: [d.rcpt] }),
      signal: AbortSignal.timeout(d.route.timeoutMs),
      redirect: 'error',
    });
  } catch (err) {
    return cannotConnect(where, d.rcpt, (err as Error).message);
  }
  let body: unknown;
  try {
    // The answer is one small JSON document; a huge or broken one is the upstream's fault.
    const text = await res.text();
    body = text.length <= 1024 * 1024 ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  const list = (body as { response?: unknown } | null)?.response;
  const entries = Array.isArray(list) ? (list as Record<string, unknown>[]) : [];
  const mine = entries.find((e) => typeof e?.['rcpt'] === 'string' && (e['rcpt'] as string).toLowerCase() === d.rcpt.toLowerCase()) ?? entries[0];
  if (!mine) return { ...cannotConnect(where, d.rcpt, `HTTP ${res.status} without a Haineko response`), command: 'DATA' };
  const code = typeof mine['code'] === 'number' ? mine['code'] : Number(mine['code']) || 0;
  const message = Array.isArray(mine['message']) ? (mine['message'] as unknown[]).map(String).slice(0, 10) : [];
  return {
    dsn: typeof mine['dsn'] === 'string' ? mine['dsn'] : null,
    code,
    host: d.route.host,
    port: d.route.port,
    rcpt: d.rcpt,
    error: mine['error'] === 1 || mine['error'] === '1' || code >= 400 ? 1 : 0,
    mailer: 'Haineko',
    command: typeof mine['command'] === 'string' ? mine['command'] : 'DATA',
    message,
  };
}
