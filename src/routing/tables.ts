/**
 * The Haineko tables in the config directory, in Haineko's own YAML formats, so a Haineko etc/
 * directory works unchanged: mailertable, sendermt, authinfo, relayhosts, recipients, password.
 * Every entry is checked here, so a broken edit is refused by the table loader (the last good
 * version is kept) and the error names the key.
 *
 * Haineko writes flags as 0/1 and "no AUTH" as '' or 0; both those and YAML booleans are taken.
 */
import { Resolver } from 'node:dns';
import { z } from 'zod';
import { normalizeDomain, splitAddress } from '../policy/address.js';
import { parsePasswordHash } from '../auth/ssha.js';
import type { MailerName } from './types.js';
import { parseNetwork } from './relayhosts.js';

export const MAILERS: readonly MailerName[] = ['ESMTP', 'File', 'Screen', 'Discard', 'Haineko', 'MX'];

/** 0/1 (Haineko), true/false (YAML), "0"/"1". */
const flag = z.union([z.boolean(), z.literal(0), z.literal(1), z.literal('0'), z.literal('1')]).transform((v) => v === true || v === 1 || v === '1');

/** A whole number, also when written as a string (Haineko's files quote some numbers). */
const int = (min: number, max: number, what: string) =>
  z
    .union([z.number(), z.string().regex(/^\d+$/, `must be a whole number (${what})`).transform(Number)])
    .pipe(z.number().int(`must be a whole number (${what})`).min(min).max(max, `at most ${max} (${what})`));

/** Seconds, as Haineko writes them; fractions allowed. */
const seconds = (max: number, what: string) =>
  z.union([z.number(), z.string().regex(/^\d+(\.\d+)?$/).transform(Number)]).pipe(z.number().min(0).max(max, `at most ${max} s (${what})`));

export const routeEntrySchema = z
  .object({
    // Case-insensitive here ("esmtp" works); Haineko's other mailers (SendGrid, AmazonSES,
    // Mandrill) are not implemented and are refused by name rather than silently rerouted.
    mailer: z
      .string()
      .transform((m, ctx) => {
        const found = MAILERS.find((name) => name.toLowerCase() === m.toLowerCase());
        if (!found) {
          ctx.addIssue({ code: 'custom', message: `unsupported mailer ${JSON.stringify(m)}; one of ${MAILERS.join(', ')}` });
          return z.NEVER;
        }
        return found;
      })
      .optional(),
    host: z.string().min(1).optional(),
    port: int(0, 65535, 'a port').optional(),
    // '' or 0 (Haineko's "no AUTH") or null: no AUTH.
    auth: z.union([z.string(), z.literal(0), z.null()]).transform((v) => (typeof v === 'string' && v !== '' ? v : null)).optional(),
    starttls: flag.optional(),
    // The only bounds on these three: the mailers honour any value accepted here, unchanged.
    // A dead upstream holds the /submit request (or the SMTP client's DATA reply) open for up to
    // (retry + 1) x timeout + retry x sleep. The bounds refuse typos (sleep: 3600, retry: 100)
    // while leaving room for a slow upstream: 600 s is RFC 5321's DATA-end timeout, 300 s a
    // long pause, and 10 retries more than any 4xx deserves within one request.
    retry: int(0, 10, 'retries after the first attempt').optional(),
    sleep: seconds(300, 'pause between attempts').optional(),
    timeout: seconds(600, 'deadline of one attempt').optional(),
    disabled: flag.optional(),
    // Haineko's Net::SMTP debug switch: accepted for compatibility, has no effect.
    debug: flag.optional(),
    // mailwire extension: mailer-specific settings (MAILER_OPTIONS), checked here.
    options: z.record(z.string(), z.unknown()).optional(),
  })
  .strict()
  .superRefine((entry, ctx) => {
    const known = MAILER_OPTIONS[entry.mailer ?? 'ESMTP'];
    for (const [key, value] of Object.entries(entry.options ?? {})) {
      const check = Object.hasOwn(known, key) ? known[key]! : null;
      const problem = check ? check(value) : `unknown option for the ${entry.mailer ?? 'ESMTP'} mailer (${Object.keys(known).join(', ') || 'it takes none'})`;
      if (problem) ctx.addIssue({ code: 'custom', path: ['options', key], message: problem });
    }
  })
  .transform((entry) => {
    // Flags in options are written like the others (0/1, true/false); the mailers read booleans.
    const verify = entry.options?.['tls_verify'];
    return verify === undefined ? entry : { ...entry, options: { ...entry.options, tls_verify: flag.parse(verify) } };
  });

/**
 * The options each mailer reads, and what each must look like: a typo (`dir` for `directory`)
 * or a bad value would otherwise be ignored, or fail every delivery at send time.
 */
