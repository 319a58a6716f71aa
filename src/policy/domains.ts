/**
 * The inbound recipient and sender filter (config/domains): which addresses and domains
 * mailwire receives mail for. Default deny: a recipient is refused unless something accepts it.
 *
 * Patterns: "example.org" or "@example.org" (whole domain), "user@example.org" (exact address),
 * "noreply@" (that local part at any domain).
 */
import { z } from 'zod';
import { normalizeDomain, splitAddress } from './address.js';

export const domainsSchema = z
  .object({
    accept: z.array(z.string()).default([]),
    // Accept every recipient. Unset: on only when the listener is on loopback and accept is empty.
    catch_all: z.boolean().optional(),
    reject_recipients: z.array(z.string()).default([]),
    reject_senders: z.array(z.string()).default([]),
  })
  .strict()
  .superRefine((table, ctx) => {
    // Check every pattern here, so a broken edit is refused by the table loader (and the last
    // good table kept) instead of failing later inside a session.
    for (const key of ['accept', 'reject_recipients', 'reject_senders'] as const) {
      table[key].forEach((pattern, i) => {
        try {
          compile([pattern]);
        } catch (err) {
          ctx.addIssue({ code: 'custom', path: [key, i], message: (err as Error).message });
        }
      });
    }
  });

export type DomainsTable = z.infer<typeof domainsSchema>;

export const EMPTY_DOMAINS: DomainsTable = { accept: [], reject_recipients: [], reject_senders: [] };

export type RcptDecision =
  | { kind: 'accept' }
  | { kind: 'reject'; code: number; enhanced: string; message: string; /** Not one of ours: an SMTP client allowed to relay may still send to it. */ nonLocal?: boolean };

interface CompiledPatterns {
  domains: Set<string>;
  addresses: Set<string>;
  localParts: Set<string>;
}

function compile(patterns: string[]): CompiledPatterns {
  const out: CompiledPatterns = { domains: new Set(), addresses: new Set(), localParts: new Set() };
  for (const raw of patterns) {
    const p = raw.trim();
    if (p.endsWith('@')) out.localParts.add(p.slice(0, -1).toLowerCase());
    else if (p.startsWith('@')) addDomain(out, p.slice(1), raw);
    else if (p.includes('@')) {
      const split = splitAddress(p);
      if (!split) throw new Error(`invalid address pattern ${JSON.stringify(raw)}`);
      out.addresses.add(`${split.local}@${split.domain}`);
    } else addDomain(out, p, raw);
  }
  return out;
}

function addDomain(out: CompiledPatterns, domain: string, raw: string): void {
  const d = normalizeDomain(domain);
  if (!d) throw new Error(`invalid domain pattern ${JSON.stringify(raw)}`);
  out.domains.add(d);
}

function matches(p: CompiledPatterns, local: string, domain: string): boolean {
  return p.addresses.has(`${local}@${domain}`) || p.domains.has(domain) || p.localParts.has(local);
}

export class DomainPolicy {
  readonly #accept: CompiledPatterns;
  readonly #rejectRcpt: CompiledPatterns;
  readonly #rejectSender: CompiledPatterns;
  readonly #acceptDomainsOfAddresses: Set<string>;
  readonly catchAll: boolean;

  constructor(table: DomainsTable, listenerIsLoopback: boolean) {
    this.#accept = compile(table.accept);
    this.#rejectRcpt = compile(table.reject_recipients);
    this.#rejectSender = compile(table.reject_senders);
    this.#acceptDomainsOfAddresses = new Set([...this.#accept.addresses].map((a) => a.slice(a.lastIndexOf('@') + 1)));
    this.catchAll = table.catch_all ?? (listenerIsLoopback && table.accept.length === 0);
  }

  /** Is this recipient one of ours (local)? Rejections say why. */
  checkRecipient(address: string): RcptDecision {
    const split = splitAddress(address);
    if (!split) return { kind: 'reject', code: 553, enhanced: '5.1.3', message: 'Bad recipient address syntax' };
    const { local, domain } = split;
    if (matches(this.#rejectRcpt, local, domain)) {
      return { kind: 'reject', code: 550, enhanced: '5.1.1', message: 'Mailbox unavailable' };
    }
    if (this.catchAll) return { kind: 'accept' };
    if (this.#accept.addresses.has(`${local}@${domain}`) || this.#accept.domains.has(domain)) return { kind: 'accept' };
    if (this.#acceptDomainsOfAddresses.has(domain)) {
      return { kind: 'reject', code: 550, enhanced: '5.1.1', message: 'No such user here' };
    }
    return { kind: 'reject', code: 554, enhanced: '5.7.1', message: 'Relay access denied', nonLocal: true };
  }

  /** Senders on the reject list are refused at MAIL FROM. The null sender <> is always allowed (bounces). */
  checkSender(address: string): RcptDecision {
    if (address === '') return { kind: 'accept' };
    const split = splitAddress(address);
    if (!split) return { kind: 'reject', code: 553, enhanced: '5.1.7', message: 'Bad sender address syntax' };
    if (matches(this.#rejectSender, split.local, split.domain)) {
      return { kind: 'reject', code: 550, enhanced: '5.7.1', message: 'Sender rejected' };
    }
    return { kind: 'accept' };
  }
}
