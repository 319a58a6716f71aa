/**
 * Event-log trimming (storage.event_log_max_age_s) on a real SQLite store: what goes, what
 * stays, the horizon, and the scheduler's bounds. The feed's side (close 4410) is in
 * ws-feed.test.ts.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import Database from 'better-sqlite3';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { MailEvent } from '../src/events/types.js';
import { silentLogger } from '../src/log/logger.js';
import { EventBus } from '../src/bus/bus.js';
import { validateConfig } from '../src/config/load.js';
import { createMetrics } from '../src/metrics/metrics.js';
import { EventLogTrimmer } from '../src/store/event-log-trim.js';
import { WebhookDispatcher } from '../src/webhooks/dispatcher.js';
import { openSqliteStore, type SqliteMessageStore } from '../src/store/sqlite-store.js';
import nodemailer from 'nodemailer';
import { queuedId, startTestApp, storedEvent, waitFor } from './helpers/app.js';
import { makeEvent } from './helpers/events.js';

const FUTURE = '2100-01-01T00:00:00.000Z';

let dir: string;
let store: SqliteMessageStore;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'mailwire-logtrim-'));
  store = openSqliteStore(join(dir, 'data'));
});

afterEach(async () => {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

async function stored(receivedAt = '2026-11-01T10:00:00.000Z'): Promise<MailEvent> {
  const event = makeEvent({ receivedAt });
  expect(await store.commit(event, { bytes: Buffer.from('Subject: x\r\n\r\nx\r\n') })).toBe('inserted');
  return event;
}

/** [seq, type, id] of every row left in the events table, read from the file by a second connection. */
function entries(): [number, string, string][] {
  const db = new Database(join(dir, 'data', 'mailwire.db'), { readonly: true });
  try {
    return db.prepare('SELECT seq, type, id FROM events ORDER BY seq').raw().all() as [number, string, string][];
  } finally {
    db.close();
  }
}

const tick = () => new Promise((r) => setTimeout(r, 5));

