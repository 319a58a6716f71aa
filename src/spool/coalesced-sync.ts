/**
 * Coalesces fsyncs of one directory. A rename is durable once an fsync of its directory that
 * *started after the rename* has finished; an fsync already running may have read the
 * directory before the rename and proves nothing for it. So:
 *
 *   - nothing running: a caller starts an fsync at once;
 *   - one running: the caller waits for the next one, which starts as soon as the running one
 *     ends, and which every caller arriving in the meantime shares.
 *
 * Under load that is at most two fsyncs of the directory in the pipeline (one running, one
 * waiting to start) instead of one per message, and each caller waits at most the rest of
 * the running fsync plus one more.
 */
export class CoalescedSync {
  #running = false;
  /** Callers that arrived while an fsync was running: the next fsync is theirs. */
  #waiting: { resolve(): void; reject(err: unknown): void }[] = [];

  /** @param syncOnce one real fsync (of the directory) */
  constructor(private readonly syncOnce: () => Promise<void>) {}

  /** Resolves after an fsync that started after this call has finished; rejects if it failed. */
  sync(): Promise<void> {
    if (!this.#running) return this.#start();
    return new Promise<void>((resolve, reject) => this.#waiting.push({ resolve, reject }));
  }

  #start(): Promise<void> {
    this.#running = true;
    const done = new Promise<void>((resolve) => resolve(this.syncOnce()));
    // Hand over in the same callback that ends this fsync, so no caller can slip in between
    // and start a second fsync alongside the next one.
    const handOver = () => {
      this.#running = false;
      const waiting = this.#waiting;
      if (waiting.length === 0) return;
      this.#waiting = [];
      this.#start().then(
        () => waiting.forEach((w) => w.resolve()),
        (err: unknown) => waiting.forEach((w) => w.reject(err)),
      );
    };
    done.then(handOver, handOver);
    return done;
  }
}
