/**
 * The Haineko tables as one Routing object (see types.ts): each table is a WatchedTable, so an
 * edit applies at once and a broken edit keeps the last good version. Derived lookups (domain
 * index, CIDR list, decoded password hashes) are rebuilt once per reload, not per request.
 */
import { readFileSync, statSync } from 'node:fs';
import { ConfigError } from '../config/load.js';
import { WatchedTable } from '../config/table.js';
import type { Logger } from '../log/logger.js';
import { normalizeDomain } from '../policy/address.js';
import { DUMMY_HASHES, parsePasswordHash, verifyPassword, type PasswordHash } from '../auth/ssha.js';
import { RecipientList } from './recipients.js';
import { RelayHosts } from './relayhosts.js';
import { indexByDomain, resolveRoute, type IndexedTables } from './route.js';
import {
  authinfoSchema,
  mailerTableSchema,
  passwordSchema,
  recipientsSchema,
  relayhostsSchema,
  type AuthinfoTable,
  type MailerTable,
  type PasswordTable,
  type RecipientsTable,
  type RelayhostsTable,
} from './tables.js';
import type { Route, Routing } from './types.js';

export interface RoutingTables {
  mailertable: MailerTable;
  sendermt: MailerTable;
  authinfo: AuthinfoTable;
  relayhosts: RelayhostsTable;
  recipients: RecipientsTable;
  password: PasswordTable;
}

export const TABLE_NAMES = ['mailertable', 'sendermt', 'authinfo', 'relayhosts', 'recipients', 'password'] as const;
export type TableName = (typeof TABLE_NAMES)[number];

const SCHEMAS = {
  mailertable: mailerTableSchema,
  sendermt: mailerTableSchema,
  authinfo: authinfoSchema,
  relayhosts: relayhostsSchema,
  recipients: recipientsSchema,
  password: passwordSchema,
} as const;

/** What a missing file means: an empty table (each class applies Haineko's default for it). */
const EMPTY: RoutingTables = { mailertable: {}, sendermt: {}, authinfo: {}, relayhosts: {}, recipients: {}, password: {} };

// Files holding credentials: a warning when group or others may read them.
const SECRET_TABLES: readonly TableName[] = ['authinfo', 'password'];

export interface RoutingOptions {
  /** This server's name (smtp.hostname or the OS host name): the recipients default. */
  hostname: string;
  /** Reload tables when their files change (default true; check-config passes false). */
  watch?: boolean;
}

/**
 * The Routing contract plus what access control needs from the same password table
 * (auth/http-auth.ts PasswordVerifier: verifyPassword and count).
 */
export interface TableRouting extends Routing {
  /** How many users the password table holds now. */
  count(): number;
  /** The current, validated tables (for diagnostics and tests). */
  tables(): Readonly<RoutingTables>;
}

class Passwords {
  readonly #users = new Map<string, PasswordHash>();
  readonly #dummy: PasswordHash;

  constructor(table: PasswordTable) {
    for (const [user, value] of Object.entries(table)) {
      const parsed = typeof value === 'string' ? parsePasswordHash(value) : null;
      if (parsed && !('error' in parsed)) this.#users.set(user, parsed);
    }
    const first = this.#users.values().next();
    this.#dummy = DUMMY_HASHES[first.done ? 'ssha512' : first.value.scheme];
  }

  get size(): number {
    return this.#users.size;
  }

