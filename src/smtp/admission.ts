/**
 * Connection admission, decided the moment a socket is accepted: before the early-talker wait,
 * reverse DNS and TLS, so a flood costs one write and a close per refused socket and never
 * holds a session slot or its buffers.
 *
 * Clients are counted by address; IPv6 clients by their /64, because one host usually owns a
 * whole /64 and could otherwise open max_connections_per_ip sessions from each of 2^64 addresses.
 */
import { clientKey } from '../util/net.js';

export { clientKey };

export type Admission = { kind: 'admit'; key: string } | { kind: 'refuse'; reply: string };

export class ConnectionAdmission {
  #total = 0;
  #perClient = new Map<string, number>();

  constructor(private readonly limits: { max_connections: number; max_connections_per_ip: number }) {}

  admit(address: string): Admission {
    if (this.#total >= this.limits.max_connections) {
      return { kind: 'refuse', reply: '421 4.7.0 Too many connections, try again later' };
    }
    const key = clientKey(address);
    const n = this.#perClient.get(key) ?? 0;
    if (n >= this.limits.max_connections_per_ip) {
      return { kind: 'refuse', reply: '421 4.7.0 Too many connections from your address, try again later' };
    }
    this.#total++;
    this.#perClient.set(key, n + 1);
    return { kind: 'admit', key };
  }

  /** Call exactly once for every admitted connection, when its socket closes. */
  release(key: string): void {
    this.#total--;
    const n = (this.#perClient.get(key) ?? 1) - 1;
    if (n <= 0) this.#perClient.delete(key);
    else this.#perClient.set(key, n);
  }

  get total(): number {
    return this.#total;
  }
}
