/**
 * Pipeline faults real parts cannot be made to show on demand: the parse after an eom hook's
 * edits fails (a parse worker dying), the store fails (disk full). Real spool and store; only the
 * failing call is scripted.
 */
import Database from 'better-sqlite3';
import { afterEach, beforeEach, expect, it, vi } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EventBus } from '../src/bus/bus.js';
import { newMessageId } from '../src/events/id.js';
import type { AnyEvent, Envelope } from '../src/events/types.js';
import type { EomEdits } from '../src/hooks/edits.js';
import type { HookSession } from '../src/hooks/runner.js';
import { silentLogger } from '../src/log/logger.js';
import { createMetrics } from '../src/metrics/metrics.js';
import { parseMessageFile } from '../src/parse/parse.js';
import type { ParsedMessage } from '../src/parse/types.js';
import { Pipeline, type PipelineDeps } from '../src/pipeline/pipeline.js';
import { Spool } from '../src/spool/spool.js';
import { openSqliteStore, type SqliteMessageStore } from '../src/store/sqlite-store.js';
import type { MessageStore } from '../src/store/types.js';
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
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

const realParse: PipelineDeps['parse'] = (raw, attachmentsDir, limits) => parseMessageFile(raw.path ?? null, attachmentsDir, limits, raw.bytes ?? null);

/** A pipeline over this test's spool and store, spamd off, with the real parser unless `overrides` says otherwise. */
function pipelineOver(overrides: Partial<PipelineDeps>): Pipeline {
  return new Pipeline({
    config: testConfig(dir, { spamd: false }),
    logger: silentLogger(),
    spool,
    store,
    bus: new EventBus(),
    metrics: createMetrics(),
    score: async () => ({ status: 'skipped', score: null, threshold: null, rules: [], reason: 'spamd disabled' }),
    parse: realParse,
    ...overrides,
  });
}

