/**
 * Group commit: many callers, one durable write. Every durable commit ends in an fsync (the
 * SQLite WAL with synchronous=FULL, a directory); under load most of the time goes to those
 * syncs, not to the work they protect. Callers that arrive while a batch is being written wait
 * for the next batch instead of each paying for their own sync:
 *
 *   submit(a) ─┐                       submit(c) ─┐
 *   submit(b) ─┴─▶ batch [a, b] ─ sync ─▶ done      └─▶ batch [c, …] (starts when [a, b] is done)
 *
 * One batch runs at a time. A batch starts on the next turn of the event loop after the first
 * submit (setImmediate), so everything submitted in the same turn joins it, or as soon as the
 * previous batch finished. Each caller gets its own result: the runner reports one outcome
 * per item, and a runner that throws fails every caller of that batch (never silently).
 *
 * Lingering: when commits arrive concurrently (the previous batch held lingerFrom items or
 * more), the next batch waits up to lingerMs after its first item for more to join, unless it fills
 * up first. Under load that makes batches several times larger, so far fewer syncs for the
 * same work; a lone caller (one commit at a time, as in spool recovery) never waits for it.
 */

/** What a runner reports for one item of a batch. */
export type ItemOutcome<R> = { ok: true; value: R } | { ok: false; error: unknown };

/** Writes a batch durably; returns exactly one outcome per item, in the same order. */
export type BatchRunner<T, R> = (items: readonly T[]) => Promise<ItemOutcome<R>[]>;

interface Waiting<T, R> {
  item: T;
  /** performance.now() at submit */
  at: number;
  resolve(value: R): void;
  reject(err: unknown): void;
}

export interface GroupCommitOptions {
  /**
   * Bounds one batch, and so how long one write transaction holds the database's write lock
   * (an API delete waits for it). Default 128.
   */
  maxBatch?: number;
  /** How long a batch may wait for more items while commits arrive concurrently. Default 0. */
  lingerMs?: number;
  /**
   * The size of the previous batch from which the next one lingers (default 2). Higher keeps
   * a moderate, bursty flow (two commits now and then) from paying the linger as latency,
   * while a sustained high rate, whose batches are large, still gets them larger.
   */
  lingerFrom?: number;
}

export class GroupCommit<T, R> {
  readonly #maxBatch: number;
  readonly #lingerMs: number;
  readonly #lingerFrom: number;
  #queue: Waiting<T, R>[] = [];
  #running = false;
  /** The next batch's start, when scheduled: on the next turn of the loop, or after a linger. */
  #immediate: NodeJS.Immediate | null = null;
  #lingerTimer: NodeJS.Timeout | null = null;
  /** Size of the last batch: more than one means callers are arriving concurrently. */
  #lastBatchSize = 0;

  constructor(
    private readonly run: BatchRunner<T, R>,
    options: GroupCommitOptions = {},
  ) {
    this.#maxBatch = options.maxBatch ?? 128;
    this.#lingerMs = options.lingerMs ?? 0;
    this.#lingerFrom = options.lingerFrom ?? 2;
    if (!Number.isSafeInteger(this.#maxBatch) || this.#maxBatch < 1) throw new RangeError('maxBatch must be a positive integer');
    if (!(this.#lingerMs >= 0)) throw new RangeError('lingerMs must be >= 0');
  }

  /** Resolves with this item's result once the batch holding it is durable. */
  submit(item: T): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      this.#queue.push({ item, at: performance.now(), resolve, reject });
      this.#schedule();
    });
  }

  /** Items waiting for a batch (not counting the batch being written). */
  get pending(): number {
    return this.#queue.length;
  }

  #schedule(): void {
    if (this.#running || this.#immediate || this.#queue.length === 0) return;
    const full = this.#queue.length >= this.#maxBatch;
    const lingering = !full && this.#lastBatchSize >= this.#lingerFrom;
    const wait = lingering ? this.#lingerMs - (performance.now() - this.#queue[0]!.at) : 0;
    if (wait > 0) this.#lingerTimer ??= setTimeout(() => this.#startSoon(), wait);
    else this.#startSoon();
  }

  /**
   * Starts the next batch on the next turn of the loop (setImmediate, not a microtask: callers
   * finishing their own file work in this same turn still join it).
   */
  #startSoon(): void {
    this.#immediate ??= setImmediate(() => {
      this.#immediate = null;
      void this.#flush();
    });
  }

  async #flush(): Promise<void> {
    if (this.#running) return;
    this.#running = true;
    if (this.#lingerTimer) clearTimeout(this.#lingerTimer);
    this.#lingerTimer = null;
    const batch = this.#queue.splice(0, this.#maxBatch);
    this.#lastBatchSize = batch.length;
    try {
      const outcomes = await this.#runBatch(batch.map((w) => w.item));
      batch.forEach((w, i) => {
        const outcome = outcomes[i]!;
        if (outcome.ok) w.resolve(outcome.value);
        else w.reject(outcome.error);
      });
    } catch (err) {
      for (const w of batch) w.reject(err);
    } finally {
      this.#running = false;
      this.#schedule();
    }
  }

  async #runBatch(items: T[]): Promise<ItemOutcome<R>[]> {
    const outcomes = await this.run(items);
    if (outcomes.length !== items.length) throw new Error(`group commit: ${outcomes.length} outcomes for ${items.length} items`);
    return outcomes;
  }
}
