/**
 * What happens to a message once it is durable in the spool:
 *   spam score and parse (concurrently, both reading the spooled bytes)
 *   ─▶ decision (accept, or reject when spamd says spam and the action is reject)
 *   ─▶ eom hooks (their verdict, and their edits: headers rewritten into a new spool entry that is
 *      committed before the reply, envelope changes, tags)
 *   ─▶ after the 250: commit to the store, publish on the bus, release the spool entry.
 * Also replays whatever a previous run left in the spool (at-least-once, idempotent by id).
 */
import { rm } from 'node:fs/promises';
import { pipeline as pump } from 'node:stream/promises';
import type { Config } from '../config/schema.js';
import type { EventBus } from '../bus/bus.js';
import { buildMailEvent } from '../events/build.js';
import type { MailEvent, SpamResult } from '../events/types.js';
import type { EventView } from '../hooks/api.js';
import { EomEdits } from '../hooks/edits.js';
import { rewriteHeaders } from '../hooks/rewrite.js';
import { CONTINUE, type HookSession, type PhaseResult } from '../hooks/runner.js';
import type { Logger } from '../log/logger.js';
import type { ParsedMessage, ParseLimits } from '../parse/types.js';
import type { MessageOutcome } from '../smtp/listener.js';
import type { Spool, SpooledMessage } from '../spool/spool.js';
import type { MessageStore } from '../store/types.js';
import type { Metrics } from '../metrics/metrics.js';
import { InFlight } from '../util/in-flight.js';
import type { RawSource } from '../util/raw-source.js';

export interface PipelineDeps {
  config: Config;
  logger: Logger;
  spool: Spool;
  store: MessageStore;
  bus: EventBus;
  score(raw: RawSource): Promise<SpamResult>;
  parse(raw: RawSource, attachmentsDir: string, limits: ParseLimits): Promise<ParsedMessage>;
  metrics: Metrics;
  /** First wait before storing a message again after the store failed; doubles up to RETRY_MAX_MS. */
  retryBaseMs?: number;
  /** Messages waiting to be stored again at most; default MAX_PENDING_RETRIES. */
  maxPendingRetries?: number;
}

const RETRY_BASE_MS = 1000;
const RETRY_MAX_MS = 60_000;
/**
 * Messages waiting to be stored again, each holding its event (and bytes, up to 64 KiB) in
 * memory. Once this many wait, new mail is deferred (451) until the store takes them: the
 * clients keep it meanwhile, so a long store outage grows neither this memory nor the spool
 * (which the next start would read whole). The messages already past that check when the limit
 * was reached (at most one per SMTP connection) are answered 250 and retried all the same, so
 * that they too are stored once the store works again, without a restart. Only recovery at
 * start, which has no client to defer, leaves a message past the limit in the spool for the
 * next start.
 */
const MAX_PENDING_RETRIES = 1000;