  verify(user: string, password: string): boolean {
    const hash = this.#users.get(user);
    // An unknown user costs one digest and one comparison too, then fails.
    const ok = verifyPassword(hash ?? this.#dummy, password);
    return ok && hash !== undefined;
  }
}

interface Derived {
  indexed: IndexedTables;
  relay: RelayHosts;
  recipients: RecipientList;
  passwords: Passwords;
}

function derive(tables: RoutingTables, hostname: string): Derived {
  const norm = (d: string) => normalizeDomain(d);
  return {
    indexed: { mailertable: indexByDomain(tables.mailertable, norm), sendermt: indexByDomain(tables.sendermt, norm), authinfo: tables.authinfo },
    relay: new RelayHosts(tables.relayhosts),
    recipients: new RecipientList(tables.recipients, hostname),
    passwords: new Passwords(tables.password),
  };
}

function build(current: () => RoutingTables, hostname: string, onClose: () => void): { routing: TableRouting; refresh: () => void } {
  let derived = derive(current(), hostname);
  const routing: TableRouting = {
    route: (rcpt: string, sender: string): Route => resolveRoute(derived.indexed, rcpt, sender),
    relayAllowed: (remoteAddress: string) => derived.relay.allowed(remoteAddress),
    recipientAllowed: (rcpt: string) => derived.recipients.allowed(rcpt),
    verifyPassword: (user: string, password: string) => derived.passwords.verify(user, password),
    count: () => derived.passwords.size,
    tables: () => current(),
    close: onClose,
  };
  return { routing, refresh: () => (derived = derive(current(), hostname)) };
}

/**
 * Loads the six tables from the config directory. A broken table at start throws ConfigError
 * (better not to start than to start with the wrong policy); later, a broken edit is logged
 * and the last good version kept.
 */
export function createRouting(configDir: string, logger: Logger, opts: RoutingOptions): TableRouting {
  const log = logger.child({ mod: 'routing' });
  const watched = Object.fromEntries(
    TABLE_NAMES.map((name) => [name, new WatchedTable<unknown>(configDir, name, SCHEMAS[name] as never, EMPTY[name], log)]),
  ) as unknown as { [K in TableName]: WatchedTable<RoutingTables[K]> };
  const current = (): RoutingTables =>
    Object.fromEntries(TABLE_NAMES.map((name) => [name, watched[name].value])) as unknown as RoutingTables;

  const { routing, refresh } = build(current, opts.hostname, () => {
    for (const name of TABLE_NAMES) watched[name].close();
  });
  for (const name of TABLE_NAMES) {
    watched[name].onChange(() => {
      refresh();
      checkReferences(current(), log);
    });
    if (opts.watch !== false) watched[name].watch();
  }
  for (const name of SECRET_TABLES) warnIfReadable(watched[name].path, name, log);
  checkReferences(current(), log);
  if (!watched.mailertable.value.default) {
    log.info('mailertable has no default route: relayed mail for domains not in mailertable or sendermt is discarded');
  }
  return routing;
}

/** A Routing from table objects (tests, tools): validated like the files, never reloaded. */
export function routingFromTables(tables: Partial<RoutingTables>, opts: RoutingOptions): TableRouting {
  const parsed = { ...EMPTY };
  for (const name of TABLE_NAMES) {
    const raw = tables[name];
    if (raw === undefined) continue;
    const result = SCHEMAS[name].safeParse(raw);
    if (!result.success) {
      const issue = result.error.issues[0]!;
      throw new ConfigError(`${name}: ${issue.path.join('.') || '(top level)'}: ${issue.message}`);
    }
    (parsed as Record<string, unknown>)[name] = result.data;
  }
  return build(() => parsed, opts.hostname, () => {}).routing;
}

function warnIfReadable(path: string, name: string, log: Logger): void {
  try {
    const mode = statSync(path).mode & 0o777;
    // A file with nothing but comments (as shipped) holds no secret to protect.
    if (mode & 0o077 && /^[ \t]*[^#\s]/m.test(readFileSync(path, 'utf8'))) {
      log.warn({ table: name, path, mode: mode.toString(8).padStart(4, '0') }, `${name} is readable by other users; run: chmod 600 ${path}`);
    }
  } catch {
    // No file: nothing to protect.
  }
}

/** A route naming an authinfo key that does not exist relays without AUTH; say so once per load. */
function checkReferences(tables: RoutingTables, log: Logger): void {
  for (const table of ['mailertable', 'sendermt'] as const) {
    for (const [key, entry] of Object.entries(tables[table])) {
      const auth = entry?.auth;
      if (auth && !Object.hasOwn(tables.authinfo, auth)) {
        log.warn({ table, key, auth }, `${table} entry ${key} names authinfo key ${JSON.stringify(auth)}, which does not exist: it relays without AUTH`);
      } else if (auth && (entry.mailer ?? 'ESMTP') === 'ESMTP' && !entry.starttls) {
        log.warn(
          { table, key, auth },
          `${table} entry ${key} sends authinfo credentials without starttls: 1: STARTTLS is used when the upstream offers it, but to one that does not (or to an attacker who strips it) the password goes in clear`,
        );
      }
    }
  }
}
