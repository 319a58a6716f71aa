/**
 * recipients: the envelope recipients mail may be relayed to, by whole domain (`domainpart`)
 * or exact address (`recipients`). Matched case-insensitively, with the domain IDNA-normalised
 * (Bücher.example and xn--bcher-kva.example are the same) and the local part unquoted, as the
 * inbound domains table does. Haineko compares exact strings; a case difference should never
 * decide whether mail leaves.
 *
 * It applies to authenticated clients too (Haineko disabled its own bypass for safety).
 * With no file (or a file with every key commented out), Haineko's rule: only this server's
 * own host name is allowed as a recipient domain.
 */
import { normalizeDomain, splitAddress } from '../policy/address.js';
import type { RecipientsTable } from './tables.js';

export class RecipientList {
  readonly openRelay: boolean;
  readonly #domains = new Set<string>();
  readonly #addresses = new Set<string>();

  constructor(table: RecipientsTable, hostname: string) {
    const unset = table['open-relay'] === undefined && table.domainpart == null && table.recipients == null;
    this.openRelay = table['open-relay'] ?? false;
    const domains = unset ? [hostname] : (table.domainpart ?? []);
    for (const d of domains) {
      const domain = normalizeDomain(d.replace(/^@/, ''));
      if (domain) this.#domains.add(domain);
    }
    for (const a of table.recipients ?? []) {
      const split = splitAddress(a);
      if (split) this.#addresses.add(`${split.local}@${split.domain}`);
    }
  }

  allowed(rcpt: string): boolean {
    if (this.openRelay) return true;
    const split = splitAddress(rcpt);
    if (!split) return false;
    return this.#addresses.has(`${split.local}@${split.domain}`) || this.#domains.has(split.domain);
  }
}
