/**
 * Rejects senders on a list at MAIL FROM with 550 5.7.1. Edit the list (or the text) and save:
 * the next SMTP session uses the new version, no restart.
 *
 * Entries: a full address (spammer@example.net), a domain (@example.net, the domain only), or a
 * domain and its subdomains (.example.net). Compared case-insensitively.
 */
import type { Hook } from '../../src/hooks/api.js';

const BLOCKED = ['spammer@bad.example', '@spam.example', '.junk.example'];
const MESSAGE = 'Sender address rejected: listed as a spammer';

const addresses = new Set(BLOCKED.filter((e) => !e.startsWith('@') && !e.startsWith('.')).map((e) => e.toLowerCase()));
const domains = new Set(BLOCKED.filter((e) => e.startsWith('@')).map((e) => e.slice(1).toLowerCase()));
const suffixes = BLOCKED.filter((e) => e.startsWith('.')).map((e) => e.slice(1).toLowerCase());

export default {
  name: 'block-spammer',
  mail(ctx) {
    const sender = ctx.address.address.toLowerCase();
    const domain = sender.slice(sender.lastIndexOf('@') + 1);
    const listed = addresses.has(sender) || domains.has(domain) || suffixes.some((s) => domain === s || domain.endsWith(`.${s}`));
    if (listed) return { verdict: 'reject', code: 550, enhanced: '5.7.1', message: MESSAGE };
  },
} satisfies Hook;
