/**
 * IP address helpers shared by every layer that looks at a client address: relayhosts (CIDR
 * matching), SMTP admission and the authentication throttle (per client, IPv6 per /64), the
 * /submit answer (IPv4-mapped addresses shown as IPv4), and "is this bind address loopback?".
 * The only module that imports ipaddr.js.
 */
import ipaddr from 'ipaddr.js';

type Address = ipaddr.IPv4 | ipaddr.IPv6;
/** An address and a prefix length, from parseNetwork; match with inNetworks. */
export type Network = readonly [Address, number];

/** Four-part decimal IPv4 or any valid IPv6: ipaddr.js alone would also take "10" or "0x7f.1". */
function isFullForm(address: string): boolean {
  return ipaddr.IPv4.isValidFourPartDecimal(address) || ipaddr.IPv6.isValid(address);
}

/** A socket address without its zone id (`fe80::1%eth0`), parsed; null when not an address. */
function parseAddress(address: string): Address | null {
  const text = address.replace(/%.*$/, '');
  return isFullForm(text) ? ipaddr.parse(text) : null;
}

/**
 * The address as relayhosts and the /submit answer show it: IPv4-mapped IPv6 (what a
 * dual-stack socket reports for an IPv4 peer, `::ffff:192.0.2.1`) becomes IPv4, IPv6 is
 * compressed and lower-case. Anything that is not an address is returned unchanged.
 */
export function normaliseIp(address: string): string {
  const text = address.replace(/%.*$/, '');
  if (!isFullForm(text)) return address;
  return ipaddr.process(text).toString();
}

/**
 * The key clients are counted by (SMTP connection limits, the authentication throttle): the
 * IPv4 address, or the /64 of an IPv6 address, because one host usually owns a whole /64 and
 * could otherwise get a fresh allowance from each of 2^64 addresses.
 */
export function clientKey(address: string): string {
  const text = address.replace(/%.*$/, '');
  if (!isFullForm(text)) return address;
  const ip = ipaddr.process(text); // ::ffff:1.2.3.4 counts as 1.2.3.4
  if (ip.kind() === 'ipv4') return ip.toString();
  const parts = (ip as ipaddr.IPv6).parts.slice(0, 4).map((p) => p.toString(16));
  return `${parts.join(':')}::/64`;
}

/** `192.0.2.1`, `192.0.2.0/24`, `2001:db8::/32`, `::ffff:192.0.2.0/120`; null when not one. */
export function parseNetwork(entry: string): Network | null {
  const text = entry.trim();
  try {
    if (text.includes('/')) {
      // parseCIDR accepts "10.1/8"-style shorthand; require the full form.
      const [addr, bits] = ipaddr.parseCIDR(text);
      if (!isFullForm(text.slice(0, text.indexOf('/')))) return null;
      return [addr, bits];
    }
    const addr = parseAddress(text);
    return addr ? [addr, addr.kind() === 'ipv4' ? 32 : 128] : null;
  } catch {
    return null;
  }
}

/**
 * Whether a client address is in one of the networks. An IPv4-mapped IPv6 client matches
 * IPv4 entries (and IPv4-mapped IPv6 entries), so 192.0.2.0/24 works on either kind of socket.
 */
export function inNetworks(remoteAddress: string, networks: readonly Network[]): boolean {
  const parsed = parseAddress(remoteAddress);
  if (!parsed) return false;
  const processed = ipaddr.process(parsed.toString());
  const forms = processed.kind() === parsed.kind() ? [parsed] : [parsed, processed];
  return forms.some((addr) => networks.some(([net, bits]) => net.kind() === addr.kind() && addr.match(net, bits)));
}

/**
 * Whether a server bound to this address (or name) only answers on loopback: `localhost`,
 * `*.localhost`, 127.0.0.0/8, `::1` (bracketed or not, in any spelling).
 */
export function isLoopbackBind(boundHost: string): boolean {
  let host = boundHost.toLowerCase();
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  if (host.endsWith('.')) host = host.slice(0, -1);
  if (host === 'localhost' || host.endsWith('.localhost')) return true;
  const addr = parseAddress(host);
  return addr !== null && ipaddr.process(addr.toString()).range() === 'loopback';
}
