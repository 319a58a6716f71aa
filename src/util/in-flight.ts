/**
 * Work a close() must wait for: promises tracked until they settle. Used where a module's
 * close() lets what it already started finish (the spool journal's writes, the store's
 * commits, the spool's unlinks, the pipeline's store retries).
 */
export class InFlight {
  readonly #running = new Set<Promise<void>>();

  /** Tracks `work` until it settles (fulfilled or rejected); returns it unchanged. */
  track<T>(work: Promise<T>): Promise<T> {
    const settled = work.then(
      () => {},
      () => {},
    );
    this.#running.add(settled);
    void settled.then(() => this.#running.delete(settled));
    return work;
  }

  get size(): number {
    return this.#running.size;
  }

  /** Resolves once everything tracked has settled, including what is tracked meanwhile. */
  async settled(): Promise<void> {
    while (this.#running.size > 0) await Promise.all(this.#running);
  }
}
