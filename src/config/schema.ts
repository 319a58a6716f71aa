/**
 * The shape of config/mailwire.yml, with every default and the reason for every limit.
 * zod is the validation library; only this folder imports it. Objects are strict so a
 * misspelt key stops the start instead of being silently ignored.
 */
import { z } from 'zod';
import { accessSchema } from './sections/access.js';
import { feedSchema } from './sections/feed.js';
import { hooksSchema } from './sections/hooks.js';
import { submitSchema } from './sections/submit.js';
import { webSchema } from './sections/web.js';
import { webhooksSchema } from './sections/webhooks.js';

const KiB = 1024;
const MiB = 1024 * KiB;

const port = z.number().int().min(0).max(65535);
const positiveInt = z.number().int().positive();
// Node timers overflow past 2^31-1 ms (about 24.8 days) and then fire at once.
const durationMs = positiveInt.max(2 ** 31 - 1);
const host = z.string().min(1, 'must not be empty (an empty host binds every interface)');

export const smtpLimitsSchema = z
  .object({
    // 25 MiB is what most large providers accept; beyond it a sender should use a link.
    // Enforced on the DATA stream itself, so a liar about SIZE still cannot fill the disk.
    max_message_size: positiveInt.default(25 * MiB),
    // RFC 5321 4.5.3.1.8 requires accepting at least 100 recipients; more per message is
    // a spam-run pattern, and each recipient costs a policy lookup.
    max_recipients: positiveInt.default(100),
    // Bounds file descriptors and memory under a connection flood (each session holds
    // buffers and a parser). 500 sessions at ~64 KiB each stays well under 100 MB.
    max_connections: positiveInt.default(500),
    // One address should not be able to take every slot (a botnet member or a broken client loop).
    max_connections_per_ip: positiveInt.default(20),
    // Absolute deadlines, not idle timeouts: a client trickling one byte every 59 s would
    // otherwise hold a slot forever (slowloris). 10 min per session covers a 25 MiB message
    // on a slow link; DATA gets 5 min of that.
    session_timeout_ms: durationMs.default(10 * 60_000),
    data_timeout_ms: durationMs.default(5 * 60_000),
    // Idle time between commands (RFC 5321 4.5.3.2 suggests 5 min; 60 s is enough for machines).
    idle_timeout_ms: durationMs.default(60_000),
    // RFC 5321 4.5.3.1.4: command lines are at most 512 octets. Extensions (SIZE, SMTPUTF8,
    // long addresses) push real clients past it, so allow 2 KiB and no more.
    max_command_line: positiveInt.default(2 * KiB),
  })
  .strict()
  .refine((l) => l.data_timeout_ms <= l.session_timeout_ms, { message: 'data_timeout_ms must not exceed session_timeout_ms', path: ['data_timeout_ms'] });

export const smtpSchema = z
  .object({
    host: host.default('127.0.0.1'),
    port: port.default(2525),
    // Implicit TLS (port 465 style). Off unless a port is given.
    tls_port: port.nullable().default(null),
    // The name in the greeting and in Received headers.
    hostname: z.string().min(1).nullable().default(null),
    // Offer STARTTLS on the plain port.
    starttls: z.boolean().default(true),
    // Look up the client's reverse DNS name (for Received: and the event), cached for 5 min.
    reverse_lookup: z.boolean().default(true),
    // Bare CR or LF in DATA (RFC 5321 2.3.8) is how SMTP smuggling starts: reject it (the
    // default, as Postfix's smtpd_forbid_bare_newline=yes) or normalise it to CRLF.
    bare_newline: z.enum(['reject', 'normalize']).default('reject'),
    // postscreen-like early-talker test: unknown clients wait for the greeting and are cut
    // off if they talk first; a client that passed is remembered and greeted at once.
    early_talker: z
      .object({
        trust_ttl_s: positiveInt.default(24 * 3600),
        // Bounds the memory of the pass list under a scan of many addresses.
        max_entries: positiveInt.default(100_000),
      })
      .strict()
      .default({ trust_ttl_s: 24 * 3600, max_entries: 100_000 }),
    auth: z
      .object({
        // AUTH on the inbound listener; off by default (an MX does not authenticate).
        enabled: z.boolean().default(false),
        // AUTH only after TLS, so a password never crosses the wire in clear.
        require_tls: z.boolean().default(true),
      })
      .strict()
      .default({ enabled: false, require_tls: true }),
    limits: smtpLimitsSchema.default(smtpLimitsSchema.parse({})),
    // Time allowed for a graceful stop: sessions may finish, then they get 421.
    shutdown_grace_ms: durationMs.default(10_000),
  })
  .strict()
  .refine((s) => !(s.auth.enabled && s.auth.require_tls && !s.starttls && s.tls_port === null), {
    message: 'AUTH requires TLS, but neither STARTTLS nor an implicit-TLS port is enabled',
    path: ['auth', 'enabled'],
  });

