/**
 * The MailEvent contract, version 1 (see DESIGN.md and schema/mail-event.v1.json).
 * Field names are public API: users' apps and tools read them. Change them only with a version bump.
 */

export interface TlsInfo {
  protocol: string;
  cipher: string;
}

export interface Envelope {
  mailFrom: string; // "" for the null sender <>
  rcptTo: string[];
  remoteAddress: string;
  remotePort: number;
  clientHostname: string;
  helo: string;
  tls: TlsInfo | null;
  auth: { user: string } | null;
}

export interface AddressInfo {
  name: string;
  address: string;
}

export interface HeaderLine {
  name: string;
  value: string;
}

export interface AttachmentMeta {
  index: number;
  filename: string | null;
  contentType: string;
  size: number;
  sha256: string;
  contentId: string | null;
  disposition: string | null;
}

export type SpamStatus = 'ham' | 'spam' | 'skipped' | 'error';

export interface SpamRule {
  name: string;
  score: number;
  description: string;
}

export interface SpamResult {
  status: SpamStatus;
  score: number | null;
  threshold: number | null;
  rules: SpamRule[];
  /** Why the status is skipped or error; absent for ham and spam. */
  reason?: string;
}

export interface HookRecord {
  phase: string;
  name: string;
  verdict: string;
  ms: number;
}

export interface MailEvent {
  type: 'mail.received';
  version: 1;
  id: string;
  receivedAt: string;
  envelope: Envelope;
  size: number;
  sha256: string;
  messageId: string | null;
  subject: string | null;
  date: string | null;
  from: AddressInfo[];
  to: AddressInfo[];
  cc: AddressInfo[];
  replyTo: AddressInfo[];
  headers: HeaderLine[];
  text: string | null;
  html: string | null;
  truncated: { text: boolean; html: boolean };
  attachments: AttachmentMeta[];
  spam: SpamResult;
  hooks: HookRecord[];
  tags: string[];
  parseError: string | null;
}

export interface MailRejectedEvent {
  type: 'mail.rejected';
  version: 1;
  id: string;
  at: string;
  phase: string;
  code: number;
  enhancedCode: string;
  reason: string;
  /** The hook that decided, when a hook did. */
  hook?: string;
  envelope: Partial<Envelope>;
}

export interface MailDeletedEvent {
  type: 'mail.deleted';
  version: 1;
  id: string;
  at: string;
}

export type AnyEvent = MailEvent | MailRejectedEvent | MailDeletedEvent;
