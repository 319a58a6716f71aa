/**
 * Builds the whole of mailwire from a config object. main.ts only loads config and handles
 * signals; every end-to-end test builds the real app here on port 0.
 */
import { mkdir } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join, resolve } from 'node:path';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { EventBus } from './bus/bus.js';
import type { Config } from './config/schema.js';
import { WatchedTable } from './config/table.js';
import { isLoopbackBind } from './http/host-check.js';
import { createHttpServer } from './http/server.js';
import { createLogger, type Logger } from './log/logger.js';
import { createMetrics } from './metrics/metrics.js';
import { createParsePool, defaultParsePoolSize, type ParsePool } from './parse/parse-pool.js';
import { DomainPolicy, domainsSchema, EMPTY_DOMAINS, type DomainsTable } from './policy/domains.js';
import { Pipeline } from './pipeline/pipeline.js';
import { scoreFile } from './spam/spamd.js';
import { ensureTlsMaterial } from './smtp/certs.js';
import { SmtpListener } from './smtp/listener.js';
import { Spool } from './spool/spool.js';
import { openSqliteStore } from './store/sqlite-store.js';
import type { MessageStore } from './store/types.js';
import type { SpamResult } from './events/types.js';
import { lockDataDir, type DirLock } from './util/dir-lock.js';

export interface AppAddresses {
  smtp: AddressInfo;
  smtps: AddressInfo | null;
  http: AddressInfo;
}

export interface App {
  start(): Promise<AppAddresses>;
  stop(): Promise<void>;
  readonly addresses: AppAddresses;
  readonly logger: Logger;
  readonly bus: EventBus;
}

export interface AppOptions {
  logger?: Logger;
}

// web/ sits at the repository root: one level up from src/app.ts (run through tsx), two from
// dist/src/app.js (built).
const WEB_DIR = [fileURLToPath(new URL('../web', import.meta.url)), fileURLToPath(new URL('../../web', import.meta.url))].find((dir) =>
  existsSync(join(dir, 'index.html')),
);

export function createApp(config: Config, options: AppOptions = {}): App {
  const logger = options.logger ?? createLogger(config.log.level);
  const dataDir = resolve(config.storage.data_dir);
  const bus = new EventBus((err) => logger.warn({ err }, 'event subscriber failed'));
  const spool = new Spool(dataDir);
  const metrics = createMetrics();
  // The same notion of loopback as the HTTP Host check: one definition for both listeners.
  const listenerIsLoopback = isLoopbackBind(config.smtp.host);

  let store: MessageStore | null = null;
  let smtp: SmtpListener | null = null;
  let http: FastifyInstance | null = null;
  let domains: WatchedTable<DomainsTable> | null = null;
  let policy: DomainPolicy | null = null;
  let parsePool: ParsePool | null = null;
  let addresses: AppAddresses | null = null;
  let stopping = false;
  let dirLock: DirLock | null = null;

  const score = (rawPath: string): Promise<SpamResult> => {
    if (!config.spamd.enabled) return Promise.resolve({ status: 'skipped', score: null, threshold: null, rules: [], reason: 'spamd disabled' });
    return scoreFile(rawPath, { host: config.spamd.host, port: config.spamd.port, timeoutMs: config.spamd.timeout_ms, maxSize: config.spamd.max_size });
  };

  async function start(): Promise<AppAddresses> {
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
    dirLock = lockDataDir(dataDir);
    store = openSqliteStore(dataDir, logger);
    await spool.init();

    domains = new WatchedTable(config.configDir, 'domains', domainsSchema, EMPTY_DOMAINS, logger);
    policy = new DomainPolicy(domains.value, listenerIsLoopback);
    domains.onChange((table) => (policy = new DomainPolicy(table, listenerIsLoopback)));
    domains.watch();
    if (!listenerIsLoopback && policy.catchAll) logger.warn('catch-all is on for a non-loopback listener: every recipient is accepted');

    // Parsing runs in worker threads: mailparser's synchronous steps never block SMTP and HTTP.
    const pool = (parsePool = createParsePool({ size: defaultParsePoolSize(), logger }));
    const pipeline = new Pipeline({ config, logger, spool, store, bus, score, parse: (raw, dir, limits) => pool.parse(raw, dir, limits), metrics });
    // Mail answered 250 by a previous run but not yet stored comes first.
    await pipeline.recover();

    const hostname = config.smtp.hostname ?? (await import('node:os')).hostname();
    const tls = await ensureTlsMaterial(config.tls.cert, config.tls.key, hostname, logger);
    smtp = new SmtpListener({
      config,
      tls,
      logger,
      spool,
      policy: () => policy!,
      onMessage: (msg) => pipeline.process(msg),
    });
    const smtpAddresses = await smtp.start();

    const storeRef = store;
    http = createHttpServer({
      store: storeRef,
      logger,
      ...(WEB_DIR ? { webDir: WEB_DIR } : {}),
      metrics,
      hostPolicy: { boundHost: config.http.host, allowedHosts: config.http.allowed_hosts },
      readiness: () => {
        const storeOk = storeRef.healthy();
        return { ready: storeOk && !stopping, checks: { store: storeOk, smtp: !stopping } };
      },
      onDelete: (id) => bus.publish({ type: 'mail.deleted', version: 1, id, at: new Date().toISOString() }),
    });
    await http.listen({ port: config.http.port, host: config.http.host });
    const httpAddr = http.server.address() as AddressInfo;

    addresses = { ...smtpAddresses, http: httpAddr };
    logger.info(
      { smtp: fmt(smtpAddresses.smtp), smtps: smtpAddresses.smtps ? fmt(smtpAddresses.smtps) : null, http: fmt(httpAddr), data: dataDir, spamd: config.spamd.enabled ? `${config.spamd.host}:${config.spamd.port}` : 'off' },
      'mailwire started',
    );
    return addresses;
  }

  async function stop(): Promise<void> {
    stopping = true;
    domains?.close();
    // SMTP first: in-flight messages finish and are stored before the store closes.
    await smtp?.stop();
    logger.debug('smtp listeners stopped');
    await parsePool?.close();
    if (http) await closeHttp(http);
    logger.debug('http server stopped');
    store?.close();
    dirLock?.release();
  }

  return {
    start,
    stop,
    get addresses() {
      if (!addresses) throw new Error('mailwire is not started');
      return addresses;
    },
    logger,
    bus,
  };
}

// In-flight HTTP requests get this long at stop; a client that never reads its response
// must not hold the stop (and the store) open forever.
const HTTP_CLOSE_GRACE_MS = 2000;

async function closeHttp(http: FastifyInstance): Promise<void> {
  const force = setTimeout(() => http.server.closeAllConnections(), HTTP_CLOSE_GRACE_MS);
  try {
    await http.close();
  } finally {
    clearTimeout(force);
  }
}

function fmt(a: AddressInfo): string {
  return a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
}
