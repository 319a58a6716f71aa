/**
 * relayhosts: client addresses and CIDR ranges allowed to relay without authentication.
 * IPv4 and IPv6; an IPv4-mapped IPv6 client (`::ffff:192.0.2.1`, what a dual-stack socket
 * reports for an IPv4 peer) matches IPv4 entries, so listing 192.0.2.0/24 works on either
 * kind of socket. The address arithmetic is in util/net.ts.
 */
import { inNetworks, parseNetwork, type Network } from '../util/net.js';
import type { RelayhostsTable } from './tables.js';

export { parseNetwork, type Network };

/** Haineko's rule, kept: with no file (or an empty list) only the local host may relay. */
export const LOOPBACK_NETWORKS: readonly string[] = ['127.0.0.0/8', '::1/128'];

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
    return this.openRelay || inNetworks(remoteAddress, this.#networks);
  }
}
