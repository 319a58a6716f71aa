/**
 * Tags the MailEvent from the subject: "[urgent] ..." gives the tag "urgent", and words on the
 * list below give their tag. Tags appear in the event's `tags` (API, feed, webhooks).
 */
import type { Hook } from '../../src/hooks/api.js';

const WORDS: Record<string, string> = { invoice: 'finance', receipt: 'finance', password: 'security', outage: 'ops' };

export default {
  name: 'tag-subject',
  eom(ctx) {
    const subject = ctx.event.subject ?? '';
    // Bracketed prefixes, as mailing lists and ticket systems write them.
    for (const m of subject.matchAll(/\[([A-Za-z0-9_-]{1,32})\]/g)) ctx.addTag(m[1]!.toLowerCase());
    for (const word of subject.toLowerCase().split(/[^a-z0-9]+/)) {
      const tag = WORDS[word];
      if (tag) ctx.addTag(tag);
    }
  },
} satisfies Hook;
