/**
 * Per-recipient spam thresholds at end of message: a recipient whose threshold the spam score
 * passes is removed from the message; when none is left, the message is rejected with 550 5.7.1.
 * Scanning (spamd) records the score; this hook decides. Run spamd with `spamd.action: tag`.
 */
import type { Hook } from '../../src/hooks/api.js';

/** Score above which mail is refused, by recipient address or @domain; DEFAULT for the rest. */
const THRESHOLDS: Record<string, number> = { 'strict@example.test': 0, '@careful.example.test': 3, '@lenient.example.test': 20 };
// SpamAssassin's own required_score.
const DEFAULT = 5;

function thresholdOf(address: string): number {
  const a = address.toLowerCase();
  return THRESHOLDS[a] ?? THRESHOLDS[a.slice(a.lastIndexOf('@'))] ?? DEFAULT;
}

export default {
  name: 'spam-threshold',
  eom(ctx) {
    const score = ctx.spam.score;
    if (score === null) return; // not scored (spamd off, down or skipped): nothing to decide on
    const over = ctx.envelope.rcptTo.filter((r) => score > thresholdOf(r.address));
    if (over.length === 0) return;
    if (over.length === ctx.envelope.rcptTo.length) {
      return { verdict: 'reject', code: 550, enhanced: '5.7.1', message: `Message refused as spam (score ${score})` };
    }
    for (const r of over) ctx.removeRecipient(r.address);
    ctx.addTag('spam-filtered');
  },
} satisfies Hook;
