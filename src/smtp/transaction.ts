/**
 * One DATA transaction, from the DATA command to the message stored:
 *
 *   receiving ─▶ (client's final dot) ─▶ processing ─▶ reply ─▶ storing ─▶ done
 *
 * - receiving: bytes stream into the spool writer under an absolute DATA deadline (the only
 *   phase the client controls, so the only one the deadline covers).
 * - processing: spool commit (fsync), then the caller's onMessage (spam score, parse). Bounded
 *   by those steps' own deadlines; nothing here may send a reply but the final one.
 * - storing: after a 250, the caller's afterReply (store commit, publish, spool release).
 */
import type { SMTPServerDataStream } from 'smtp-server';
import type { Envelope } from '../events/types.js';
import type { HookSession } from '../hooks/runner.js';
import { HookStreamTap, type StreamLimits } from '../hooks/stream.js';
import type { Logger } from '../log/logger.js';
import type { Spool, SpooledMessage } from '../spool/spool.js';
import { SmtpReplyError } from './connection-control.js';

export type MessageOutcome =
  | {
      kind: 'accept';
      afterReply(): Promise<void>;
      disconnect?: boolean;
      /** The 250 reply's text (enhanced code first); default `2.0.0 Ok: queued as <id>`. A relayed message carries the upstream's. */
      reply?: string;
    }
  | { kind: 'reject'; code: number; enhanced: string; message: string; disconnect?: boolean };

export type TransactionPhase = 'receiving' | 'processing' | 'storing' | 'done';

export interface TransactionOptions {
  id: string;
  sessionId: string;
  envelope: Envelope;
  receivedAt: Date;
  /** Our Received: header, written before the client's bytes. */
  traceHeader: Buffer;
  maxSize: number;
  dataTimeoutMs: number;
  bareNewline: 'reject' | 'normalize';
  spool: Spool;
  logger: Logger;
  onMessage(msg: SpooledMessage): Promise<MessageOutcome>;
  /** Called on each phase change (the listener tracks phases for shutdown and deadlines). */
  onPhase(phase: TransactionPhase): void;
  /** Closes the connection with a reply (the DATA deadline). */
  closeWith(code: number, text: string): void;
  /** Closes the connection after the final reply (a hook asked for a disconnect). */
  close(): void;
  /** The session's hooks: header/eoh/body run over the stream, the transaction ends at the reply. */
  hooks: HookSession | null;
  hookLimits: StreamLimits;
  /** The transaction relays to this non-local recipient: recorded in the spool entry (see SpooledMessage.relay). */
  relay?: { rcpt: string };
}

type Reply = (err: Error | null, message?: string) => void;

export interface Transaction {
  /** Resolves when the transaction is over (stored, refused or abandoned). */
  done: Promise<void>;
  /** The client went away: drop a message still being received (nothing was answered). */
  abandon(): void;
}

