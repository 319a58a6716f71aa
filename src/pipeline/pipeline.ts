/**
 * What happens to a message once it is durable in the spool:
 *   spam score and parse (concurrently, both reading the spool file)
 *   ─▶ decision (accept, or reject when spamd says spam and the action is reject)
 *   ─▶ after the 250: commit to the store, publish on the bus, release the spool entry.
 * Also replays whatever a previous run left in the spool (at-least-once, idempotent by id).
 */
import { rm } from 'node:fs/promises';
import type { Config } from '../config/schema.js';
import type { EventBus } from '../bus/bus.js';
import { buildMailEvent } from '../events/build.js';
import type { MailEvent, SpamResult } from '../events/types.js';
import type { Logger } from '../log/logger.js';
import type { ParsedMessage, ParseLimits } from '../parse/types.js';
import type { MessageOutcome } from '../smtp/listener.js';
import type { Spool, SpooledMessage } from '../spool/spool.js';
import type { MessageStore } from '../store/types.js';
import type { Metrics } from '../metrics/metrics.js';

export interface PipelineDeps {
  config: Config;
  logger: Logger;
  spool: Spool;
  store: MessageStore;
  bus: EventBus;
  score(rawPath: string): Promise<SpamResult>;
  parse(rawPath: string, attachmentsDir: string, limits: ParseLimits): Promise<ParsedMessage>;
  metrics: Metrics;
}

export class Pipeline {
  readonly #outcomes;
  readonly #seconds;

  constructor(private readonly deps: PipelineDeps) {
    this.#outcomes = deps.metrics.counter('mailwire_messages_total', 'Messages after DATA, by outcome and spam status', ['result', 'spam']);
    this.#seconds = deps.metrics.histogram('mailwire_message_processing_seconds', 'From end of DATA to stored: scoring, parsing, storing', [], [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]);
  }

  /** Scores and parses a spooled message and says whether to accept it. */
  async process(msg: SpooledMessage): Promise<MessageOutcome> {
    const started = performance.now();
    const { config, store } = this.deps;
    const event = await this.#analyse(msg);
    if (event.spam.status === 'spam' && config.spamd.action === 'reject') {
      await rm(store.attachmentsDir(msg.id), { recursive: true, force: true });
      this.#logOutcome(event, 'rejected-spam', started);
      return { kind: 'reject', code: 550, enhanced: '5.7.1', message: 'Message rejected as spam' };
    }
    return { kind: 'accept', afterReply: () => this.commit(event, msg, started) };
  }

  /** Stores the event, publishes it, then releases the spool entry (in that order: see DESIGN.md). */
  async commit(event: MailEvent, msg: SpooledMessage, started = performance.now()): Promise<void> {
    const result = await this.deps.store.commit(event, msg.rawPath);
    if (result === 'inserted') this.deps.bus.publish(event);
    await this.deps.spool.release(msg);
    this.#logOutcome(event, result === 'inserted' ? 'accepted' : 'duplicate', started);
  }

  /**
   * Processes everything a previous run left in the spool. Those messages may already have been
   * answered 250, so they are stored whatever the spam verdict says: losing mail is worse.
   */
  async recover(): Promise<number> {
    const pending = await this.deps.spool.recover();
    for (const msg of pending) {
      try {
        const event = await this.#analyse(msg);
        await this.commit(event, msg);
      } catch (err) {
        this.deps.logger.error({ err, id: msg.id }, 'recovering a spooled message failed; it stays in the spool');
      }
    }
    if (pending.length) this.deps.logger.info({ count: pending.length }, 'recovered spooled messages');
    return pending.length;
  }

  async #analyse(msg: SpooledMessage): Promise<MailEvent> {
    const { config, store } = this.deps;
    const limits: ParseLimits = {
      maxTextBytes: config.parse.max_text_bytes,
      maxHtmlBytes: config.parse.max_html_bytes,
      maxAttachments: config.parse.max_attachments,
      maxHeaders: config.parse.max_headers,
      timeoutMs: config.parse.parse_timeout_ms,
    };
    const [spam, parsed] = await Promise.all([
      this.deps.score(msg.rawPath),
      this.deps.parse(msg.rawPath, store.attachmentsDir(msg.id), limits),
    ]);
    return buildMailEvent(msg, parsed, spam);
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
