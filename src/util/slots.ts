/**
 * A counting semaphore with a bounded, deadline-limited wait queue: at most `max` holders at
 * once, at most `maxQueued` waiting (first come, first served), none waiting longer than the
 * deadline. A burst a little above `max` is smoothed out instead of refused; a flood beyond
 * `max + maxQueued` is refused at once, so waiting never grows without bound.
 */
export type Release = () => void;

export class Slots {
  readonly #max: number;
  readonly #maxQueued: number;
  #held = 0;
  readonly #queue: ((release: Release | null) => void)[] = [];

  constructor(max: number, maxQueued: number) {
    this.#max = max;
    this.#maxQueued = maxQueued;
  }

  get held(): number {
    return this.#held;
  }

  get queued(): number {
    return this.#queue.length;
  }

  /** A slot at once, or null when all are held (no waiting). */
  tryAcquire(): Release | null {
    if (this.#held >= this.#max) return null;
    this.#held++;
    return this.#releaser();
  }

  /**
   * A slot, waiting up to waitMs for one; null when the queue is full, the wait ran out, or
   * `signal` aborted (the waiter gave up: its place goes to the next one).
   */
  acquire(waitMs: number, signal?: AbortSignal): Promise<Release | null> {
    const now = this.tryAcquire();
    if (now) return Promise.resolve(now);
    if (this.#queue.length >= this.#maxQueued || signal?.aborted) return Promise.resolve(null);
    return new Promise((resolve) => {
      const settle = (release: Release | null): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', giveUp);
        resolve(release);
      };
      const giveUp = (): void => {
        const i = this.#queue.indexOf(settle);
        if (i >= 0) this.#queue.splice(i, 1);
        settle(null);
      };
      const timer = setTimeout(giveUp, waitMs);
      signal?.addEventListener('abort', giveUp, { once: true });
      this.#queue.push(settle);
    });
  }

  /** Idempotent: releasing twice frees one slot, not two. */
  #releaser(): Release {
    let done = false;
    return () => {
      if (done) return;
      done = true;
      // The slot passes straight to the first waiter, so a newcomer cannot jump the queue.
      const next = this.#queue.shift();
      if (next) next(this.#releaser());
      else this.#held--;
    };
  }
}
