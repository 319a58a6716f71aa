/**
 * Retention (storage.max_messages, storage.max_age_s): against a real SQLite store with raw
 * messages and attachments on disk, and end to end through the app over SMTP.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import type { AnyEvent, MailEvent } from '../src/events/types.js';
import { silentLogger } from '../src/log/logger.js';
import { Retention, type RetentionLimits } from '../src/store/retention.js';
import { openSqliteStore, type SqliteMessageStore } from '../src/store/sqlite-store.js';
import { startTestApp, waitFor } from './helpers/app.js';
import { makeAttachment, makeEvent } from './helpers/events.js';

let dir: string;
let dataDir: string;
let store: SqliteMessageStore;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'mailwire-retention-'));
  dataDir = join(dir, 'data');
  store = openSqliteStore(dataDir);
});

afterEach(async () => {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Commits a message: every third one file-backed with an attachment file, the others in the row. */
async function stored(n: number, receivedAt = '2026-11-22T10:00:00.000Z'): Promise<MailEvent> {
  const withFile = n % 3 === 0;
  const event = makeEvent({ receivedAt, subject: `message ${n}`, attachments: withFile ? [makeAttachment({ index: 0 })] : [] });
  const raw = `Subject: message ${n}\r\n\r\nbody ${n}\r\n`;
  if (!withFile) {
    expect(await store.commit(event, { bytes: Buffer.from(raw) })).toBe('inserted');
    return event;
  }
  const attDir = store.attachmentsDir(event.id);
  mkdirSync(attDir, { recursive: true });
  writeFileSync(join(attDir, '0'), 'data');
  const spoolFile = join(dir, `${event.id}.eml`);
  writeFileSync(spoolFile, raw);
  expect(await store.commit(event, { path: spoolFile })).toBe('inserted');
  rmSync(spoolFile);
  return event;
}

function retention(limits: Partial<RetentionLimits>, now = () => Date.parse('2026-11-22T12:00:00.000Z')) {
  const deleted: string[] = [];
  const r = new Retention({ store, limits: { maxMessages: 0, maxAgeS: 0, ...limits }, logger: silentLogger(), onDeleted: (id) => deleted.push(id), now });
  return { r, deleted };
}

/** Every file and directory of a message under data/messages. */
function filesOf(id: string): string[] {
  return readdirSync(join(dataDir, 'messages')).filter((name) => name.startsWith(id));
}

