/** Which events a webhook receives: its event types, then its recipient and domain filters. */
import type { WebhookConfig } from '../config/sections/webhooks.js';

export class WebhookFilter {
  readonly #types: ReadonlySet<string>;
  readonly #rcpt: ReadonlySet<string>;
  readonly #domains: ReadonlySet<string>;

  constructor(hook: Pick<WebhookConfig, 'events' | 'rcpt' | 'domains'>) {
    this.#types = new Set(hook.events);
    this.#rcpt = new Set(hook.rcpt.map((r) => r.toLowerCase()));
    this.#domains = new Set(hook.domains.map((d) => d.toLowerCase()));
  }

  wantsType(type: string): boolean {
    return this.#types.has(type);
  }

  /** True when the webhook has rcpt or domains filters (then recipients decide). */
  get filtered(): boolean {
    return this.#rcpt.size > 0 || this.#domains.size > 0;
  }

  /** Whether any of these envelope recipients passes the rcpt/domains filters. */
  matchesRecipients(rcptTo: readonly string[]): boolean {
    if (!this.filtered) return true;
    return rcptTo.some((r) => {
      const address = r.toLowerCase();
      if (this.#rcpt.has(address)) return true;
      const at = address.lastIndexOf('@');
      return at >= 0 && this.#domains.has(address.slice(at + 1));
    });
  }
}
