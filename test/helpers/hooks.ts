/** Test helpers for hooks: the real app with hook files in its config dir, and captured log lines. */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import type { AnyEvent } from '../../src/events/types.js';
import { createLogger } from '../../src/log/logger.js';
import { startTestApp, waitFor, type TestApp } from './app.js';
import { RawSmtp, type Reply } from './raw-smtp.js';

export interface HookApp {
  t: TestApp;
  hooksDir: string;
  logs: Record<string, unknown>[];
  events: AnyEvent[];
  write(file: string, source: string): void;
  stop(): Promise<void>;
}

export async function startHookApp(
  files: Record<string, string>,
  phases: Record<string, string[]>,
  opts: { timeoutMs?: number; spamd?: boolean; config?: Record<string, unknown>; tables?: Record<string, string> } = {},
): Promise<HookApp> {
  const dir = mkdtempSync(join(tmpdir(), 'mailwire-hooks-'));
  const hooksDir = join(dir, 'config', 'hooks');
  mkdirSync(hooksDir, { recursive: true });
  // Other config files (domains, mailertable, recipients, ...).
  for (const [name, content] of Object.entries(opts.tables ?? {})) writeFileSync(join(dir, 'config', name), content);
  // As shipped in config/hooks/: hook files are ES modules (errors at load then carry their line).
  writeFileSync(join(hooksDir, 'package.json'), '{ "type": "module" }\n');
  const write = (file: string, source: string) => writeFileSync(join(hooksDir, file), source);
  for (const [name, source] of Object.entries(files)) write(name, source);
  const logs: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString().split('\n')) if (line) logs.push(JSON.parse(line) as Record<string, unknown>);
      cb();
    },
  });
  const events: AnyEvent[] = [];
  const t = await startTestApp({
    dir,
    spamd: opts.spamd ?? false,
    logger: createLogger('info', sink),
    onEvent: (e) => events.push(e),
    config: { hooks: { phases, ...(opts.timeoutMs ? { timeout_ms: opts.timeoutMs } : {}) }, ...(opts.config ?? {}) },
  });
  return {
    t,
    hooksDir,
    logs,
    events,
    write,
    async stop() {
      try {
        await t.stop();
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}

/** A raw session, greeted and (unless helo is null) past EHLO. */
export async function openSession(port: number, helo: string | null = 'client.test'): Promise<RawSmtp> {
  const c = await RawSmtp.connect(port);
  const greeting = await c.read();
  if (greeting.code !== 220) throw new Error(`greeting: ${greeting.raw}`);
  if (helo !== null) {
    const r = await c.command(`EHLO ${helo}`);
    if (r.code !== 250) throw new Error(`EHLO: ${r.raw}`);
  }
  return c;
}

/** The first line of a reply, as "code text". */
export function line(r: Reply): string {
  return r.lines[0]!;
}

/** Sends a whole message over an open session (after RCPT) and returns the final reply. */
export async function sendData(c: RawSmtp, message: string): Promise<Reply> {
  const r = await c.command('DATA');
  if (r.code !== 354) return r;
  const body = message.replace(/\r?\n/g, '\r\n').replace(/^\./gm, '..');
  c.write(body.endsWith('\r\n') ? body : `${body}\r\n`);
  return c.command('.');
}

/** Waits for a log line matching a predicate. */
export function waitForLog(app: HookApp, pred: (l: Record<string, unknown>) => boolean): Promise<Record<string, unknown>> {
  return waitFor(async () => app.logs.find(pred) ?? null);
}
