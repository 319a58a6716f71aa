/**
 * relayhosts: client addresses and CIDR ranges allowed to relay without authentication.
 * IPv4 and IPv6; an IPv4-mapped IPv6 client (`::ffff:192.0.2.1`, what a dual-stack socket
 * reports for an IPv4 peer) matches IPv4 entries, so listing 192.0.2.0/24 works on either
 * kind of socket.
 */
import ipaddr from 'ipaddr.js';
import type { RelayhostsTable } from './tables.js';

type Address = ipaddr.IPv4 | ipaddr.IPv6;
export type Network = [Address, number];

/** Haineko's rule, kept: with no file (or an empty list) only the local host may relay. */
export const LOOPBACK_NETWORKS: readonly string[] = ['127.0.0.0/8', '::1/128'];

/** `192.0.2.1`, `192.0.2.0/24`, `2001:db8::/32`, `::ffff:192.0.2.0/120`; null when not one. */
export function parseNetwork(entry: string): Network | null {
  const text = entry.trim();
  try {
    if (text.includes('/')) {
      // parseCIDR accepts "10.1/8"-style shorthand only in isValid's lenient mode; require the full form.
      const [addr, bits] = ipaddr.parseCIDR(text);
      if (!isFullForm(text.slice(0, text.indexOf('/')))) return null;
      return [addr, bits];
    }
    if (!isFullForm(text)) return null;
    const addr = ipaddr.parse(text);
    return [addr, addr.kind() === 'ipv4' ? 32 : 128];
  } catch {
    return null;
  }
}

/** Four-part decimal IPv4 or any valid IPv6: ipaddr.js would also take "10" or "0x7f.1". */
function isFullForm(address: string): boolean {
  return ipaddr.IPv4.isValidFourPartDecimal(address) || ipaddr.IPv6.isValid(address);
}

export class RelayHosts {
  readonly openRelay: boolean;
  readonly #networks: Network[];

  constructor(table: RelayhostsTable) {
    this.openRelay = table['open-relay'] ?? false;
    const entries = (table.relayhosts ?? []).filter((e): e is string => e !== null);
    this.#networks = (entries.length ? entries : LOOPBACK_NETWORKS).map((e) => {
      const net = parseNetwork(e);
      // The schema already refused bad entries; this is a bug if it happens.
      if (!net) throw new Error(`relayhosts: invalid entry ${e}`);
      return net;
    });
  }

  allowed(remoteAddress: string): boolean {
    if (this.openRelay) return true;
    const candidates = addressForms(remoteAddress);
    return candidates.some((addr) => this.#networks.some(([net, bits]) => net.kind() === addr.kind() && addr.match(net, bits)));
  }
}

/** The address as given, and its IPv4 form when it is IPv4-mapped IPv6. A zone id (%eth0) is ignored. */
function addressForms(remoteAddress: string): Address[] {
  const text = remoteAddress.replace(/%.*$/, '');
  if (!ipaddr.isValid(text)) return [];
  const parsed = ipaddr.parse(text);
  const processed = ipaddr.process(text);
  return processed.kind() === parsed.kind() ? [parsed] : [parsed, processed];
}
