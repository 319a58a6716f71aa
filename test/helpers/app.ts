/** Starts the real mailwire app on loopback port 0 with a temporary data and config directory. */
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inject } from 'vitest';
import { createApp, type App, type AppAddresses } from '../../src/app.js';
import { validateConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';
import type { AnyEvent, MailEvent } from '../../src/events/types.js';
import { createLogger, silentLogger, type Logger } from '../../src/log/logger.js';
import { mailEventErrors } from './event-schema.js';

export interface TestApp {
  app: App;
  config: Config;
  addresses: AppAddresses;
  dir: string;
  smtpPort: number;
  httpUrl: string;
  stop(): Promise<void>;
}

type DeepPartial<T> = { [K in keyof T]?: T[K] extends object ? DeepPartial<T[K]> : T[K] };

export interface TestAppOptions {
  /** mailwire.yml content as an object (merged over the test defaults). */
  config?: DeepPartial<Record<string, unknown>>;
  /** Files to write into the config dir (e.g. { domains: 'accept: [example.test]' }). */
  files?: Record<string, string>;
  /** Reuse a directory (restart tests). */
  dir?: string;
  spamd?: boolean;
  /** Subscribes to the bus before start, so events published by spool recovery are seen too. */
  onEvent?: (event: AnyEvent) => void;
  /** The app's logger (tests that read log lines); default silent, or MAILWIRE_TEST_LOG's level. */
  logger?: Logger;
}

// TLS material is generated once per test file run and reused: RSA key generation costs time.
let sharedCertDir: string | null = null;

export function testConfig(dir: string, opts: TestAppOptions = {}): Config {
  if (!sharedCertDir) sharedCertDir = mkdtempSync(join(tmpdir(), 'mailwire-certs-'));
  const spamd = inject('spamd');
  const base = {
    smtp: { host: '127.0.0.1', port: 0, hostname: 'mx.mailwire.test' },
    http: { host: '127.0.0.1', port: 0 },
    tls: { cert: join(sharedCertDir, 'cert.pem'), key: join(sharedCertDir, 'key.pem') },
    storage: { data_dir: join(dir, 'data') },
    spamd: opts.spamd === false ? { enabled: false } : { enabled: true, host: spamd.host, port: spamd.port },
    log: { level: 'silent' },
  };
  return validateConfig(merge(base, opts.config ?? {}), join(dir, 'config'));
}

export async function startTestApp(opts: TestAppOptions = {}): Promise<TestApp> {
  const dir = opts.dir ?? mkdtempSync(join(tmpdir(), 'mailwire-test-'));
  mkdirSync(join(dir, 'config'), { recursive: true });
  for (const [name, content] of Object.entries(opts.files ?? {})) writeFileSync(join(dir, 'config', name), content);
  const config = testConfig(dir, opts);
  // MAILWIRE_TEST_LOG=debug shows the app's log while debugging a test.
  const logLevel = process.env.MAILWIRE_TEST_LOG;
  const app = createApp(config, { logger: opts.logger ?? (logLevel ? createLogger(logLevel) : silentLogger()) });
  // Every event any test produces must match the published schema.
  const schemaErrors: string[] = [];
  app.bus.subscribe((event) => {
    if (event.type !== 'mail.received') return;
    const errors = mailEventErrors(event);
    if (errors) schemaErrors.push(`${event.id}: ${errors}`);
  });
  if (opts.onEvent) app.bus.subscribe(opts.onEvent);
  const addresses = await app.start();
  return {
    app,
    config,
    addresses,
    dir,
    smtpPort: addresses.smtp.port,
    httpUrl: `http://127.0.0.1:${addresses.http.port}`,
    async stop() {
      await app.stop();
      if (!opts.dir) rmSync(dir, { recursive: true, force: true });
      if (schemaErrors.length) throw new Error(`events that do not match the MailEvent schema:\n${schemaErrors.join('\n')}`);
    },
  };
}

function merge(a: Record<string, unknown>, b: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...a };
  for (const [k, v] of Object.entries(b)) {
    const cur = out[k];
    out[k] = v && typeof v === 'object' && !Array.isArray(v) && cur && typeof cur === 'object' ? merge(cur as Record<string, unknown>, v as Record<string, unknown>) : v;
  }
  return out;
}

/** Fetches a stored event, polling until it is there (the store commits just after the 250). */
export async function storedEvent(t: TestApp, id: string): Promise<MailEvent> {
  return waitFor(async () => {
    const res = await fetch(`${t.httpUrl}/api/v1/messages/${id}`);
    if (res.status === 200) return (await res.json()) as MailEvent;
    await res.body?.cancel(); // an unread body would keep the connection busy
    return null;
  });
}

/** The id in a "250 2.0.0 Ok: queued as <id>" reply. */
export function queuedId(response: string): string {
  const m = /queued as ([0-9A-Z]{26})$/.exec(response.trim());
  if (!m) throw new Error(`not a queued reply: ${response}`);
  return m[1]!;
}

/** Polls the REST API until a predicate holds (events are stored just after the 250). */
export async function waitFor<T>(fn: () => Promise<T | undefined | null | false>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 25));
  }
}
