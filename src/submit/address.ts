/**
 * Syntax checks for EHLO names and envelope addresses. Anchored at both ends: Haineko's sender
 * check was not, so `x <a@b>` passed as a sender address.
 */
import { isIPv4, isIPv6 } from 'node:net';

const LABEL = '[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?';
const DOMAIN = new RegExp(`^${LABEL}(?:\\.${LABEL})*\\.?$`);
// RFC 5322 atext: the characters of an unquoted local part.
const DOT_ATOM = /^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$/;

/** A host name: labels of letters, digits and hyphens; the last one not all digits (RFC 3696 2), so `1` or `127.0.0.1` is no name. */
function isDomain(s: string): boolean {
  return s.length <= 253 && DOMAIN.test(s) && !/(?:^|\.)\d+\.?$/.test(s);
}

/** An address literal: [192.0.2.1] or [IPv6:2001:db8::1]. */
function isAddressLiteral(s: string): boolean {
  const m = /^\[(.*)\]$/.exec(s);
  if (!m) return false;
  const inner = m[1]!;
  if (/^IPv6:/i.test(inner)) return isIPv6(inner.slice(5));
  return isIPv4(inner);
}

/** EHLO argument: a domain name or an address literal (RFC 5321 4.1.1.1). */
export function isValidEhlo(s: string): boolean {
  return isDomain(s) || isAddressLiteral(s);
}

/** A bare envelope address, local@domain, nothing around it (RFC 5321 4.1.2, dot-atom local parts). */
export function isValidAddress(s: string): boolean {
  if (s.length > 254) return false;
  const at = s.lastIndexOf('@');
  if (at <= 0 || at > 64) return false;
  const local = s.slice(0, at);
  const domain = s.slice(at + 1);
  return DOT_ATOM.test(local) && (isDomain(domain) || isAddressLiteral(domain)) && !domain.endsWith('.');
}

/** The address in a header value like `Name <a@b>` or a bare `a@b` (for the Sender: rule). */
export function headerAddress(value: string): string {
  const m = /<([^<>]*)>\s*$/.exec(value);
  return (m ? m[1]! : value).trim();
}

/** CR, LF or NUL: in a header field or an address they would start a header or command of the client's choosing. */
export function hasLineBreak(s: string): boolean {
  return /[\r\n\0]/.test(s);
}