export class Pipeline {
  readonly #outcomes;
  readonly #seconds;
  readonly #retries = new Set<NodeJS.Timeout>();
  /** Retries whose store commit is running (close() waits for them). */
  readonly #retrying = new InFlight();
  #closed = false;
  get #maxPendingRetries(): number {
    return this.deps.maxPendingRetries ?? MAX_PENDING_RETRIES;
  }

  constructor(private readonly deps: PipelineDeps) {
    this.#outcomes = deps.metrics.counter('mailwire_messages_total', 'Messages after DATA, by outcome and spam status', ['result', 'spam']);
    this.#seconds = deps.metrics.histogram('mailwire_message_processing_seconds', 'From end of DATA to stored: scoring, parsing, storing', [], [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]);
  }

  /** Scores and parses a spooled message, runs the eom hooks, and says whether to accept it. */
  async process(msg: SpooledMessage, hooks: HookSession | null = null): Promise<MessageOutcome> {
    const started = performance.now();
    const { config, store } = this.deps;
    const waiting = this.#retries.size + this.#retrying.size;
    if (waiting >= this.#maxPendingRetries) {
      this.#outcomes.inc({ result: 'deferred-store', spam: 'skipped' });
      this.deps.logger.warn(
        { id: msg.id, from: msg.envelope.mailFrom, rcpts: msg.envelope.rcptTo.length, ip: msg.envelope.remoteAddress, size: msg.size, result: 'deferred-store', waiting },
        'message',
      );
      return { kind: 'reject', code: 451, enhanced: '4.3.0', message: 'Temporary local problem: the message store is not available, try again later' };
    }
    const event = await this.#analyse(msg);
    if (event.spam.status === 'spam' && config.spamd.action === 'reject') {
      await store.discardFiles(msg.id);
      this.#logOutcome(event, 'rejected-spam', started);
      return { kind: 'reject', code: 550, enhanced: '5.7.1', message: 'Message rejected as spam' };
    }
    if (hooks) return this.#endOfMessage(msg, event, hooks, started);
    return { kind: 'accept', afterReply: () => this.#commit(event, msg, started, 'always') };
  }

  /**
   * The eom phase: hooks see the spam result and the parsed event (a copy: their changes go
   * through the edit methods only). Edits are applied after every hook answered, and made
   * durable (a new spool entry) before the reply: nothing answered 250 is lost, and
   * the stored raw message and event are the edited ones.
   */
  async #endOfMessage(msg: SpooledMessage, event: MailEvent, hooks: HookSession, started: number): Promise<MessageOutcome> {
    const edits = new EomEdits();
    let result: PhaseResult = CONTINUE;
    if (hooks.has('eom')) {
      const view = structuredClone(event);
      result = await hooks.run('eom', { eom: { spam: view.spam, event: view as unknown as EventView, edits, headers: view.headers } });
    }
    const dropAttachments = () => this.deps.store.discardFiles(msg.id);
    if (result.kind === 'reject' || result.kind === 'tempfail') {
      await dropAttachments();
      this.#logOutcome(event, 'rejected-hook', started);
      return { kind: 'reject', code: result.code, enhanced: result.enhanced, message: result.message, disconnect: result.disconnect };
    }
    const rcptTo = edits.applyRecipients(msg.envelope.rcptTo);
    if (result.kind === 'discard' || rcptTo.length === 0) {
      // Answered 250, kept nowhere (a hook's discard, or every recipient removed). Released
      // before the reply: after a crash, recovery must not store what a hook discarded.
      await dropAttachments();
      await this.deps.spool.release(msg);
      this.#logOutcome(event, 'discarded-hook', started);
      return { kind: 'accept', disconnect: result.disconnect, afterReply: () => Promise.resolve() };
    }
    let final: MailEvent = { ...event, hooks: hooks.records(), tags: [...edits.tags] };
    let stored = msg;
    if (edits.changesRaw || edits.changesEnvelope) {
      try {
        ({ msg: stored, event: final } = await this.#applyEdits(msg, final, edits, rcptTo));
      } catch (err) {
        this.deps.logger.error({ err, id: msg.id }, 'applying eom hook edits failed');
        await dropAttachments();
        this.#logOutcome(event, 'rejected-hook-edit', started);
        return { kind: 'reject', code: 451, enhanced: '4.3.0', message: 'Temporary local problem, try again later' };
      }
    }
    return { kind: 'accept', disconnect: result.disconnect, afterReply: () => this.#commit(final, stored, started, 'always') };
  }

  /** Writes the edited message as a new spool entry (same id), committed before the reply. */
  async #applyEdits(msg: SpooledMessage, event: MailEvent, edits: EomEdits, rcptTo: string[]): Promise<{ msg: SpooledMessage; event: MailEvent }> {
    const { spool, store } = this.deps;
    const envelope = { ...msg.envelope, mailFrom: edits.sender ?? msg.envelope.mailFrom, rcptTo };
    // The size limit was enforced on the client's data; the edits themselves are bounded (edits.ts).
    const writer = spool.writer(msg.id, { maxSize: Number.MAX_SAFE_INTEGER, bareNewline: 'normalize' });
    await pump(await rewriteHeaders(msg.raw, edits.headers), writer);
    const outcome = writer.outcome();
    if (outcome.kind !== 'ok') throw new Error(`rewriting the message failed: ${outcome.kind}`);
    // Not answered yet (the reply waits for this outcome): replacing the entry may drop it on a crash.
    const stored = await spool.replace(msg, writer, outcome.size, outcome.sha256, envelope);
    if (!edits.changesRaw) return { msg: stored, event: { ...event, envelope } };
    try {
      // Parsed again so that every field (subject, from, headers, ...) agrees with the stored bytes.
      await rm(store.attachmentsDir(msg.id), { recursive: true, force: true });
      const parsed = await this.deps.parse(stored.raw, store.attachmentsDir(msg.id), this.#limits());
      return { msg: stored, event: buildMailEvent(stored, parsed, event.spam, event.hooks, event.tags) };
    } catch (err) {
      // The client gets a 451 and sends again: the new entry must not outlive this (the caller
      // releases the old one, which replace() released already).
      await spool.release(stored).catch(() => {});
      throw err;
    }
  }

  /**
   * Stores the event, publishes it, then releases the spool entry (in that order: see DESIGN.md).
   * When the store fails (disk full, I/O error), the message stays in the spool and storing it is
   * tried again with a growing wait, so it arrives once the store works again, without a
   * restart. `limit`: 'always' after a 250, 'bounded' at recovery (see MAX_PENDING_RETRIES).
   */
  async #commit(event: MailEvent, msg: SpooledMessage, started: number, limit: 'always' | 'bounded'): Promise<void> {
    try {
      await this.#store(event, msg, started);
    } catch (err) {
      this.#retryLater(event, msg, started, err, 1, limit);
    }
  }

  /**
   * Cancels the pending store retries and waits for those running (at stop, before the spool and
   * the store close); the messages not stored stay in the spool for the next start.
   */
  async close(): Promise<void> {
    this.#closed = true;
    for (const timer of this.#retries) clearTimeout(timer);
    this.#retries.clear();
    await this.#retrying.settled();
  }

  async #store(event: MailEvent, msg: SpooledMessage, started: number, retry = false): Promise<void> {
    const result = await this.deps.store.commit(event, msg.raw);
    // A retry can find the message stored: the failed attempt committed and then lost its
    // answer (the store's writer thread died in between). Published then, or the feed and the
    // webhooks, which the bus wakes up, would not look at the log for it until the next event.
    // They read the log by seq, so a second publish of a message sends nothing twice.
    if (result === 'inserted' || (retry && result === 'duplicate')) this.deps.bus.publish(event);
    this.deps.spool.releaseStored(msg);
    this.#logOutcome(event, result === 'inserted' ? 'accepted' : 'duplicate', started);
  }

  /** `bounded`: left in the spool instead once maxPendingRetries wait (see MAX_PENDING_RETRIES). */
  #retryLater(event: MailEvent, msg: SpooledMessage, started: number, err: unknown, attempt: number, limit: 'always' | 'bounded'): void {
    const { logger } = this.deps;
    if (this.#closed || (limit === 'bounded' && this.#retries.size >= this.#maxPendingRetries)) {
      logger.error({ err, id: msg.id }, 'storing an accepted message failed; it stays in the spool until the next start');
      return;
    }
    const delayMs = Math.min(RETRY_MAX_MS, (this.deps.retryBaseMs ?? RETRY_BASE_MS) * 2 ** (attempt - 1));
    logger.error({ err, id: msg.id, attempt, retryInMs: delayMs }, 'storing an accepted message failed; it stays in the spool and is tried again');
    const timer = setTimeout(() => {
      this.#retries.delete(timer);
      void this.#retrying.track(this.#store(event, msg, started, true).catch((e: unknown) => this.#retryLater(event, msg, started, e, attempt + 1, limit)));
    }, delayMs);
    timer.unref();
    this.#retries.add(timer);
  }

  /**
   * Processes everything a previous run left in the spool. Those messages may already have been
   * answered 250, so they are stored whatever the spam verdict says: losing mail is worse.
   */
  async recover(): Promise<number> {
    const pending = await this.deps.spool.recover();
    for (const msg of pending) {
      if (msg.relay) {
        await this.#dropRelayed(msg);
        continue;
      }
      try {
        // Stored already (the release of its spool entry was lost): committed again as stored,
        // which only releases it. Parsing it again would write into the stored message's
        // attachment files, and a parse cut short (deadline, full disk) truncates or removes them.
        const started = performance.now();
        const event = this.#storedEvent(msg.id) ?? (await this.#analyse(msg));
        await this.#commit(event, msg, started, 'bounded');
      } catch (err) {
        this.deps.logger.error({ err, id: msg.id }, 'recovering a spooled message failed; it stays in the spool');
      }
    }
    if (pending.length) this.deps.logger.info({ count: pending.length }, 'recovered spooled messages');
    return pending.length;
  }

  /**
   * The stored event of this id, or null. A row that cannot be read counts as not stored: the
   * message is parsed again, and the writer still sees the id and answers 'duplicate', so its
   * spool entry is released rather than kept at every start (holding back the event-log trim).
   */
  #storedEvent(id: string): MailEvent | null {
    try {
      return this.deps.store.get(id);
    } catch (err) {
      this.deps.logger.warn({ err, id }, 'reading a stored message failed; recovering it from the spool as if new');
      return null;
    }
  }

  /**
   * A message an SMTP client relayed (pipeline/outbound.ts) is handed to the upstream before the
   * client gets any reply, and the entry is released after it. Left over, it was either relayed
   * and answered (released too late) or not answered at all (the client retries): never local
   * mail, so it is not stored; relaying it again could send it twice.
   */
  async #dropRelayed(msg: SpooledMessage): Promise<void> {
    this.deps.logger.warn({ id: msg.id, from: msg.envelope.mailFrom, rcpt: msg.relay?.rcpt }, 'dropping a relayed message left in the spool (relayed or never answered)');
    await this.deps.spool.release(msg).catch((err) => this.deps.logger.error({ err, id: msg.id }, 'removing a relayed message from the spool failed'));
  }

  async #analyse(msg: SpooledMessage): Promise<MailEvent> {
    const { store } = this.deps;
    const [spam, parsed] = await Promise.all([
      this.deps.score(msg.raw),
      this.deps.parse(msg.raw, store.attachmentsDir(msg.id), this.#limits()),
    ]);
    return buildMailEvent(msg, parsed, spam);
  }

  #limits(): ParseLimits {
    const { config } = this.deps;
    return {
      maxTextBytes: config.parse.max_text_bytes,
      maxHtmlBytes: config.parse.max_html_bytes,
      maxAttachments: config.parse.max_attachments,
      maxHeaders: config.parse.max_headers,
      timeoutMs: config.parse.parse_timeout_ms,
    };
  }

  #logOutcome(event: MailEvent, result: string, started: number): void {
    this.#outcomes.inc({ result, spam: event.spam.status });
    this.#seconds.observe((performance.now() - started) / 1000);
    // One line per message outcome. Never bodies, never credentials.
    this.deps.logger.info(
      {
        id: event.id,
        from: event.envelope.mailFrom,
        rcpts: event.envelope.rcptTo.length,
        ip: event.envelope.remoteAddress,
        size: event.size,
        spam: event.spam.status,
        score: event.spam.score,
        ms: Math.round(performance.now() - started),
        result,
      },
      'message',
    );
  }
}
