/** Small helpers for POST /submit tests. */
import { hashPassword } from '../../src/auth/ssha.js';
import type { ResponseEntry } from '../../src/relay/types.js';

export interface SubmitAnswer {
  status: number;
  headers: Headers;
  json: {
    queueid: string;
    referer: string;
    useragent: string | null;
    remoteaddr: string;
    remoteport: number;
    addresser: string | null;
    recipient: string[];
    timestamp: { datetime: string; unixtime: number };
    response: ResponseEntry[];
  };
}

/**
 * The tables most /submit tests run with: everything to the test sink over ESMTP, recipients
 * at example.org (or `recipients`, a recipients table), and the user haineko / kijitora.
 */
export function submitTables(sinkPort: number, recipients = "domainpart: [ 'example.org' ]\n"): Record<string, string> {
  return {
    mailertable: `default: { mailer: ESMTP, host: 127.0.0.1, port: ${sinkPort} }\n`,
    recipients,
    password: `haineko: '${hashPassword('kijitora')}'\n`,
  };
}

export async function postSubmit(baseUrl: string, body: unknown, headers: Record<string, string> = {}): Promise<SubmitAnswer> {
  const res = await fetch(`${baseUrl}/submit`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
    signal: AbortSignal.timeout(20_000),
  });
  return { status: res.status, headers: res.headers, json: (await res.json()) as SubmitAnswer['json'] };
}

/** A valid request; override fields per test. */
export function mail(over: Record<string, unknown> = {}, header: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    ehlo: 'client.example.jp',
    mail: 'kijitora@example.jp',
    rcpt: ['mikeneko@example.org'],
    header: { from: 'Kijitora <kijitora@example.jp>', subject: 'About next meeting', ...header },
    body: 'Next meeting opens at midnight on next thursday',
    ...over,
  };
}

/** The entry /submit gives for a catalogued reply: host, port, mailer null. */
export function reply(code: number, dsn: string | null, command: string, message: string, rcpt: string | null = null): ResponseEntry {
  return { dsn, code, host: null, port: null, rcpt, error: code >= 400 ? 1 : 0, mailer: null, command, message: [message] };
}