export function runTransaction(stream: SMTPServerDataStream, cb: Reply, o: TransactionOptions): Transaction {
  let abandon = () => {};
  const settled = new Promise<void>((done) => {
    const { spool, logger, id } = o;
    const writer = spool.writer(id, { maxSize: o.maxSize, bareNewline: o.bareNewline, prefix: o.traceHeader });
    let answered = false;
    const finish = () => {
      o.onPhase('done');
      done();
    };
    const reply: Reply = (err, message) => {
      if (answered) return;
      answered = true;
      // The transaction is over for the hooks before smtp-server reads the next command.
      o.hooks?.resetTransaction();
      cb(err, message);
    };
    // header/eoh/body hooks watch the stream on its way to the spool (only when configured).
    const hooks = o.hooks;
    const tap = hooks && (hooks.has('header') || hooks.has('eoh') || hooks.has('body')) ? new HookStreamTap(hooks, o.hookLimits) : null;
    const source = tap ?? stream;
    const discard = () => spool.discard(id).catch((err) => logger.error({ err, id }, 'removing a refused message from the spool failed'));
    o.onPhase('receiving');

    let receiving = true;
    // Stops receiving for good: the connection goes away, so smtp-server's callback stays silent.
    const drop = () => {
      receiving = false;
      answered = true;
      clearTimeout(deadline);
      stream.unpipe();
      source.unpipe(writer);
      tap?.destroy();
      writer.destroy();
      void discard().then(finish);
    };
    abandon = () => {
      if (receiving) drop();
    };
    // The client owns this phase: an absolute deadline, so one byte a minute cannot hold the slot.
    const deadline = setTimeout(() => {
      logger.info({ session: o.sessionId, id }, 'DATA time limit reached');
      drop();
      o.closeWith(421, '4.4.2 DATA time limit exceeded, closing connection');
    }, o.dataTimeoutMs);
    deadline.unref();

    const fail = (err: Error) => {
      if (answered) return;
      receiving = false;
      clearTimeout(deadline);
      logger.error({ err, id }, 'spooling failed');
      // Keep reading (and dropping) the rest of the message, so the reply can be sent at its end.
      stream.unpipe();
      source.unpipe(writer);
      tap?.destroy();
      stream.resume();
      writer.destroy();
      void discard().then(() => {
        reply(new SmtpReplyError(451, '4.3.0', 'Local error in processing, try again later'));
        finish();
      });
    };
    stream.once('error', fail);
    tap?.once('error', fail);
    writer.once('error', fail);
    writer.once('finish', () => {
      receiving = false;
      clearTimeout(deadline);
      if (answered) return;
      o.onPhase('processing');
      const outcome = writer.outcome();
      const hookReply = outcome.kind === 'ok' ? streamHookReply(tap, o) : null;
      if (hookReply) {
        // A header, eoh or body hook refused the message (or its header block was too big for them).
        logger.info({ id, session: o.sessionId, ip: o.envelope.remoteAddress, from: o.envelope.mailFrom, rcpts: o.envelope.rcptTo.length, result: 'rejected-hook' }, 'message');
        void discard().then(() => {
          reply(hookReply.err);
          if (hookReply.disconnect) o.close();
          finish();
        });
        return;
      }
      if (outcome.kind !== 'ok') {
        const err =
          outcome.kind === 'too-big'
            ? new SmtpReplyError(552, '5.3.4', `Message size exceeds fixed maximum message size ${o.maxSize}`)
            : new SmtpReplyError(550, '5.5.2', 'Message contains bare CR or LF (RFC 5321 2.3.8), not accepted');
        // One line per message outcome, refused ones included.
        logger.info(
          { id, session: o.sessionId, ip: o.envelope.remoteAddress, from: o.envelope.mailFrom, rcpts: o.envelope.rcptTo.length, result: `rejected-${outcome.kind}` },
          'message',
        );
        // Discard before replying, so nothing of a refused message outlives the reply.
        void discard().then(() => {
          reply(err);
          finish();
        });
        return;
      }
      spool
        .commit(writer, outcome.size, outcome.sha256, o.envelope, o.receivedAt.toISOString(), o.relay ? { relay: o.relay } : {})
        .then((msg) => decide(msg, reply, o))
        .catch((err: Error) => {
          logger.error({ err, id }, 'spool commit failed');
          void discard().then(() => reply(new SmtpReplyError(451, '4.3.0', 'Local error in processing, try again later')));
        })
        .finally(finish);
    });
    if (tap) stream.pipe(tap);
    source.pipe(writer);
  });
  return { done: settled, abandon: () => abandon() };
}

async function decide(msg: SpooledMessage, reply: Reply, o: TransactionOptions): Promise<void> {
  const { spool, logger } = o;
  let outcome: MessageOutcome;
  try {
    outcome = await o.onMessage(msg);
  } catch (err) {
    // Broken infrastructure (spool unreadable, disk full): nothing was answered yet, so drop
    // the spool entry and have the client retry later.
    logger.error({ err, id: msg.id }, 'message processing failed');
    await spool.release(msg).catch(() => {});
    return reply(new SmtpReplyError(451, '4.3.0', 'Local error in processing, try again later'));
  }
  if (outcome.kind === 'reject') {
    await spool.release(msg).catch(() => {});
    reply(new SmtpReplyError(outcome.code, outcome.enhanced, outcome.message));
    if (outcome.disconnect) o.close();
    return;
  }
  reply(null, outcome.reply ?? `2.0.0 Ok: queued as ${msg.id}`);
  if (outcome.disconnect) o.close();
  o.onPhase('storing');
  // The message is durable in the spool; if storing fails it is recovered at the next start.
  await outcome.afterReply().catch((err) => logger.error({ err, id: msg.id }, 'storing an accepted message failed; it stays in the spool'));
}

/** The reply a header/eoh/body hook decided (kept until the end of DATA), or null. */
function streamHookReply(tap: HookStreamTap | null, o: TransactionOptions): { err: SmtpReplyError; disconnect: boolean } | null {
  if (!tap) return null;
  if (tap.tooLarge) return { err: new SmtpReplyError(552, '5.3.4', 'Message header block too large'), disconnect: false };
  const r = o.hooks?.streamResult;
  return r ? { err: new SmtpReplyError(r.code, r.enhanced, r.message), disconnect: r.disconnect } : null;
}
