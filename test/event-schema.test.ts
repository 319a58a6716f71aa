/**
 * The MailEvent contract: the JSON Schema file and the TypeScript type agree, and real events
 * (a corpus sent over SMTP through the whole pipeline) validate against the schema.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MailEvent } from '../src/events/types.js';
import { mailEventErrors } from './helpers/event-schema.js';
import { queuedId, startTestApp, storedEvent, type TestApp } from './helpers/app.js';

const schema = JSON.parse(readFileSync(new URL('../src/events/mail-event.v1.schema.json', import.meta.url), 'utf8'));

// Every key of the TypeScript type, checked by the compiler in both directions.
const EVENT_KEYS: Record<keyof MailEvent, true> = {
  type: true, version: true, id: true, receivedAt: true, envelope: true, size: true, sha256: true,
  messageId: true, subject: true, date: true, from: true, to: true, cc: true, replyTo: true, headers: true,
  text: true, html: true, truncated: true, attachments: true, spam: true, hooks: true, tags: true, parseError: true,
};

describe('MailEvent schema', () => {
  it('lists exactly the fields of the TypeScript type, all required', () => {
    expect(Object.keys(schema.properties).sort()).toEqual(Object.keys(EVENT_KEYS).sort());
    expect([...schema.required].sort()).toEqual(Object.keys(EVENT_KEYS).sort());
  });

  it('rejects an event with a wrong or missing field', () => {
    expect(mailEventErrors({ type: 'mail.received' })).toMatch(/must have required property/);
  });

  describe('real events from the fixture corpus', () => {
    let t: TestApp;
    beforeAll(async () => {
      t = await startTestApp();
    });
    afterAll(async () => t.stop());

    const dir = new URL('./fixtures/eml/', import.meta.url);
    const files = readdirSync(dir).filter((f) => f.endsWith('.eml'));

    it('has a corpus to send', () => {
      expect(files.length).toBeGreaterThanOrEqual(5);
    });

    it.each(files)('%s is accepted and its event validates', async (file) => {
      const raw = readFileSync(join(dir.pathname, file));
      const transport = nodemailer.createTransport({ host: '127.0.0.1', port: t.smtpPort, secure: false, tls: { rejectUnauthorized: false } });
      const info = await transport.sendMail({ envelope: { from: 'corpus@example.org', to: ['corpus@example.test'] }, raw });
      const id = queuedId(info.response);
      const event = await storedEvent(t, id);
      expect(mailEventErrors(event)).toBeNull();
      // The stored raw bytes end with exactly what was sent (after our Received header).
      const stored = Buffer.from(await (await fetch(`${t.httpUrl}/api/v1/messages/${id}/raw`)).arrayBuffer());
      expect(stored.subarray(stored.length - raw.length).equals(raw)).toBe(true);
      expect(event.size).toBe(stored.length);
    });
  });
});