/** What a new start would find in the spool (init and recover, as the app does). */
async function recoveredAtRestart() {
  const next = new Spool(join(dir, 'data'));
  await next.init();
  try {
    return await next.recover();
  } finally {
    await next.close();
  }
}

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
  const pipeline = pipelineOver({
    parse: async (raw, attachmentsDir, limits): Promise<ParsedMessage> => {
      if (++parses === 2) throw new Error('parse worker died: simulated');
      return realParse(raw, attachmentsDir, limits);
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

  expect(await recoveredAtRestart()).toEqual([]);
});

/** A spooled message, as the SMTP side leaves it before the pipeline runs. */
function spooled(subject: string) {
  return spooledRaw(`Subject: ${subject}\r\n\r\nbody\r\n`);
}

async function spooledRaw(raw: string, id = newMessageId()) {
  const writer = spool.writer(id, { maxSize: 1 << 20, bareNewline: 'reject' });
  writer.end(Buffer.from(raw));
  await once(writer, 'finish');
  const outcome = writer.outcome();
  if (outcome.kind !== 'ok') throw new Error(outcome.kind);
  return spool.commit(writer, outcome.size, outcome.sha256, envelope, new Date().toISOString());
}

/**
 * A pipeline over a store whose first `failures` commits throw, as SQLite does on a full disk;
 * the others take `delayMs`. With `answerLost`, a failing commit first goes through, as when the
 * store's writer thread dies after its transaction and before its answer.
 */
function pipelineWithFailingStore(failures: number, delayMs = 0, answerLost = false, maxPendingRetries?: number) {
  const published: AnyEvent[] = [];
  const bus = new EventBus();
  bus.subscribe((e) => published.push(e));
  let left = failures;
  // What the pipeline uses of the store; commit fails first.
  const failing: Pick<MessageStore, 'commit' | 'attachmentsDir' | 'discardFiles' | 'get'> = {
    get: (id) => store.get(id),
    commit: async (event, raw) => {
      if (left-- > 0) {
        if (answerLost) await store.commit(event, raw);
        throw Object.assign(new Error('database or disk is full'), { code: 'SQLITE_FULL' });
      }
      await new Promise((r) => setTimeout(r, delayMs));
      return store.commit(event, raw);
    },
    attachmentsDir: (id) => store.attachmentsDir(id),
    discardFiles: (id) => store.discardFiles(id),
  };
  const pipeline = pipelineOver({
    store: failing as MessageStore,
    bus,
    retryBaseMs: 20,
    ...(maxPendingRetries === undefined ? {} : { maxPendingRetries }),
  });
  return { pipeline, published, heal: () => (left = 0) };
}

it('a message the store failed to take is stored once it works again, without a restart, and published once', async () => {
  const { pipeline, published } = pipelineWithFailingStore(3);
  const msg = await spooled('retried');
  const outcome = await pipeline.process(msg);
  if (outcome.kind !== 'accept') throw new Error('not accepted');
  await outcome.afterReply(); // resolves: the failure is handled inside, not left to the caller
  expect(store.get(msg.id)).toBeNull();
  // Three failures: waits of 20, 40 and 80 ms before the fourth attempt.
  await vi.waitFor(() => expect(store.get(msg.id)?.subject).toBe('retried'), { timeout: 5000 });
  expect(published.map((e) => `${e.type} ${e.id}`)).toEqual([`mail.received ${msg.id}`]);
  await pipeline.close();
  await spool.close();
  expect(await recoveredAtRestart()).toEqual([]); // released once stored
});

it('a commit that went through but lost its answer is published when the retry finds the message stored', async () => {
  const { pipeline, published } = pipelineWithFailingStore(1, 0, true);
  const msg = await spooled('answer lost');
  const outcome = await pipeline.process(msg);
  if (outcome.kind !== 'accept') throw new Error('not accepted');
  await outcome.afterReply();
  expect(store.get(msg.id)?.subject).toBe('answer lost');
  expect(published).toEqual([]);
  await vi.waitFor(() => expect(published.map((e) => `${e.type} ${e.id}`)).toEqual([`mail.received ${msg.id}`]), { timeout: 5000 });
  await pipeline.close();
  await spool.close();
  expect(await recoveredAtRestart()).toEqual([]); // released once the retry found it stored
});

it('while the store fails and its retries are full, new mail gets 451 4.3.0; once it works again, mail is accepted', async () => {
  const { pipeline, published, heal } = pipelineWithFailingStore(Infinity, 0, false, 2);
  const accepted = [await spooled('one'), await spooled('two')];
  for (const msg of accepted) {
    const outcome = await pipeline.process(msg);
    if (outcome.kind !== 'accept') throw new Error('not accepted');
    await outcome.afterReply();
  }
  const third = await spooled('three');
  expect(await pipeline.process(third)).toEqual({
    kind: 'reject',
    code: 451,
    enhanced: '4.3.0',
    message: 'Temporary local problem: the message store is not available, try again later',
  });
  heal();
  await vi.waitFor(() => expect(published.map((e) => e.id).sort()).toEqual(accepted.map((m) => m.id).sort()), { timeout: 5000 });
  const fourth = await spooled('four');
  const outcome = await pipeline.process(fourth);
  if (outcome.kind !== 'accept') throw new Error('not accepted after the store came back');
  await outcome.afterReply();
  expect(store.get(fourth.id)?.subject).toBe('four');
  await pipeline.close();
});

it('messages already past the backpressure check when the limit is reached are retried too: stored once the store works, without a restart', async () => {
  const { pipeline, published, heal } = pipelineWithFailingStore(Infinity, 0, false, 1);
  const inFlight = [await spooled('first'), await spooled('second')];
  // Both pass the check before either commit fails (two SMTP connections at once)...
  const outcomes = await Promise.all(inFlight.map((msg) => pipeline.process(msg)));
  // ...and both were answered 250, so both must be stored; the second fails past the limit.
  for (const outcome of outcomes) {
    if (outcome.kind !== 'accept') throw new Error('not accepted');
    await outcome.afterReply();
  }
  heal();
  await vi.waitFor(() => expect(published.map((e) => e.id).sort()).toEqual(inFlight.map((m) => m.id).sort()), { timeout: 5000 });
  expect(inFlight.map((m) => store.get(m.id)?.subject)).toEqual(['first', 'second']);
  await pipeline.close();
  await spool.close();
  expect(await recoveredAtRestart()).toEqual([]);
});

it('recovery commits a message already stored as it is: no second parse into its attachment files', async () => {
  const raw = [
    'Subject: with attachment',
    'MIME-Version: 1.0',
    'Content-Type: multipart/mixed; boundary="b"',
    '',
    '--b',
    'Content-Type: text/plain',
    '',
    'body',
    '--b',
    'Content-Type: application/octet-stream; name="a.bin"',
    'Content-Disposition: attachment; filename="a.bin"',
    'Content-Transfer-Encoding: base64',
    '',
    Buffer.from('attachment bytes').toString('base64'),
    '--b--',
    '',
  ].join('\r\n');
  const { pipeline } = pipelineWithFailingStore(0);
  const msg = await spooledRaw(raw);
  const outcome = await pipeline.process(msg);
  if (outcome.kind !== 'accept') throw new Error('not accepted');
  await outcome.afterReply();
  const attachment = store.attachment(msg.id, 0)!;
  expect(readFileSync(attachment.path, 'utf8')).toBe('attachment bytes');
  await pipeline.close();
  // Its record once more, as when the release of its spool entry was lost (in a spool of its
  // own: the release of the first one is written by the time the old spool has closed).
  await spool.close();
  spool = new Spool(join(dir, 'data'));
  await spool.init();
  expect(await spool.recover()).toEqual([]);
  await spooledRaw(raw, msg.id);
  await spool.close();
  spool = new Spool(join(dir, 'data'));
  await spool.init();
  let parses = 0;
  const recovering = pipelineOver({
    parse: () => {
      parses++;
      return Promise.reject(new Error('parsed again'));
    },
  });
  expect(await recovering.recover()).toBe(1);
  expect(parses).toBe(0);
  expect(readFileSync(attachment.path, 'utf8')).toBe('attachment bytes');
  expect(store.list({}).items.map((m) => m.id)).toEqual([msg.id]);
  await recovering.close();
  await spool.close();
  expect(await recoveredAtRestart()).toEqual([]); // released
});

it('recovery of a message whose stored row cannot be read parses it again and releases it, not kept at every start', async () => {
  const pipeline = pipelineOver({});
  const msg = await spooled('damaged later');
  const outcome = await pipeline.process(msg);
  if (outcome.kind !== 'accept') throw new Error('not accepted');
  await outcome.afterReply();
  await pipeline.close();
  const db = new Database(join(dir, 'data', 'mailwire.db'));
  db.prepare("UPDATE messages SET event_json = '{broken' WHERE id = ?").run(msg.id);
  db.close();
  expect(() => store.get(msg.id)).toThrow(SyntaxError);
  // Its record once more, as when the release of its spool entry was lost.
  await spool.close();
  spool = new Spool(join(dir, 'data'));
  await spool.init();
  expect(await spool.recover()).toEqual([]);
  await spooledRaw('Subject: damaged later\r\n\r\nbody\r\n', msg.id);
  await spool.close();
  spool = new Spool(join(dir, 'data'));
  await spool.init();
  const recovering = pipelineOver({});
  expect(await recovering.recover()).toBe(1);
  await recovering.close();
  await spool.close();
  expect(await recoveredAtRestart()).toEqual([]); // released: the writer answered 'duplicate'
});

it('close() cancels the retries: the message stays in the spool for the next start', async () => {
  const { pipeline, published } = pipelineWithFailingStore(Infinity);
  const msg = await spooled('kept');
  const outcome = await pipeline.process(msg);
  if (outcome.kind !== 'accept') throw new Error('not accepted');
  await outcome.afterReply();
  await pipeline.close();
  await new Promise((r) => setTimeout(r, 100)); // past the first retry's time
  expect(published).toEqual([]);
  await spool.close();
  expect((await recoveredAtRestart()).map((m) => m.id)).toEqual([msg.id]);
});

it('close() waits for a retry whose store commit is running, so nothing is written after the spool and store close', async () => {
  const { pipeline, published } = pipelineWithFailingStore(1, 200);
  const msg = await spooled('in flight at stop');
  const outcome = await pipeline.process(msg);
  if (outcome.kind !== 'accept') throw new Error('not accepted');
  await outcome.afterReply();
  await new Promise((r) => setTimeout(r, 60)); // the retry (after 20 ms) is now in its 200 ms commit
  await pipeline.close();
  expect(store.get(msg.id)?.subject).toBe('in flight at stop');
  expect(published.map((e) => e.id)).toEqual([msg.id]);
});

it('a message an eom hook discards is out of the spool before the 250 is sent: a crash after the reply cannot store it', async () => {
  const { pipeline } = pipelineWithFailingStore(0);
  const discarding = { has: (phase: string) => phase === 'eom', run: async () => ({ kind: 'discard', disconnect: false }), records: () => [] };
  const msg = await spooled('discarded');
  const outcome = await pipeline.process(msg, discarding as unknown as HookSession);
  expect(outcome.kind).toBe('accept');
  // The reply would go out now; the process dies before afterReply runs.
  expect(await recoveredAtRestart()).toEqual([]);
  expect(store.get(msg.id)).toBeNull();
});
