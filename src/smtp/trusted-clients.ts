/**
 * Clients that passed the early-talker test (they waited for the greeting), remembered for a
 * while so their next connections are greeted at once: Postfix postscreen's model. Bounded:
 * a scan from many addresses evicts the oldest entries instead of growing without limit.
 */
export class TrustedClients {
  #entries = new Map<string, number>(); // address -> expiry (ms since epoch), oldest first

  constructor(
    private readonly ttlMs: number,
    private readonly maxEntries: number,
    private readonly now: () => number = Date.now,
  ) {}

  has(address: string): boolean {
    const expiry = this.#entries.get(address);
    if (expiry === undefined) return false;
    if (expiry <= this.now()) {
      this.#entries.delete(address);
      return false;
    }
    return true;
  }

  add(address: string): void {
    this.#entries.delete(address); // re-insert at the end: Map keeps insertion order
    this.#entries.set(address, this.now() + this.ttlMs);
    while (this.#entries.size > this.maxEntries) {
      const oldest = this.#entries.keys().next().value as string;
      this.#entries.delete(oldest);
    }
  }

  get size(): number {
    return this.#entries.size;
  }
}
