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
import { createParsePool, defaultParsePoolSize, workerHeapMb, type ParsePool } from './parse/parse-pool.js';
import { DomainPolicy, domainsSchema, EMPTY_DOMAINS, type DomainsTable } from './policy/domains.js';
import { Pipeline } from './pipeline/pipeline.js';
import { createOutboundRelay } from './pipeline/outbound.js';
import { scoreRaw } from './spam/spamd.js';
import { ensureTlsMaterial } from './smtp/certs.js';
import { SmtpListener } from './smtp/listener.js';
import { Spool } from './spool/spool.js';
import { EventLogTrimmer } from './store/event-log-trim.js';
import { Retention } from './store/retention.js';
import { openSqliteStore } from './store/sqlite-store.js';
import type { MessageStore } from './store/types.js';
import type { SpamResult } from './events/types.js';
import { HookRegistry } from './hooks/registry.js';
import { HookRunner } from './hooks/runner.js';
import { createEventFeed, type EventFeed } from './ws/feed.js';
import { WebhookDispatcher } from './webhooks/dispatcher.js';
import { lockDataDir, type DirLock } from './util/dir-lock.js';
import { submitBodyLimit } from './http/submit.js';
import { createRelay, type Relay } from './relay/relay.js';
import { createRouting, type TableRouting } from './routing/routing.js';
import { createHttpAccess } from './auth/http-auth.js';
import { createPasswordLogin } from './auth/password-login.js';
import { FailureThrottle } from './auth/throttle.js';
import { createSubmitService } from './submit/submit.js';
import { MAILWIRE_VERSION } from './util/version.js';
import type { RawSource } from './util/raw-source.js';

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
  let feed: EventFeed | null = null;
  let webhooks: WebhookDispatcher | null = null;
  let domains: WatchedTable<DomainsTable> | null = null;
  let policy: DomainPolicy | null = null;
  let parsePool: ParsePool | null = null;
  let addresses: AppAddresses | null = null;
  let stopping = false;
  let dirLock: DirLock | null = null;
  let routing: TableRouting | null = null;
  let retention: Retention | null = null;
  let logTrim: EventLogTrimmer | null = null;
  let pipelineRef: Pipeline | null = null;
  let relay: Relay | null = null;

  const score = (raw: RawSource): Promise<SpamResult> => {
    if (!config.spamd.enabled) return Promise.resolve({ status: 'skipped', score: null, threshold: null, rules: [], reason: 'spamd disabled' });
    return scoreRaw(raw, { host: config.spamd.host, port: config.spamd.port, timeoutMs: config.spamd.timeout_ms, maxSize: config.spamd.max_size });
  };

  // Hook scripts per SMTP phase: loaded first, so a missing or broken hook stops the start before
  // anything is opened; then watched and reloaded for new sessions.
  const hookRegistry = new HookRegistry(config.hooks, config.configDir, logger);
  const hooks = new HookRunner({
    registry: hookRegistry,
    timeoutMs: config.hooks.timeout_ms,
    logger,
    onRejected: (event) => bus.publish(event),
  });

  async function start(): Promise<AppAddresses> {
    await hookRegistry.load();
    hookRegistry.watch();
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
    dirLock = lockDataDir(dataDir);
    const sqlite = openSqliteStore(dataDir, logger);
    store = sqlite;
    // Before spool recovery, so recovered mail is delivered too; it follows the store's event log.
    const dispatcher = (webhooks = new WebhookDispatcher({ webhooks: config.webhooks, dataDir, store: sqlite, bus, logger, metrics }));
    dispatcher.start();
    await spool.init();

    domains = new WatchedTable(config.configDir, 'domains', domainsSchema, EMPTY_DOMAINS, logger);
    policy = new DomainPolicy(domains.value, listenerIsLoopback);
    domains.onChange((table) => (policy = new DomainPolicy(table, listenerIsLoopback)));
    domains.watch();
    if (!listenerIsLoopback && policy.catchAll) logger.warn('catch-all is on for a non-loopback listener: every recipient is accepted');

    // Parsing runs in worker threads: mailparser's synchronous steps never block SMTP and HTTP.
    const pool = (parsePool = createParsePool({ size: defaultParsePoolSize(), logger, workerHeapMb: workerHeapMb(config.smtp.limits.max_message_size) }));
    const pipeline = (pipelineRef = new Pipeline({ config, logger, spool, store, bus, score, parse: (raw, dir, limits) => pool.parse(raw, dir, limits), metrics }));
    // Mail answered 250 by a previous run but not yet stored comes first.
    await pipeline.recover();
    // Retention after recovery, so recovered mail counts; a deletion is published like the API's.
    const ret = (retention = new Retention({ store: sqlite, limits: { maxMessages: config.storage.max_messages, maxAgeS: config.storage.max_age_s }, logger, onDeleted: publishDeleted }));
    bus.subscribe((event) => {
      if (event.type === 'mail.received') ret.messageStored();
    });
    ret.start();
    // Its spool bound is exact only after recovery: until then a previous run's journal counts as oldest.
    logTrim = new EventLogTrimmer({
      store: sqlite,
      maxAgeS: config.storage.event_log_max_age_s,
      keepFrom: () => dispatcher.lowestCursor(),
      oldestSpooled: () => spool.oldestRecordTime(),
      logger,
    });
    logTrim.start();

    const hostname = config.smtp.hostname ?? (await import('node:os')).hostname();
    const tls = await ensureTlsMaterial(config.tls.cert, config.tls.key, hostname, logger);
    // The Haineko tables and the relay mailers: POST /submit (and the SMTP relay path) use them.
    const tables = (routing = createRouting(config.configDir, logger, { hostname }));
    // One brute-force brake for every password check: the API and feed, /submit, SMTP AUTH.
    const throttle = new FailureThrottle();
    const login = createPasswordLogin({ throttle, passwords: tables, logger });
    // Access control for the API, the feed and the viewer: the same password table as /submit.
    const access = createHttpAccess({ config: config.http.auth, httpHost: config.http.host, passwords: tables, logger, throttle });
    relay = createRelay({ hostname, maxWorkers: config.submit.max_workers, logger });
    const submit = createSubmitService({
      routing: () => tables,
      relay,
      limits: { maxMessageSize: config.submit.max_message_size, maxRcptsPerMessage: config.submit.max_rcpts_per_message },
      requireAuth: config.submit.require_auth,
      hostname,
      servername: config.submit.servername ?? hostname,
      version: MAILWIRE_VERSION,
      logger,
      // The same hook scripts as SMTP, at Haineko's milter checkpoints (docs/hooks.md).
      hooks,
      login,
      realm: config.http.auth.realm,
      maxConcurrent: config.submit.max_concurrent,
      maxQueued: config.submit.max_queued,
      queueWaitMs: config.submit.queue_wait * 1000,
    });
    smtp = new SmtpListener({
      config,
      tls,
      logger,
      spool,
      policy: () => policy!,
      onMessage: (msg, session) => pipeline.process(msg, session),
      hooks,
      // SMTP AUTH (when smtp.auth.enabled) checks the password table; an authenticated session may relay.
      authenticate: (user, password, remoteAddress) => Promise.resolve(login('smtp', remoteAddress, user, password).kind),
      // Relaying over SMTP (docs/submit.md): relayhosts or AUTH, recipients, the same routes as /submit.
      relay: createOutboundRelay({ routing: () => tables, relay, spool, logger }),
    });
    const smtpAddresses = await smtp.start();

    const storeRef = store;
    http = createHttpServer({
      store: storeRef,
      logger,
      ...(WEB_DIR ? { webDir: WEB_DIR } : {}),
      viewer: {
        disposableDomain: config.web.disposable_domain ?? config.smtp.hostname ?? 'mailwire.test',
        pollIntervalMs: config.web.poll_interval_ms,
        maxMessageSize: config.smtp.limits.max_message_size,
      },
      metrics,
      hostPolicy: { boundHost: config.http.host, allowedHosts: config.http.allowed_hosts },
      readiness: () => {
        const storeOk = storeRef.healthy();
        return { ready: storeOk && !stopping, checks: { store: storeOk, smtp: !stopping } };
      },
      onDelete: publishDeleted,
      ...(webhooks.api ? { webhooks: webhooks.api } : {}),
      submit,
      access,
      submitBodyLimit: submitBodyLimit(config.submit.max_message_size),
      allowedOrigins: config.http.allowed_origins,
    });
    await http.listen({ port: config.http.port, host: config.http.host });
    const httpAddr = http.server.address() as AddressInfo;
    // The WebSocket feed /api/v1/events shares the HTTP server (its upgrade event) and reads the store's event log.
    feed = createEventFeed({
      server: http.server,
      log: sqlite,
      bus,
      logger,
      metrics,
      hostPolicy: { boundHost: config.http.host, allowedHosts: config.http.allowed_hosts },
      allowedOrigins: config.http.allowed_origins,
      authorize: access.authorize,
      maxClients: config.http.feed.max_clients,
      maxClientsPerIp: config.http.feed.max_clients_per_ip,
      maxBufferedBytes: config.http.feed.max_buffered_bytes,
      heartbeatMs: config.http.feed.heartbeat_ms,
    });

    addresses = { ...smtpAddresses, http: httpAddr };
    logger.info(
      { smtp: fmt(smtpAddresses.smtp), smtps: smtpAddresses.smtps ? fmt(smtpAddresses.smtps) : null, http: fmt(httpAddr), data: dataDir, spamd: config.spamd.enabled ? `${config.spamd.host}:${config.spamd.port}` : 'off' },
      'mailwire started',
    );
    return addresses;
  }

  function publishDeleted(id: string): void {
    bus.publish({ type: 'mail.deleted', version: 1, id, at: new Date().toISOString() });
  }

  async function stop(): Promise<void> {
    stopping = true;
    // No deletions during the stop; a sweep in progress ends after its current message.
    await retention?.stop();
    domains?.close();
    hookRegistry.close();
    // SMTP first: in-flight messages finish and are stored before the store closes.
    await smtp?.stop();
    // A trim round in progress (it publishes nothing) ends after its current step.
    await logTrim?.stop();
    logger.debug('smtp listeners stopped');
    await parsePool?.close();
    // Messages waiting to be stored again stay in the spool for the next start.
    await pipelineRef?.close();
    await spool.close();
    // Feed clients hold upgraded sockets the HTTP server would wait for: close them first.
    await feed?.close();
    if (http) await closeHttp(http);
    logger.debug('http server stopped');
    // After HTTP: submissions in flight finished their deliveries (or were cut off) first.
    relay?.close();
    routing?.close();
    // Webhook attempts in flight are aborted (and run again at the next start); they read the store.
    await webhooks?.stop();
    await store?.close();
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
