/**
 * Keeps the store's event log from growing without end. Every message leaves a mail.received
 * entry and, once deleted (through the API or by retention), a mail.deleted entry; on an MX
 * that deletes as much as it receives, those entries would be most of the database after a
 * year. The trim walks the log from its horizon (how far it got before) in log order:
 *
 *   - it stops at the first entry logged less than storage.event_log_max_age_s ago (default 7
 *     days), and at the lowest webhook cursor: a webhook catching up still finds every entry;
 *   - of what it walks it removes mail.deleted entries, with the mail.received entry of the
 *     message they delete, and the mail.received entries of messages gone. A live message's
 *     entry stays: since=<id> resolves it, and it makes a second commit of that message a no-op;
 *   - it also stops at the receivedAt of the oldest message record in the spool, less an
 *     hour for clock steps. A record can outlive its message's release (a tombstone that could
 *     not be written), and spool recovery then commits that message again: the mail.received
 *     entry (logged after the message began to arrive, and stamped again by such a commit) is
 *     what keeps a message deleted since from coming back, so it stays while such a record
 *     might exist.
 *
 * The horizon moves to the last entry walked. A feed client resuming from before it could have
 * missed a mail.deleted, so it is told to reload (close code 4410) rather than silently given a
 * log with holes in it.
 *
 * Work is bounded: BATCH entries per SQLite transaction, at most MAX_BATCHES per round, with
 * the event loop free between them; a round runs at start and every INTERVAL_MS.
 */
import type { Logger } from '../log/logger.js';
import type { EventLogTrim } from './types.js';

export interface EventLogTrimDeps {
  store: EventLogTrim;
  /** Age past which an entry no reader needs is removed; 0 keeps the whole log. */
  maxAgeS: number;
  /** The lowest webhook cursor (entries after it are still to be considered); Infinity without webhooks. */
  keepFrom(): number;
  /** Spool.oldestRecordTime(): ms since the epoch before which nothing in the spool was written. */
  oldestSpooled(): number;
  logger: Logger;
  /** For tests. */
  now?: () => number;
  intervalMs?: number;
}

const INTERVAL_MS = 10 * 60_000;
/** receivedAt and logged_at come from the wall clock; a step back of up to this is tolerated. */
const CLOCK_MARGIN_MS = 60 * 60_000;
const BATCH = 1000;
const MAX_BATCHES = 100;

export class EventLogTrimmer {
  readonly #deps: EventLogTrimDeps;
  #timer: NodeJS.Timeout | null = null;
  #running: Promise<number> | null = null;
  #stopped = false;

  constructor(deps: EventLogTrimDeps) {
    this.#deps = deps;
  }

  get enabled(): boolean {
    return this.#deps.maxAgeS > 0;
  }

  /** A round now, then one every interval. A no-op when trimming is off. */
  start(): void {
    if (!this.enabled || this.#stopped) return;
    void this.round();
    this.#timer = setInterval(() => void this.round(), this.#deps.intervalMs ?? INTERVAL_MS);
    this.#timer.unref();
  }

  /** Removes what is old enough, batch by batch; resolves with how many entries went. */
  round(): Promise<number> {
    // Rounds never overlap: a timer firing during a long round joins it.
    this.#running ??= this.#round().finally(() => (this.#running = null));
    return this.#running;
  }

  async #round(): Promise<number> {
    const { store, logger } = this.#deps;
    const byAge = (this.#deps.now ?? Date.now)() - this.#deps.maxAgeS * 1000;
    // A Date holds at most 8.64e15 ms: Infinity (an empty spool) would not make an ISO string.
    const before = new Date(Math.max(0, Math.min(byAge, this.#deps.oldestSpooled() - CLOCK_MARGIN_MS))).toISOString();
    let removed = 0;
    try {
      for (let i = 0; i < MAX_BATCHES && !this.#stopped; i++) {
        const step = await store.trimEventLog(before, this.#deps.keepFrom(), BATCH);
        removed += step.removed;
        if (!step.more) break;
        await new Promise((resolve) => setImmediate(resolve));
      }
    } catch (err) {
      // The next round tries again; nothing is lost by a late trim.
      logger.error({ err }, 'trimming the event log failed');
    }
    if (removed > 0) logger.info({ removed, before }, 'event log trimmed');
    return removed;
  }

  /** Stops the timer and waits for a round in progress (before the store closes). */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
    await this.#running;
  }
}
