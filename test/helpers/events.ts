/** MailEvent factory for store and HTTP tests: a complete, valid event with overridable parts. */
import { newMessageId } from '../../src/events/id.js';
import type { AttachmentMeta, Envelope, MailEvent } from '../../src/events/types.js';

export interface EventOverrides extends Partial<Omit<MailEvent, 'envelope'>> {
  envelope?: Partial<Envelope>;
}

export function makeEvent(overrides: EventOverrides = {}): MailEvent {
  const { envelope, ...rest } = overrides;
  const id = rest.id ?? newMessageId();
  return {
    type: 'mail.received',
    version: 1,
    id,
    receivedAt: '2026-11-22T10:00:00.000Z',
    envelope: {
      mailFrom: 'alice@example.org',
      rcptTo: ['bob@example.net'],
      remoteAddress: '203.0.113.5',
      remotePort: 40000,
      clientHostname: 'mx.example.org',
      helo: 'mx.example.org',
      tls: null,
      auth: null,
      ...envelope,
    },
    size: 100,
    sha256: '0'.repeat(64),
    messageId: `<${id}@example.org>`,
    subject: 'Hello',
    date: '2026-11-22T09:59:59.000Z',
    from: [{ name: 'Alice', address: 'alice@example.org' }],
    to: [{ name: 'Bob', address: 'bob@example.net' }],
    cc: [],
    replyTo: [],
    headers: [{ name: 'Subject', value: 'Hello' }],
    text: 'Hi Bob',
    html: null,
    truncated: { text: false, html: false },
    attachments: [],
    spam: { status: 'ham', score: 1.2, threshold: 5, rules: [] },
    hooks: [],
    tags: [],
    parseError: null,
    ...rest,
  };
}

export function makeAttachment(overrides: Partial<AttachmentMeta> = {}): AttachmentMeta {
  return {
    index: 0,
    filename: 'a.pdf',
    contentType: 'application/pdf',
    size: 4,
    sha256: '1'.repeat(64),
    contentId: null,
    disposition: 'attachment',
    ...overrides,
  };
}
