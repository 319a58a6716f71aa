/**
 * Nothing answered 250 is lost: a child process sends 2,000 messages while the server (another
 * child process, the real CLI) is SIGKILLed midway. After a restart every message that got 250
 * is stored exactly once, and recovery publishes nothing that was already published.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, describe, expect, it } from 'vitest';
import { openSqliteStore } from '../src/store/sqlite-store.js';
import { startTestApp, testConfig } from './helpers/app.js';

const ROOT = new URL('..', import.meta.url).pathname;
const TSX = ['--import', 'tsx'];

function startServer(dir: string): Promise<{ child: ChildProcess; smtpPort: number }> {
  const child = spawn(process.execPath, [...TSX, join(ROOT, 'src/cli.ts'), 'start', '--config-dir', join(dir, 'config')], {
    cwd: ROOT,
    env: { ...process.env, MAILWIRE_DATA_DIR: join(dir, 'data'), MAILWIRE_SMTP_PORT: '0', MAILWIRE_HTTP_PORT: '0', MAILWIRE_SPAMD: 'off' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error('server did not start in 30 s'));
    }, 30_000);
    const lines = createInterface({ input: child.stdout! });
    lines.on('line', (line) => {
      if (!line.includes('"mailwire started"')) return;
      clearTimeout(timer);
      const smtp = JSON.parse(line).smtp as string;
      resolve({ child, smtpPort: Number(smtp.split(':').pop()) });
    });
    child.once('exit', (code) => reject(new Error(`server exited with ${code}`)));
  });
}

describe('durability across SIGKILL', () => {
  const dir = mkdtempSync(join(tmpdir(), 'mailwire-durability-'));
  // Whatever happens in the test, no server child outlives it.
  const children: ChildProcess[] = [];
  afterAll(() => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  it('keeps every message that got 250, exactly once', { timeout: 120_000 }, async () => {
    mkdirSync(join(dir, 'config'), { recursive: true });
    // The test config's TLS files and log level, as a file the CLI reads.
    const cfg = testConfig(dir, { spamd: false });
    writeFileSync(join(dir, 'config', 'mailwire.yml'), `tls: { cert: ${cfg.tls.cert}, key: ${cfg.tls.key} }\nlog: { level: info }\n`);
    const server = await startServer(dir);
    children.push(server.child);

    const sender = spawn(process.execPath, [...TSX, join(ROOT, 'test/helpers/send-many.ts'), String(server.smtpPort), '2000'], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    children.push(sender);
    const acked = new Set<string>();
    let killed = false;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('sender did not finish in 90 s')), 90_000);
      createInterface({ input: sender.stdout! }).on('line', (line) => {
        if (line.startsWith('OK ')) acked.add(line.slice(3));
        if (!killed && acked.size >= 700) {
          killed = true;
          server.child.kill('SIGKILL');
        }
      });
      sender.once('exit', () => {
        clearTimeout(timer);
        resolve();
      });
    });
    expect(killed).toBe(true);
    expect(acked.size).toBeGreaterThanOrEqual(700);
    expect(acked.size).toBeLessThan(2000);

    // What the killed server had stored (and so published) before it died.
    const before = openSqliteStore(join(dir, 'data'));
    const storedBefore = new Set(collectIds(before));
    await before.close();

    // Restart (in-process, same data directory): recovery runs before the listener opens.
    const published: string[] = [];
    const t = await startTestApp({
      dir,
      spamd: false,
      onEvent: (e) => {
        if (e.type === 'mail.received') published.push(e.id);
      },
    });
    try {
      const after = openSqliteStore(join(dir, 'data'));
      const events = collectIds(after).map((id) => after.get(id)!);
      await after.close();
      const byMessageId = new Map<string, number>();
      for (const e of events) byMessageId.set(e.messageId!, (byMessageId.get(e.messageId!) ?? 0) + 1);
      for (const messageId of acked) expect(byMessageId.get(messageId), messageId).toBe(1);
      for (const [messageId, n] of byMessageId) expect(n, messageId).toBe(1);
      // Recovery published only what the killed server had not stored (and so not published).
      expect(published.filter((id) => storedBefore.has(id))).toEqual([]);
      expect(new Set(published).size).toBe(published.length);
      console.log(`acked ${acked.size}, stored before restart ${storedBefore.size}, recovered ${published.length}, stored after ${events.length}`);
    } finally {
      await t.stop();
    }
  });
});

function collectIds(store: ReturnType<typeof openSqliteStore>): string[] {
  const ids: string[] = [];
  let before: string | undefined;
  for (;;) {
    const page = store.list({ limit: 500, before });
    ids.push(...page.items.map((i) => i.id));
    if (!page.next) return ids;
    before = page.next;
  }
}

