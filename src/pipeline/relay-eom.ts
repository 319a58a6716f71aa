/**
 * The eom hooks on mail relayed over SMTP (pipeline/outbound.ts), run before relaying, as on
 * POST /submit: a hook that rejects, discards, edits headers or changes the envelope of local
 * mail does the same to relayed mail. Relayed mail is not scored or parsed (it is not ours to
 * store), so the hook sees `spam.status: 'skipped'` and a MailEvent-like view of what is known
 * without parsing: type `mail.relayed`, id, receivedAt, envelope, size, subject (as in the
 * header), headers, spam, tags.
 */
import type { EventView, SpamView } from '../hooks/api.js';
import { EomEdits } from '../hooks/edits.js';
import { headerFields, splitMessage } from '../hooks/fields.js';
import { editMessage, MAX_HEADER_BLOCK } from '../hooks/rewrite.js';
import { isReply, type HookSession } from '../hooks/runner.js';
import type { SpooledMessage } from '../spool/spool.js';

const NOT_SCORED: SpamView = Object.freeze({ status: 'skipped', score: null, threshold: null });

export type RelayEomOutcome =
  | { kind: 'refuse'; code: number; enhanced: string; message: string; disconnect: boolean }
  /** A hook discarded the message, or removed its every recipient: answered 250, relayed nowhere. */
  | { kind: 'discard'; disconnect: boolean }
  /** Relay these bytes from this sender to these recipients (the edits applied). */
  | { kind: 'send'; sender: string; rcptTo: string[]; raw: Buffer; disconnect: boolean };

export async function relayEom(hooks: HookSession, msg: SpooledMessage, rcpt: string, raw: Buffer): Promise<RelayEomOutcome> {
  const { block, head, body } = splitMessage(raw);
  // As on local mail (rewrite.ts, stream.ts): a header block no hook can be shown whole is
  // refused rather than let past the hooks (a message with no blank line is all header).
  if (head.length > MAX_HEADER_BLOCK) {
    return { kind: 'refuse', code: 552, enhanced: '5.3.4', message: 'Message header block too large', disconnect: false };
  }
  const headers = headerFields(block);
  const edits = new EomEdits();
  const event: EventView = {
    type: 'mail.relayed',
    id: msg.id,
    receivedAt: msg.receivedAt,
    envelope: structuredClone(msg.envelope),
    size: msg.size,
    subject: headers.find((h) => h.name.toLowerCase() === 'subject')?.value ?? null,
    headers: headers.map((h) => ({ ...h })),
    spam: { ...NOT_SCORED },
    tags: [],
  };
  const r = await hooks.run('eom', { eom: { spam: NOT_SCORED, event, edits, headers } });
  if (isReply(r)) return { kind: 'refuse', code: r.code, enhanced: r.enhanced, message: r.message, disconnect: r.disconnect };
  const rcptTo = edits.applyRecipients([rcpt]);
  if (r.kind === 'discard' || rcptTo.length === 0) return { kind: 'discard', disconnect: r.disconnect };
  const edited = edits.changesRaw ? editMessage({ head, body }, edits.headers) : raw;
  return { kind: 'send', sender: edits.sender ?? msg.envelope.mailFrom, rcptTo, raw: edited, disconnect: r.disconnect };
}
