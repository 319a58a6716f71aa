/** Turns an upstream SMTP reply (or a failure to get one) into a Haineko response entry. */
import type { ResponseEntry } from './types.js';

// A reply line is echoed back to the HTTP client; an upstream that sends pages of text
// should not make our JSON answer huge.
export const MAX_REPLY_LINES = 10;
export const MAX_REPLY_LINE_CHARS = 512;

/**
 * Haineko's Response->p(): the code and enhanced status code are read from the reply text
 * (`550 5.1.1 <x@y>: User unknown`), each line is kept with CR/LF and edge spaces removed.
 */
export function entryFromReply(
  reply: string,
  where: { host: string | null; port: number | null; rcpt: string; mailer: string; command: string; code?: number },
): ResponseEntry {
  const lines = reply
    .split(/\r?\n/)
    .map((l) => l.trim().slice(0, MAX_REPLY_LINE_CHARS))
    .filter((l) => l.length > 0)
    .slice(0, MAX_REPLY_LINES);
  let code = where.code ?? 0;
  let dsn: string | null = null;
  for (const line of lines) {
    const c = /^([2345]\d\d)[ -]/.exec(line) ?? /\b([2345]\d\d)\b/.exec(line);
    if (c && !where.code) code = Number(c[1]);
    const d = /\b([245]\.\d{1,3}\.\d{1,3})\b/.exec(line);
    if (d) dsn = d[1]!;
  }
  const error = (code >= 400 && code < 600) || (dsn !== null && /^[45]/.test(dsn)) ? 1 : 0;
  return { dsn, code, host: where.host, port: where.port, rcpt: where.rcpt, error, mailer: where.mailer, command: where.command, message: lines };
}

/** Upstream unreachable (refused, timed out, TLS failed before a reply): Haineko's conn/cannot-connect. */
export function cannotConnect(route: { host: string | null; port: number | null; mailer: string }, rcpt: string, detail?: string): ResponseEntry {
  const message = ['Cannot connect SMTP Server'];
  if (detail) message.push(detail.slice(0, MAX_REPLY_LINE_CHARS));
  return { dsn: null, code: 421, host: route.host, port: route.port, rcpt, error: 1, mailer: route.mailer, command: 'CONN', message };
}
