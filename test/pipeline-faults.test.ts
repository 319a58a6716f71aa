/**
 * Pipeline faults a real parser cannot be made to show on demand: the parse after an eom hook's
 * edits fails (a parse worker dying). Real spool and store; only the parse function is scripted.
 */
import { afterEach, beforeEach, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EventBus } from '../src/bus/bus.js';
import { newMessageId } from '../src/events/id.js';
import type { Envelope } from '../src/events/types.js';
import type { EomEdits } from '../src/hooks/edits.js';
import type { HookSession } from '../src/hooks/runner.js';
import { silentLogger } from '../src/log/logger.js';
import { createMetrics } from '../src/metrics/metrics.js';
import { parseMessageFile } from '../src/parse/parse.js';
import type { ParsedMessage } from '../src/parse/types.js';
import { Pipeline } from '../src/pipeline/pipeline.js';
import { Spool } from '../src/spool/spool.js';
import { openSqliteStore, type SqliteMessageStore } from '../src/store/sqlite-store.js';
import { testConfig } from './helpers/app.js';

let dir: string;
let spool: Spool;
let store: SqliteMessageStore;

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'mailwire-pipeline-'));
  spool = new Spool(join(dir, 'data'));
  await spool.init();
  await spool.recover();
  store = openSqliteStore(join(dir, 'data'));
});

afterEach(async () => {
  await spool.close();
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

const envelope: Envelope = { mailFrom: 'a@example.org', rcptTo: ['b@example.net'], remoteAddress: '127.0.0.1', remotePort: 1, clientHostname: '', helo: 'x', tls: null, auth: null };

/** A hook session with one eom hook that adds a header (so the message is rewritten and parsed again). */
function addHeaderHooks(): HookSession {
  const session = {
    has: (phase: string) => phase === 'eom',
    run: async (_phase: string, input: { eom: { edits: EomEdits } }) => {
      input.eom.edits.addHeader('X-Added', 'yes');
      return { kind: 'continue' };
    },
    records: () => [],
  };
  return session as unknown as HookSession;
}

it('a failed parse of the edited message leaves nothing in the spool: the client is told to retry, so nothing may be recovered', async () => {
  let parses = 0;
  const pipeline = new Pipeline({
    config: testConfig(dir, { spamd: false }),
    logger: silentLogger(),
    spool,
    store,
    bus: new EventBus(),
    metrics: createMetrics(),
    score: async () => ({ status: 'skipped', score: null, threshold: null, rules: [], reason: 'spamd disabled' }),
    parse: async (raw, attachmentsDir, limits): Promise<ParsedMessage> => {
      if (++parses === 2) throw new Error('parse worker died: simulated');
      return parseMessageFile(raw.path ?? null, attachmentsDir, limits, raw.bytes ?? null);
    },
  });
  const writer = spool.writer(newMessageId(), { maxSize: 1 << 20, bareNewline: 'reject' });
  writer.end(Buffer.from('Subject: edited\r\n\r\nbody\r\n'));
  await once(writer, 'finish');
  const outcome = writer.outcome();
  if (outcome.kind !== 'ok') throw new Error(outcome.kind);
  const msg = await spool.commit(writer, outcome.size, outcome.sha256, envelope, new Date().toISOString());

  const result = await pipeline.process(msg, addHeaderHooks());
  expect(result).toEqual({ kind: 'reject', code: 451, enhanced: '4.3.0', message: 'Temporary local problem, try again later' });
  expect(parses).toBe(2);
  // transaction.ts releases the entry it was given (the original) before the 451.
  await spool.release(msg);
  await spool.close();

  const next = new Spool(join(dir, 'data'));
  await next.init();
  try {
    expect(await next.recover()).toEqual([]);
  } finally {
    await next.close();
  }
});
