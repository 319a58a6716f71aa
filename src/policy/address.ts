/**
 * Address normalisation for policy decisions. Mail addresses are hostile input: never trust
 * their case, Unicode form or length. The local part is compared as written (RFC 5321 2.4
 * says it may be case-sensitive) but lower-cased for matching, as every real MX does; the
 * domain is lower-cased and IDNA-normalised so "Bücher.example" and "xn--bcher-kva.example" match.
 */
import { domainToASCII } from 'node:url';

export interface SplitAddress {
  local: string;
  domain: string;
}

// RFC 5321 4.5.3.1: local part 64 octets, domain 255, path 256. Longer is never legitimate.
const MAX_ADDRESS = 256;

export function normalizeDomain(domain: string): string | null {
  const trimmed = domain.trim().replace(/\.$/, '');
  if (!trimmed || trimmed.length > 255) return null;
  // Address literals like [192.0.2.1] stay as they are.
  if (trimmed.startsWith('[') && trimmed.endsWith(']')) return trimmed.toLowerCase();
  const ascii = domainToASCII(trimmed.toLowerCase());
  return ascii ? ascii : null;
}

/**
 * The local part as it compares: RFC 5321 4.1.2 makes "noreply"@x and noreply@x the same
 * mailbox, so quotes and quoted-pair backslashes are removed before matching. Otherwise a
 * reject list entry could be walked around by quoting the name.
 */
export function canonicalLocalPart(local: string): string {
  let out = local;
  if (out.length >= 2 && out.startsWith('"') && out.endsWith('"')) out = out.slice(1, -1).replace(/\\(.)/g, '$1');
  return out.toLowerCase();
}

export function splitAddress(address: string): SplitAddress | null {
  if (!address || address.length > MAX_ADDRESS) return null;
  const at = address.lastIndexOf('@');
  if (at <= 0 || at === address.length - 1) return null;
  const domain = normalizeDomain(address.slice(at + 1));
  if (!domain) return null;
  return { local: canonicalLocalPart(address.slice(0, at)), domain };
}