describe('SqliteStore.trimEventLog', () => {
  it('removes mail.deleted entries and the received entries of deleted messages; a live message keeps its entry', async () => {
    const [a, b, c, d] = [await stored(), await stored(), await stored(), await stored()];
    expect(await store.delete(a.id)).toBe(true);
    expect(await store.delete(b.id)).toBe(true);
    expect(store.lastEventSeq()).toBe(6);
    expect(store.logHorizon()).toBe(0);

    expect(await store.trimEventLog(FUTURE, Infinity, 1000)).toEqual({ removed: 4, more: false });
    expect(entries()).toEqual([
      [3, 'mail.received', c.id],
      [4, 'mail.received', d.id],
    ]);
    expect(store.logHorizon()).toBe(6);
    // The end of the log does not move back, and seqs are never reused.
    expect(store.lastEventSeq()).toBe(6);
    expect(await store.commit(makeEvent(), { bytes: Buffer.from('x') })).toBe('inserted');
    expect(store.lastEventSeq()).toBe(7);
    // The horizon follows what was walked, removed or not.
    expect(await store.trimEventLog(FUTURE, Infinity, 1000)).toEqual({ removed: 0, more: false });
    expect(store.logHorizon()).toBe(7);
  });

  it('stops at the first entry logged at or after `before`, whatever the events\' own times say', async () => {
    const first = await stored(new Date().toISOString());
    await store.delete(first.id);
    await tick();
    const mid = new Date().toISOString();
    await tick();
    // Recovered after days in the spool: an old receivedAt, logged now.
    const recovered = await stored('2026-01-01T00:00:00.000Z');
    await store.delete(recovered.id);
    expect(await store.trimEventLog(mid, Infinity, 1000)).toEqual({ removed: 2, more: false });
    expect(entries().map(([seq]) => seq)).toEqual([3, 4]);
    expect(store.logHorizon()).toBe(2);
    expect(await store.trimEventLog(FUTURE, Infinity, 1000)).toEqual({ removed: 2, more: false });
    expect(entries()).toEqual([]);
  });

  it('never goes past keepFrom (the lowest webhook cursor)', async () => {
    for (const e of [await stored(), await stored(), await stored()]) await store.delete(e.id);
    expect(await store.trimEventLog(FUTURE, 2, 1000)).toEqual({ removed: 2, more: false });
    expect(entries().map(([seq]) => seq)).toEqual([3, 4, 5, 6]);
    expect(await store.trimEventLog(FUTURE, 0, 1000)).toEqual({ removed: 0, more: false });
    expect(store.logHorizon()).toBe(2);
  });

  it('walks at most maxRows entries per call, oldest first, and says when there may be more', async () => {
    for (const e of [await stored(), await stored(), await stored()]) await store.delete(e.id);
    expect(await store.trimEventLog(FUTURE, Infinity, 4)).toEqual({ removed: 4, more: true });
    expect(entries().map(([seq]) => seq)).toEqual([5, 6]);
    expect(store.logHorizon()).toBe(4);
    expect(await store.trimEventLog(FUTURE, Infinity, 4)).toEqual({ removed: 2, more: false });
    expect(entries()).toEqual([]);
  });

  it('a message deleted after the horizon passed its entry: that entry goes with its mail.deleted', async () => {
    const live = await stored();
    const gone = await stored();
    await store.delete(gone.id);
    expect(await store.trimEventLog(FUTURE, Infinity, 1000)).toEqual({ removed: 2, more: false });
    expect(store.logHorizon()).toBe(3);
    // Behind the horizon, the live message's entry still makes a second commit a no-op.
    expect(store.receivedSeq(live.id)).toBe(1);
    expect(await store.commit(live, { bytes: Buffer.from('x') })).toBe('duplicate');

    expect(await store.delete(live.id)).toBe(true);
    expect(entries()).toEqual([
      [1, 'mail.received', live.id],
      [4, 'mail.deleted', live.id],
    ]);
    expect(await store.trimEventLog(FUTURE, Infinity, 1000)).toEqual({ removed: 2, more: false });
    expect(entries()).toEqual([]);
    expect(store.receivedSeq(live.id)).toBeNull();
  });

  it('a deleted message committed again (spool recovery) keeps the entry that makes it a no-op until `before` passes that commit', async () => {
    const other = await stored();
    const m = await stored();
    expect(await store.delete(m.id)).toBe(true);
    await tick();
    const mid = new Date().toISOString();
    await tick();
    // A spool record that outlived its release: recovery commits the deleted message again.
    expect(await store.commit(m, { bytes: Buffer.from('x') })).toBe('duplicate');
    // The trimmer's `before` is at most the age of the oldest spool record, so here <= mid.
    expect(await store.trimEventLog(mid, Infinity, 1000)).toEqual({ removed: 0, more: false });
    expect(entries().map(([seq, type]) => [seq, type])).toEqual([
      [1, 'mail.received'],
      [2, 'mail.received'],
      [3, 'mail.deleted'],
    ]);
    expect(await store.commit(m, { bytes: Buffer.from('x') })).toBe('duplicate');
    expect(store.get(m.id)).toBeNull();
    expect(store.get(other.id)).not.toBeNull();
  });
});