export const tlsSchema = z
  .object({
    // Paths relative to the working directory unless absolute.
    cert: z.string().default('certs/cert.pem'),
    key: z.string().default('certs/key.pem'),
    // TLS 1.0 and 1.1 are broken and deprecated by RFC 8996.
    min_version: z.enum(['TLSv1.2', 'TLSv1.3']).default('TLSv1.2'),
  })
  .strict();

export const httpSchema = z
  .object({
    host: host.default('127.0.0.1'),
    port: port.default(8025),
    // Extra Host names the server may be reached by (DNS-rebinding defence): an exact name or
    // address, or a leading-dot suffix (.example.org: the domain and every name under it).
    // Loopback names are always allowed; on a non-loopback host, empty means any Host.
    allowed_hosts: z
      .array(
        z.string().refine(
          (h) =>
            /^\.?[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.?$/.test(h) ||
            (/^\[?[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*\]?$/.test(h) && URL.canParse(`http://[${h.replace(/^\[(.*)\]$/, '$1')}]/`)),
          'a host name or address without port (mail.example.org, 192.0.2.1, [2001:db8::1]) or a .suffix (.example.org)',
        ),
      )
      .default([]),
    // Origins (scheme://host[:port]) allowed to open the WebSocket feed besides the server's own:
    // a browser sends its page's Origin, so another web site cannot read mail through a visitor.
    allowed_origins: z.array(z.string().url()).default([]),
    // The WebSocket feed /api/v1/events: client bound, slow-client bound, heartbeat (sections/feed.ts).
    feed: feedSchema,
    // Access control for the API, the feed and the viewer (see sections/access.ts).
    auth: accessSchema,
  })
  .strict();

export const spamdSchema = z
  .object({
    enabled: z.boolean().default(true),
    host: host.default('127.0.0.1'),
    port: port.default(783),
    // spamd can be slow on big or odd messages; mail is accepted without a score rather than held.
    timeout_ms: durationMs.default(10_000),
    // spamc's own default cap: larger messages are almost never spam and cost spamd seconds.
    max_size: positiveInt.default(500 * KiB),
    // What to do above spamd's threshold: tag (record it in the event) or reject at end of DATA.
    action: z.enum(['tag', 'reject']).default('tag'),
  })
  .strict();

export const parseSchema = z
  .object({
    // Text and HTML bodies kept in the event; beyond this the event says truncated.
    // 1 MiB of text is a long book chapter; events are sent to browsers and webhooks.
    max_text_bytes: positiveInt.default(1 * MiB),
    max_html_bytes: positiveInt.default(2 * MiB),
    // A MIME bomb of thousands of tiny parts costs a file each; real mail has a few.
    max_attachments: positiveInt.default(250),
    // Header lines kept in the event; real mail has well under 200.
    max_headers: positiveInt.default(1000),
    // A hostile HTML part (deep nesting, huge) can stall html-to-text conversion.
    parse_timeout_ms: durationMs.default(30_000),
  })
  .strict();

export const storageSchema = z
  .object({
    data_dir: z.string().default('data'),
    // Retention (store/retention.ts). 0 = off: mail is kept until deleted through the API.
    max_messages: z.number().int().min(0).max(1_000_000_000).default(0),
    max_age_s: z.number().int().min(0).max(100 * 365 * 86_400).default(0),
    // Event-log entries of deleted messages are removed after this long (store/event-log-trim.ts);
    // a feed client away longer must reload. 0 keeps them forever (the log then grows ~100 bytes
    // per message received and per message deleted).
    event_log_max_age_s: z.number().int().min(0).max(100 * 365 * 86_400).default(7 * 86_400),
  })
  .strict();

export const logSchema = z
  .object({
    level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  })
  .strict();

export const configSchema = z
  .object({
    smtp: smtpSchema.default(smtpSchema.parse({})),
    tls: tlsSchema.default(tlsSchema.parse({})),
    http: httpSchema.default(httpSchema.parse({})),
    spamd: spamdSchema.default(spamdSchema.parse({})),
    parse: parseSchema.default(parseSchema.parse({})),
    storage: storageSchema.default(storageSchema.parse({})),
    log: logSchema.default(logSchema.parse({})),
    webhooks: webhooksSchema,
    submit: submitSchema,
    hooks: hooksSchema,
    web: webSchema,
  })
  .strict();

export type FileConfig = z.infer<typeof configSchema>;

/** The resolved configuration the app is built from. */
export interface Config extends FileConfig {
  /** Directory holding mailwire.yml, domains and the Haineko tables. */
  configDir: string;
}

export { z };
