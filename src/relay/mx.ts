/**
 * The MX mailer: direct delivery to the recipient domain's mail exchangers, looked up through a
 * configurable DNS resolver (route option `resolver`: "ip" or "ip:port", or a list). Hosts are
 * tried in preference order until one answers; a domain without MX gets its own address
 * (RFC 5321 5.1 implicit MX); a null MX (RFC 7505) is refused.
 */
import { Resolver } from 'node:dns/promises';
import { isIP } from 'node:net';
import nodemailer from 'nodemailer';
import type { Route } from '../routing/types.js';
import { sendWithRetry, smtpOptions, tlsVerify } from './esmtp.js';
import { cannotConnect } from './reply.js';
import type { Delivery, ResponseEntry } from './types.js';

// More exchangers than this are never tried for one recipient: each costs a connect timeout.
const MAX_HOSTS = 5;
// A DNS answer must come quickly; the resolver retries on its own within this.
const DNS_TIMEOUT_MS = 5000;

function resolverFor(route: Route): Resolver {
  const resolver = new Resolver({ timeout: DNS_TIMEOUT_MS, tries: 2 });
  const servers = route.options['resolver'];
  const list = typeof servers === 'string' ? [servers] : Array.isArray(servers) ? servers.filter((s): s is string => typeof s === 'string') : [];
  if (list.length) resolver.setServers(list);
  return resolver;
}

async function addressesOf(resolver: Resolver, name: string): Promise<string[]> {
  if (isIP(name)) return [name];
  const v4 = await resolver.resolve4(name).catch(() => [] as string[]);
  if (v4.length) return v4;
  return resolver.resolve6(name).catch(() => [] as string[]);
}

/** Exchangers for a domain, best first; null for a null MX. */
async function exchangers(resolver: Resolver, domain: string): Promise<string[] | null> {
  let mx: { exchange: string; priority: number }[] = [];
  try {
    mx = await resolver.resolveMx(domain);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // No MX record: the domain itself is the exchanger. Anything else (SERVFAIL, timeout) is a failure.
    if (code !== 'ENODATA' && code !== 'ENOTFOUND') throw err;
  }
  if (mx.length === 1 && (mx[0]!.exchange === '' || mx[0]!.exchange === '.')) return null;
  if (!mx.length) return [domain];
  return mx.sort((a, b) => a.priority - b.priority).map((m) => m.exchange);
}

/**
 * TLS towards an exchanger. Without `starttls: 1`, STARTTLS is used when offered and the
 * certificate is not checked: opportunistic TLS as on the Internet at large (RFC 7435), where
 * MX certificates are often self-signed or for another name, and refusing them would only push
 * the mail back to plain text. With `starttls: 1` TLS is required and the certificate must be
 * valid for the exchanger's name (as for ESMTP; `options: { tls_verify: false }` opts out).
 */
export function mxTls(route: Route, exchanger: string) {
  // SNI carries names only (Node refuses an IP address there).
  return { rejectUnauthorized: route.starttls && tlsVerify(route), ...(isIP(exchanger) ? {} : { servername: exchanger }), minVersion: 'TLSv1.2' as const };
}

export async function deliverToMx(d: Delivery, hostname: string): Promise<ResponseEntry> {
  const domain = d.rcpt.slice(d.rcpt.lastIndexOf('@') + 1).toLowerCase();
  const resolver = resolverFor(d.route);
  let hosts: string[] | null;
  try {
    hosts = await exchangers(resolver, domain);
  } catch (err) {
    return { ...cannotConnect({ host: domain, port: d.route.port, mailer: 'MX' }, d.rcpt, `DNS: ${(err as NodeJS.ErrnoException).code ?? 'error'}`), dsn: '4.4.3', code: 451 };
  }
  if (hosts === null) {
    return { dsn: '5.1.10', code: 556, host: domain, port: null, rcpt: d.rcpt, error: 1, mailer: 'MX', command: 'RCPT', message: ['Recipient domain does not accept mail (null MX)'] };
  }
  let last: ResponseEntry = cannotConnect({ host: domain, port: d.route.port, mailer: 'MX' }, d.rcpt, 'no address for any exchanger');
  let tried = 0;
  for (const host of hosts) {
    for (const address of await addressesOf(resolver, host)) {
      if (tried++ >= MAX_HOSTS) return last;
      const route: Route = { ...d.route, host: address, credentials: null };
      // One connection per delivery: exchangers differ per domain, pooling would not help.
      const transport = nodemailer.createTransport({ ...smtpOptions(route, hostname, true), tls: mxTls(d.route, host) });
      let uncertain: boolean;
      try {
        ({ entry: last, uncertain } = await sendWithRetry({ ...d, route }, 'MX', () => transport));
      } finally {
        transport.close();
      }
      last = { ...last, host };
      // Another exchanger only when this one surely does not have the message.
      if (last.command !== 'CONN' || uncertain) return last;
    }
  }
  return last;
}