describe('EventLogTrimmer', () => {

  it('trims what is older than maxAgeS, in batches of 1000, up to keepFrom', async () => {
    // 1200 messages received and deleted: 2400 entries, past two batches.
    for (let i = 0; i < 1200; i++) {
      const e = makeEvent({ receivedAt: new Date().toISOString() });
      await store.commit(e, { bytes: Buffer.from('x') });
      await store.delete(e.id);
    }
    const live = await stored(new Date().toISOString());
    const day = 86_400_000;
    const off = new EventLogTrimmer({ store, maxAgeS: 0, keepFrom: () => Infinity, oldestSpooled: () => Infinity, logger: silentLogger(), now: () => Date.now() + 10 * day });
    expect(off.enabled).toBe(false);
    // Not old enough yet: a day's age limit, an hour later.
    const early = new EventLogTrimmer({ store, maxAgeS: 86_400, keepFrom: () => Infinity, oldestSpooled: () => Infinity, logger: silentLogger(), now: () => Date.now() + day / 24 });
    expect(await early.round()).toBe(0);
    // Something in the spool since before all of it: nothing may go yet.
    const spooled = new EventLogTrimmer({ store, maxAgeS: 86_400, keepFrom: () => Infinity, oldestSpooled: () => 0, logger: silentLogger(), now: () => Date.now() + 2 * day });
    expect(await spooled.round()).toBe(0);
    expect(store.logHorizon()).toBe(0);
    // A spooled message received "after" these entries were logged: the clock stepped back half
    // an hour. The hour's margin still keeps them.
    const stepped = new EventLogTrimmer({ store, maxAgeS: 86_400, keepFrom: () => Infinity, oldestSpooled: () => Date.now() + day / 48, logger: silentLogger(), now: () => Date.now() + 2 * day });
    expect(await stepped.round()).toBe(0);
    expect(store.logHorizon()).toBe(0);
    // A webhook cursor at 1500 holds the rest back.
    const held = new EventLogTrimmer({ store, maxAgeS: 86_400, keepFrom: () => 1500, oldestSpooled: () => Infinity, logger: silentLogger(), now: () => Date.now() + 2 * day });
    expect(await held.round()).toBe(1500);
    expect(store.logHorizon()).toBe(1500);
    const free = new EventLogTrimmer({ store, maxAgeS: 86_400, keepFrom: () => Infinity, oldestSpooled: () => Infinity, logger: silentLogger(), now: () => Date.now() + 2 * day });
    expect(await free.round()).toBe(900);
    expect(entries()).toEqual([[2401, 'mail.received', live.id]]);
    await Promise.all([off.stop(), early.stop(), spooled.stop(), stepped.stop(), held.stop(), free.stop()]);
  });

  it('a failing store is logged and the next round tries again', async () => {
    const errors: unknown[] = [];
    const logger = { ...silentLogger(), error: (o: unknown) => errors.push(o) } as unknown as ReturnType<typeof silentLogger>;
    let fail = true;
    const flaky = {
      trimEventLog: (olderThan: string, keepFrom: number, maxRows: number) => {
        if (fail) throw new Error('disk I/O error');
        return store.trimEventLog(olderThan, keepFrom, maxRows);
      },
    };
    const e = await stored();
    await store.delete(e.id);
    const trimmer = new EventLogTrimmer({ store: flaky, maxAgeS: 1, keepFrom: () => Infinity, oldestSpooled: () => Infinity, logger, now: () => Date.parse(FUTURE) });
    expect(await trimmer.round()).toBe(0);
    expect(errors).toHaveLength(1);
    fail = false;
    expect(await trimmer.round()).toBe(2);
    await trimmer.stop();
  });
});

describe('WebhookDispatcher.lowestCursor (how far the log may be trimmed)', () => {
  function dispatcher(names: string[]): WebhookDispatcher {
    const config = { webhooks: names.map((name) => ({ name, url: 'http://127.0.0.1:9/hook', secret: 's'.repeat(32) })) };
    const { webhooks } = validateConfig(config, dir);
    return new WebhookDispatcher({ webhooks, dataDir: join(dir, 'data'), store, bus: new EventBus(), logger: silentLogger(), metrics: createMetrics({ processMetrics: false }) });
  }

  it('is Infinity without webhooks, 0 before start, and where a new webhook starts (the end of the log) after', async () => {
    const none = dispatcher([]);
    none.start();
    expect(none.lowestCursor()).toBe(Infinity);
    await none.stop();

    await stored();
    await stored();
    const two = dispatcher(['a', 'b']);
    expect(two.lowestCursor()).toBe(0);
    two.start();
    expect(two.lowestCursor()).toBe(2);
    await two.stop();
  });
});

describe('storage.event_log_max_age_s in the app', () => {
  it('a restart trims the entries of a message received over SMTP and deleted through the API', async () => {
    const appDir = join(dir, 'app');
    const options = { dir: appDir, spamd: false, config: { storage: { event_log_max_age_s: 1 } } };
    const first = await startTestApp(options);
    let id: string;
    try {
      const transport = nodemailer.createTransport({ host: '127.0.0.1', port: first.smtpPort, secure: false, ignoreTLS: true });
      id = queuedId((await transport.sendMail({ from: 'a@example.test', to: 'b@example.test', subject: 'trim me', text: 'x' })).response);
      transport.close();
      await storedEvent(first, id);
      expect((await fetch(`${first.httpUrl}/api/v1/messages/${id}`, { method: 'DELETE' })).status).toBe(204);
    } finally {
      await first.stop();
    }
    const horizon = () => {
      const db = new Database(join(appDir, 'data', 'mailwire.db'), { readonly: true });
      try {
        return [(db.prepare('SELECT seq FROM log_horizon').get() as { seq: number }).seq, db.prepare('SELECT count(*) AS n FROM events').get()];
      } finally {
        db.close();
      }
    };
    expect(horizon()).toEqual([0, { n: 2 }]);
    // Both entries a second old, then a start: its first round removes them.
    await new Promise((r) => setTimeout(r, 1100));
    const second = await startTestApp(options);
    try {
      await waitFor(async () => horizon()[0] === 2);
      expect(horizon()).toEqual([2, { n: 0 }]);
    } finally {
      await second.stop();
    }
  });
});
