/**
 * Retention: deletes the oldest messages once the store holds more than storage.max_messages,
 * and messages older than storage.max_age_s. Mail is hostile input and arrives whether or not
 * anyone reads it; without a bound, a busy MX fills the disk. Both limits are off (0) by
 * default: a gateway must not drop mail an application has not consumed unless told to.
 *
 * A deletion is the same as DELETE /api/v1/messages/:id: the row, its raw message and its
 * attachments go, the store logs mail.deleted (webhooks follow that log) and onDeleted
 * publishes it to the live feed.
 *
 * When: shortly after messages are stored (so max_messages holds within a moment, not a
 * minute), and every CHECK_INTERVAL_MS for the age limit. Sweeps never overlap; a request
 * during a sweep runs one more after it. Work per round is bounded (BATCH rows read).
 */
import type { Logger } from '../log/logger.js';
import type { RetentionView } from './types.js';

export interface RetentionLimits {
  /** 0: no limit on the number of messages. */
  maxMessages: number;
  /** 0: no age limit. Age is counted from receivedAt. */
  maxAgeS: number;
}

export interface RetentionDeps {
  store: RetentionView & { delete(id: string): Promise<boolean> };
  limits: RetentionLimits;
  logger: Logger;
  /** A message was deleted by retention (publish mail.deleted). */
  onDeleted(id: string): void;
  /** For tests: the clock and the age check's period. */
  now?: () => number;
  checkIntervalMs?: number;
}

const CHECK_INTERVAL_MS = 60_000;
// Messages examined per round: one indexed read of this many rows, then their deletions.
const BATCH = 200;
// After a message is stored, wait this long so that a burst is swept in one go, not per message.
const AFTER_COMMIT_DELAY_MS = 250;

export class Retention {
  readonly #deps: RetentionDeps;
  readonly #now: () => number;
  #timer: NodeJS.Timeout | null = null;
  #soon: NodeJS.Timeout | null = null;
  #running: Promise<number> | null = null;
  #again = false;
  #stopped = false;

  constructor(deps: RetentionDeps) {
    this.#deps = deps;
    this.#now = deps.now ?? Date.now;
  }

  get enabled(): boolean {
    const { maxMessages, maxAgeS } = this.#deps.limits;
    return maxMessages > 0 || maxAgeS > 0;
  }

  /** Sweeps now, then checks the age limit periodically. A no-op when both limits are off. */
  start(): void {
    if (!this.enabled || this.#stopped) return;
    this.#kick();
    if (this.#deps.limits.maxAgeS > 0) {
      this.#timer = setInterval(() => this.#kick(), this.#deps.checkIntervalMs ?? CHECK_INTERVAL_MS);
      this.#timer.unref();
    }
  }

  /** Call when a message was stored: the count limit is enforced shortly after. */
  messageStored(): void {
    if (this.#deps.limits.maxMessages <= 0 || this.#stopped || this.#soon) return;
    this.#soon = setTimeout(() => {
      this.#soon = null;
      this.#kick();
    }, AFTER_COMMIT_DELAY_MS);
    this.#soon.unref();
  }

  /** Stops the timers and waits for a sweep in progress (before the store closes). */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearInterval(this.#timer);
    if (this.#soon) clearTimeout(this.#soon);
    this.#timer = this.#soon = null;
    await this.#running;
  }

  /**
   * Deletes every message over the limits, oldest first, and resolves with how many. A call
   * during a sweep resolves when that sweep and the one it asked for are done.
   */
  async sweep(): Promise<number> {
    if (this.#running) {
      this.#again = true;
      return this.#running;
    }
    const run = (async () => {
      let deleted = 0;
      do {
        this.#again = false;
        deleted += await this.#sweepOnce();
      } while (this.#again && !this.#stopped);
      return deleted;
    })();
    this.#running = run;
    try {
      return await run;
    } finally {
      this.#running = null;
    }
  }

  #kick(): void {
    this.sweep().catch((err: unknown) => this.#deps.logger.error({ err }, 'retention sweep failed'));
  }

  async #sweepOnce(): Promise<number> {
    const { store, limits, logger } = this.#deps;
    let deleted = 0;
    while (!this.#stopped) {
      const excess = limits.maxMessages > 0 ? Math.max(0, store.count() - limits.maxMessages) : 0;
      // receivedAt is always an ISO 8601 UTC timestamp (toISOString), so strings compare as times.
      const cutoff = limits.maxAgeS > 0 ? new Date(this.#now() - limits.maxAgeS * 1000).toISOString() : null;
      const ids: string[] = [];
      for (const [i, m] of store.oldest(BATCH).entries()) {
        if (i < excess || (cutoff !== null && m.receivedAt < cutoff)) ids.push(m.id);
        else break; // commit order is close to arrival order: the rest are newer
      }
      if (ids.length === 0) break;
      let round = 0;
      for (const id of ids) {
        if (this.#stopped) break;
        // false: deleted meanwhile (an API call); it was logged and published there.
        if (await store.delete(id)) {
          round++;
          this.#deps.onDeleted(id);
        }
      }
      deleted += round;
      if (round === 0) break; // nothing changed: never spin on rows that will not go
    }
    if (deleted > 0) logger.info({ deleted, maxMessages: limits.maxMessages, maxAgeS: limits.maxAgeS }, 'retention deleted old messages');
    return deleted;
  }
}