describe('retention against the store', () => {
  it('max_messages deletes the oldest messages beyond the limit, with their files, and logs mail.deleted', async () => {
    const events = [];
    for (let i = 0; i < 6; i++) events.push(await stored(i));
    expect(filesOf(events[0]!.id)).toEqual([events[0]!.id, `${events[0]!.id}.eml`]); // attachments dir and raw file
    const { r, deleted } = retention({ maxMessages: 2 });

    expect(await r.sweep()).toBe(4);

    const gone = events.slice(0, 4).map((e) => e.id);
    expect(deleted).toEqual(gone);
    expect(store.count()).toBe(2);
    expect(store.list({ limit: 10 }).items.map((m) => m.id)).toEqual([events[5]!.id, events[4]!.id]);
    for (const id of gone) {
      expect(store.get(id)).toBeNull();
      expect(store.raw(id)).toBeNull();
      expect(filesOf(id)).toEqual([]);
    }
    // The survivors are untouched, bytes included.
    expect(store.raw(events[5]!.id)).toEqual({ bytes: Buffer.from('Subject: message 5\r\n\r\nbody 5\r\n') });
    // Webhooks and resuming feed clients see the deletions in the log, in order.
    const log = store.eventsAfter({ seq: 0 }, 100)!.map((e) => `${e.event.type} ${e.event.id}`);
    expect(log).toEqual([...events.slice(4).map((e) => `mail.received ${e.id}`), ...gone.map((id) => `mail.deleted ${id}`)]);

    // At the limit: nothing more to do.
    expect(await r.sweep()).toBe(0);
    expect(deleted).toHaveLength(4);
  });

  it('max_age_s deletes messages received before now - max_age_s, and only those', async () => {
    const old = [await stored(0, '2026-11-20T11:59:59.999Z'), await stored(1, '2026-11-21T11:59:59.999Z')];
    const young = [await stored(2, '2026-11-21T12:00:00.000Z'), await stored(3, '2026-11-22T11:00:00.000Z')];
    const { r, deleted } = retention({ maxAgeS: 86_400 }); // now is 2026-11-22T12:00:00Z

    expect(await r.sweep()).toBe(2);
    expect(deleted).toEqual(old.map((e) => e.id));
    expect(store.list({ limit: 10 }).items.map((m) => m.id)).toEqual([young[1]!.id, young[0]!.id]);
  });

  it('works through more messages than one round reads (200)', async () => {
    for (let i = 0; i < 230; i++) await stored(1 + 3 * i); // never file-backed: fast
    const { r, deleted } = retention({ maxMessages: 5 });
    expect(await r.sweep()).toBe(225);
    expect(deleted).toHaveLength(225);
    expect(store.count()).toBe(5);
  });

  it('deletes nothing with both limits off, and start() schedules nothing', async () => {
    for (let i = 0; i < 3; i++) await stored(i, '2000-01-01T00:00:00.000Z');
    const { r, deleted } = retention({});
    expect(r.enabled).toBe(false);
    r.start();
    r.messageStored();
    expect(await r.sweep()).toBe(0);
    await r.stop();
    expect(deleted).toEqual([]);
    expect(store.count()).toBe(3);
  });

  it('a message deleted through the API meanwhile is skipped, not reported twice', async () => {
    const events = [await stored(1), await stored(2), await stored(4)];
    expect(await store.delete(events[0]!.id)).toBe(true);
    const { r, deleted } = retention({ maxMessages: 1 });
    expect(await r.sweep()).toBe(1);
    expect(deleted).toEqual([events[1]!.id]);
  });

  it('sweeps asked for during a sweep run once more after it, never at the same time', async () => {
    for (let i = 0; i < 4; i++) await stored(1 + 3 * i);
    const { r, deleted } = retention({ maxMessages: 1 });
    const [a, b] = [r.sweep(), r.sweep()];
    expect(await a).toBe(3);
    expect(await b).toBe(3); // the same run: the second request was folded into it
    expect(deleted).toHaveLength(3);
  });
});

describe('retention in the app', () => {
  it('storage.max_messages: 3 keeps the newest 3 of 5 messages sent over SMTP and publishes mail.deleted', async () => {
    const events: AnyEvent[] = [];
    const t = await startTestApp({ spamd: false, config: { storage: { max_messages: 3 } }, onEvent: (e) => events.push(e) });
    try {
      const transport = nodemailer.createTransport({ host: '127.0.0.1', port: t.smtpPort, secure: false, ignoreTLS: true });
      const ids: string[] = [];
      for (let i = 0; i < 5; i++) {
        const info = await transport.sendMail({ from: 'a@example.test', to: 'b@example.test', subject: `retention ${i}`, text: 'x' });
        ids.push(/queued as ([0-9A-Z]{26})/.exec(info.response)![1]!);
        // Each stored before the next is sent, so that commit order is send order.
        await waitFor(async () => events.some((e) => e.type === 'mail.received' && e.id === ids[i]));
      }
      transport.close();
      const deletedIds = await waitFor(async () => {
        const d = events.filter((e) => e.type === 'mail.deleted').map((e) => e.id);
        return d.length >= 2 ? d : null;
      });
      expect(deletedIds).toEqual(ids.slice(0, 2));
      const page = (await (await fetch(`${t.httpUrl}/api/v1/messages`)).json()) as { items: { id: string }[] };
      expect(page.items.map((m) => m.id)).toEqual(ids.slice(2).reverse());
      expect((await fetch(`${t.httpUrl}/api/v1/messages/${ids[0]}`)).status).toBe(404);
      expect(existsSync(join(t.dir, 'data', 'messages', `${ids[0]}.eml`))).toBe(false);
    } finally {
      await t.stop();
    }
  });
});
