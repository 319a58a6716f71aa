/**
 * Route lookup, in Haineko's order: mailertable by the recipient's domain, then sendermt by
 * the sender's domain, then mailertable `default`, then the built-in default. An entry with
 * `disabled: 1` is skipped as if it were not there (the next lookup decides), as in Haineko.
 *
 * The built-in default differs from Haineko's (ESMTP to 127.0.0.1:25): mailwire never sends
 * mail anywhere nobody configured, so without a mailertable `default` the route is Discard,
 * and createRouting() says so in a warning at start.
 */
import { splitAddress } from '../policy/address.js';
import type { AuthinfoTable, MailerTable, RouteEntry } from './tables.js';
import type { MailerName, Route } from './types.js';

const DEFAULT_PORT: Record<MailerName, number> = { ESMTP: 25, MX: 25, Haineko: 2794, File: 0, Screen: 0, Discard: 0 };
// Haineko's File mailer writes into `host` as a directory, /tmp when unset.
const DEFAULT_HOST: Record<MailerName, string> = { ESMTP: '127.0.0.1', MX: '', Haineko: '127.0.0.1', File: '/tmp', Screen: '', Discard: '' };
// Haineko's defaults: 59 s for SMTP-speaking mailers, 60 s for the others, 5 s between retries.
const DEFAULT_TIMEOUT_S: Record<MailerName, number> = { ESMTP: 59, MX: 59, Haineko: 59, File: 60, Screen: 60, Discard: 60 };
const DEFAULT_SLEEP_S = 5;

export const BUILTIN_DEFAULT_SOURCE = 'builtin:default';

export interface RouteTables {
  mailertable: MailerTable;
  sendermt: MailerTable;
  authinfo: AuthinfoTable;
}

/** A table with its domain keys normalised (lower case, IDNA), built once per (re)load. */
export function indexByDomain(table: MailerTable, normalize: (d: string) => string | null): Map<string, RouteEntry> {
  const out = new Map<string, RouteEntry>();
  for (const [key, entry] of Object.entries(table)) {
    if (!entry) continue;
    const domain = key === 'default' ? key : normalize(key);
    if (domain) out.set(domain, entry);
  }
  return out;
}

export interface IndexedTables {
  mailertable: Map<string, RouteEntry>;
  sendermt: Map<string, RouteEntry>;
  authinfo: AuthinfoTable;
}

export function resolveRoute(tables: IndexedTables, rcpt: string, sender: string): Route {
  const rcptDomain = splitAddress(rcpt)?.domain;
  const senderDomain = sender ? splitAddress(sender)?.domain : undefined;
  const candidates: Array<[string, RouteEntry | undefined]> = [
    [`mailertable:${rcptDomain}`, rcptDomain && rcptDomain !== 'default' ? tables.mailertable.get(rcptDomain) : undefined],
    [`sendermt:${senderDomain}`, senderDomain && senderDomain !== 'default' ? tables.sendermt.get(senderDomain) : undefined],
    ['mailertable:default', tables.mailertable.get('default')],
  ];
  for (const [source, entry] of candidates) {
    if (entry && !entry.disabled) return toRoute(entry, source, tables.authinfo);
  }
  return toRoute({ mailer: 'Discard' }, BUILTIN_DEFAULT_SOURCE, tables.authinfo);
}

export function toRoute(entry: RouteEntry, source: string, authinfo: AuthinfoTable): Route {
  const mailer = (entry.mailer ?? 'ESMTP') as MailerName;
  const auth = entry.auth ?? null;
  const cred = auth !== null && Object.hasOwn(authinfo, auth) ? authinfo[auth] : undefined;
  return {
    mailer,
    host: entry.host ?? DEFAULT_HOST[mailer],
    port: entry.port ?? DEFAULT_PORT[mailer],
    auth,
    credentials: cred ? { username: cred.username, password: cred.password } : null,
    starttls: entry.starttls ?? false,
    retry: entry.retry ?? 0,
    sleepMs: Math.round((entry.sleep ?? DEFAULT_SLEEP_S) * 1000),
    // 0 would be no time at all: it means the default, as an unset value does.
    timeoutMs: Math.round((entry.timeout || DEFAULT_TIMEOUT_S[mailer]) * 1000),
    options: { ...(entry.options ?? {}) },
    source,
  };
}