const MAILER_OPTIONS: Record<MailerName, Record<string, (value: unknown) => string | null>> = {
  ESMTP: { tls_verify: flagOption },
  MX: { tls_verify: flagOption, resolver: resolverOption },
  Haineko: { url: hainekoUrlOption },
  File: { directory: (v) => (typeof v === 'string' && v.length > 0 ? null : 'must be a directory path') },
  Screen: {},
  Discard: {},
};

function flagOption(value: unknown): string | null {
  return flag.safeParse(value).success ? null : 'must be 0/1 or true/false';
}

/** DNS servers as dns.Resolver.setServers takes them: "192.0.2.53", "192.0.2.53:5353", "[2001:db8::53]:53", or a list. */
function resolverOption(value: unknown): string | null {
  const list = Array.isArray(value) ? value : [value];
  if (list.length === 0 || !list.every((v) => typeof v === 'string')) return 'must be a DNS server address (ip or ip:port) or a list of them';
  try {
    new Resolver().setServers(list as string[]);
    return null;
  } catch {
    return `must be DNS server addresses (ip or ip:port), not names: ${JSON.stringify(value)}`;
  }
}

/** An http(s) URL without credentials in it (those go in authinfo: a URL is echoed in errors and logs). */
function hainekoUrlOption(value: unknown): string | null {
  if (typeof value !== 'string') return 'must be an http:// or https:// URL';
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return 'must be an http:// or https:// URL';
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return 'must be an http:// or https:// URL';
  if (url.username || url.password) return 'must not hold a user or password: put them in authinfo and name the key in auth';
  return null;
}

export type RouteEntry = z.infer<typeof routeEntrySchema>;

/** mailertable (by recipient domain, plus `default`) and sendermt (by sender domain). */
export const mailerTableSchema = z.record(z.string(), routeEntrySchema.nullable()).superRefine((table, ctx) => {
  for (const key of Object.keys(table)) {
    if (key !== 'default' && !normalizeDomain(key)) ctx.addIssue({ code: 'custom', path: [key], message: 'not a domain name' });
  }
});

export type MailerTable = z.infer<typeof mailerTableSchema>;

/** authinfo: credentials for AUTH at the upstream server, by the key a route's `auth` names. */
export const authinfoSchema = z.record(
  z.string(),
  z
    .object({
      username: z.union([z.string(), z.number().transform(String)]),
      password: z.union([z.string(), z.number().transform(String)]),
    })
    .strict(),
);

export type AuthinfoTable = z.infer<typeof authinfoSchema>;

/** relayhosts: who may send through /submit (and relay by SMTP) without authentication. */
export const relayhostsSchema = z
  .object({
    'open-relay': flag.optional(),
    relayhosts: z
      .array(z.union([z.string(), z.number().transform(String)]).nullable())
      .nullable()
      .optional()
      .superRefine((list, ctx) => {
        (list ?? []).forEach((entry, i) => {
          if (entry === null || !parseNetwork(entry)) {
            ctx.addIssue({ code: 'custom', path: [i], message: `${JSON.stringify(entry)} is not an IPv4/IPv6 address or CIDR range` });
          }
        });
      }),
  })
  .strict();

export type RelayhostsTable = z.infer<typeof relayhostsSchema>;

/** recipients: the envelope recipients mail may be relayed to. */
export const recipientsSchema = z
  .object({
    'open-relay': flag.optional(),
    domainpart: z
      .array(z.string())
      .nullable()
      .optional()
      .superRefine((list, ctx) => {
        (list ?? []).forEach((d, i) => {
          if (!normalizeDomain(d.replace(/^@/, ''))) ctx.addIssue({ code: 'custom', path: [i], message: `${JSON.stringify(d)} is not a domain name` });
        });
      }),
    recipients: z
      .array(z.string())
      .nullable()
      .optional()
      .superRefine((list, ctx) => {
        (list ?? []).forEach((a, i) => {
          if (!splitAddress(a)) ctx.addIssue({ code: 'custom', path: [i], message: `${JSON.stringify(a)} is not an email address` });
        });
      }),
  })
  .strict();

export type RecipientsTable = z.infer<typeof recipientsSchema>;

/** password: `user: '{SSHA}…'` for HTTP Basic authentication (/submit and, with http.auth, the API). */
export const passwordSchema = z.record(z.string(), z.unknown()).superRefine((table, ctx) => {
  for (const [user, value] of Object.entries(table)) {
    if (user.includes(':')) {
      ctx.addIssue({ code: 'custom', path: [user], message: `user ${JSON.stringify(user)}: a user name cannot contain ':' (Basic authentication splits on it)` });
      continue;
    }
    const parsed = typeof value === 'string' ? parsePasswordHash(value) : { error: 'the value must be a quoted {SSHA} hash' };
    if ('error' in parsed) ctx.addIssue({ code: 'custom', path: [user], message: `user ${JSON.stringify(user)}: ${parsed.error}` });
  }
});

export type PasswordTable = Record<string, unknown>;
