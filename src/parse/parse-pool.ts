/**
 * Runs parseMessageFile in worker threads (worker.ts), so that parsing never blocks the SMTP and
 * HTTP event loop, and enforces the parse deadline even against synchronous work.
 *
 * Why: mailparser does some work in one synchronous call. A quoted-printable part, for one, is
 * buffered whole and decoded at the end of the part: a 19 MB QP text/plain message held the event
 * loop for about 1.1 s (libqp decode, then GC), twenty of them for seconds. parseMessageFile's own
 * deadline is a timer, and a timer cannot interrupt synchronous work; worker.terminate() can.
 *
 * Deadlines, both from limits.timeoutMs:
 * - soft, inside the worker (parseMessageFile): at timeoutMs the streams are destroyed and the fields
 *   collected so far are returned, with parseError "parse timed out after N ms". This is the usual case.
 * - hard, here: at timeoutMs + HARD_DEADLINE_GRACE_MS after the job was handed to a worker, that
 *   worker is terminated (which stops synchronous work too) and replaced, whatever attachment files
 *   it wrote are removed (the whole attachmentsDir), and the job resolves with an empty message and
 *   the same parseError. The grace is there so that the soft deadline normally wins and keeps its
 *   partial result: it fires late only by the length of the synchronous step in progress, and
 *   building and posting the result takes a few ms more. One second covers ordinary parts (decoded
 *   in well under 100 ms) on a loaded machine; a step longer than that is exactly what the hard
 *   deadline is for, and the message is reported as timed out either way.
 * Time spent waiting in the queue counts for neither deadline: they bound the work on one message.
 *
 * Failures:
 * - parseMessageFile rejecting (spool file unreadable, attachment not writable) rejects the caller's
 *   promise with an Error carrying the worker's message and code: infrastructure, the SMTP side
 *   answers 451 and the client retries.
 * - A worker dying mid-job (an uncaught exception, out of memory) resolves that job like the hard
 *   deadline does: the job's attachmentsDir is removed, the message gets no parsed content and
 *   parseError "parse worker died: ...", and a replacement worker is started. Logged at error.
 *   Rejecting would answer 451, and a message that kills a worker would then do so at every retry.
 * - A worker that dies before it has loaded (missing build, broken install) is retried with a backoff
 *   (1 s doubling to 30 s); while no worker is up, queued jobs are rejected rather than left waiting.
 *
 * Queue: a plain FIFO without a bound. What feeds it is bounded already: one job per message in DATA
 * processing, so at most smtp.max_connections (plus the one-at-a-time spool recovery at start).
 * Every queued job holds only its paths, never the message.
 *
 * Workers are referenced (keep the process alive) only while they run a job: an idle pool never holds
 * the process open, a running parse does. close() terminates them all.
 */
import { rm } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import type { Logger } from '../log/logger.js';
import { unparsed, type ParseLimits, type ParsedMessage } from './types.js';
import { workerSpawn } from '../util/worker-spawn.js';
import type { RawSource } from '../util/raw-source.js';
import type { ParseJobMessage, ParseReplyMessage, WorkerToPoolMessage } from './worker.js';

export interface ParsePool {
  /**
   * Parses a spooled message in a worker; same contract as parseMessageFile. Bytes in memory
   * are copied to the worker; a file is read there.
   */
  parse(raw: RawSource, attachmentsDir: string, limits: ParseLimits): Promise<ParsedMessage>;
  /** Stops accepting jobs, rejects queued and running ones, and resolves once every worker has exited. */
  close(): Promise<void>;
}

export interface ParsePoolOptions {
  /** Worker threads; default 2. See defaultParsePoolSize(). */
  size?: number;
  logger: Logger;
  /** How long past limits.timeoutMs a job may run before its worker is terminated. Default 1000 ms. */
  hardDeadlineGraceMs?: number;
  /** Each worker's old-generation heap limit; default workerHeapMb() of the default message size. See there. */
  workerHeapMb?: number;
}

export const HARD_DEADLINE_GRACE_MS = 1000;

/**
 * Each worker's heap. With V8's defaults (young generation 48 MB, old generation 4 GB on this
 * 24 GB machine) a worker parsing large messages lets its heap grow far before collecting: with
 * 20 messages of 20 MB arriving at once the process peaked at 283-304 MB RSS (bench, 6 runs).
 * Measured alternatives: young 16 MB and old 1024 MB: 232-233 MB; young 8 MB: 215 MB but ~10%
 * more worker CPU per small message; an old limit of 2048 MB or more: 268-271 MB (V8 sizes the
 * heap's growth from the limit). 16 MB showed no throughput cost beyond the noise.
 *
 * The old-generation limit also bounds what one hostile message can make a worker allocate (it
 * dies with ERR_WORKER_OUT_OF_MEMORY, see Failures above), so it must leave room for the largest
 * legitimate message: mailparser buffers a quoted-printable part whole, and a 25 MB one needed
 * more than 256 MB and less than 512 MB. workerHeapMb() gives 40 times the message size limit,
 * at least 1024 MB.
 *
 * A --max-semi-space-size flag on node's command line wins over the young-generation limit here
 * (V8 applies it to every isolate in the process). `npm start` passes one (package.json
 * config.node_flags, for the main thread's sake); the workers then get that young generation
 * too, which cost 261-262 MB peak RSS in the same bench and less parse CPU per small message.
 */
const WORKER_YOUNG_GENERATION_MB = 16;

export function workerHeapMb(maxMessageBytes: number): number {
  return Math.max(1024, Math.ceil((40 * maxMessageBytes) / (1024 * 1024)));
}

/**
 * One worker per core, at least 1 and at most 4. Parsing is CPU-bound: more workers than cores add
 * contention, not throughput; the main thread (SMTP, HTTP, SQLite) is mostly waiting on I/O and the
 * OS scheduler gives it its share next to busy workers. The cap bounds memory: each worker is an
 * isolate with mailparser loaded (about 10-20 MB), and a message in parse can briefly take several
 * times its size (a 25 MB QP part: raw chunks, a binary string, the decoded buffer).
 */
export function defaultParsePoolSize(): number {
  return Math.max(1, Math.min(4, availableParallelism()));
}

// setTimeout turns a delay past 2^31-1 ms into 1 ms.
const MAX_TIMER_MS = 2 ** 31 - 1;
const BOOT_RETRY_MS = 1000;
const BOOT_RETRY_MAX_MS = 30_000;

interface Job {
  id: number;
  rawPath: string | null;
  attachmentsDir: string;
  limits: ParseLimits;
  bytes: Buffer | null;
  resolve(result: ParsedMessage): void;
  reject(err: Error): void;
}

interface Slot {
  worker: Worker;
  ready: boolean;
  job: Job | null;
  timer: NodeJS.Timeout | null;
  /** Terminated by the pool (deadline, close) or already handled as dead: its events are ignored. */
  retired: boolean;
  error: Error | null;
}

export function createParsePool(options: ParsePoolOptions): ParsePool {
  const size = Math.max(1, Math.floor(options.size ?? 2));
  const graceMs = options.hardDeadlineGraceMs ?? HARD_DEADLINE_GRACE_MS;
  const heapMb = options.workerHeapMb ?? workerHeapMb(25 * 1024 * 1024);
  const { logger } = options;
  const spawnOptions = workerSpawn(new URL('./worker.js', import.meta.url));

  const slots = new Set<Slot>();
  const queue: Job[] = [];
  const exiting = new Set<Promise<unknown>>(); // retired workers still being terminated
  let nextJobId = 1;
  let closed = false;
  let closing: Promise<void> | null = null;
  let bootFailures = 0;
  let retryTimer: NodeJS.Timeout | null = null;

  for (let i = 0; i < size; i++) spawn();

  function spawn(): void {
    const worker = new Worker(spawnOptions.url, { execArgv: spawnOptions.execArgv, resourceLimits: { maxYoungGenerationSizeMb: WORKER_YOUNG_GENERATION_MB, maxOldGenerationSizeMb: heapMb } });
    const slot: Slot = { worker, ready: false, job: null, timer: null, retired: false, error: null };
    slots.add(slot);
    worker.unref();
    worker.on('message', (msg: WorkerToPoolMessage) => onMessage(slot, msg));
    worker.on('error', (err) => (slot.error = err)); // 'exit' follows
    worker.on('exit', (code) => onExit(slot, code));
  }

  /** Starts workers up to size; a failure to start one is logged and retried later. */
  function topUp(): void {
    try {
      while (!closed && slots.size < size) spawn();
    } catch (err) {
      logger.error({ err }, 'cannot start a parse worker');
      scheduleRetry();
    }
  }

  /** One retry round for every worker that failed to start meanwhile; each round waits twice as long. */
  function scheduleRetry(): void {
    if (closed || retryTimer) return;
    bootFailures++;
    const delay = Math.min(BOOT_RETRY_MAX_MS, BOOT_RETRY_MS * 2 ** Math.max(0, bootFailures - 1));
    retryTimer = setTimeout(() => {
      retryTimer = null;
      topUp();
    }, delay);
    retryTimer.unref();
  }

  function dispatch(): void {
    for (const slot of slots) {
      if (queue.length === 0) return;
      if (!slot.ready || slot.job || slot.retired) continue;
      const job = queue.shift()!;
      slot.job = job;
      slot.worker.ref();
      slot.timer = setTimeout(() => hardDeadline(slot, job), Math.min(job.limits.timeoutMs + graceMs, MAX_TIMER_MS));
      const msg: ParseJobMessage = { jobId: job.id, rawPath: job.rawPath, attachmentsDir: job.attachmentsDir, limits: job.limits, bytes: job.bytes };
      slot.worker.postMessage(msg);
    }
  }

  function onMessage(slot: Slot, msg: WorkerToPoolMessage): void {
    if (slot.retired) return; // a reply racing the hard deadline: the job is settled already
    if ('ready' in msg) {
      slot.ready = true;
      bootFailures = 0;
      dispatch();
      return;
    }
    const job = slot.job;
    if (!job || job.id !== msg.jobId) return;
    release(slot);
    settle(job, msg);
    dispatch();
  }

  function settle(job: Job, msg: ParseReplyMessage): void {
    if (msg.ok) return job.resolve(msg.result);
    const err = new Error(msg.error.message) as NodeJS.ErrnoException;
    if (msg.error.code !== null) err.code = msg.error.code;
    job.reject(err);
  }

  /** The slot's job is over: the worker may idle (and no longer keeps the process alive). */
  function release(slot: Slot): void {
    if (slot.timer) clearTimeout(slot.timer);
    slot.timer = null;
    slot.job = null;
    if (!slot.retired) slot.worker.unref();
  }

  /** Takes the slot out of the pool; returns the job it was running, if any. */
  function retire(slot: Slot): Job | null {
    const job = slot.job;
    release(slot);
    slot.retired = true;
    slots.delete(slot);
    return job;
  }

  /** Terminates a retired worker, then removes what its job wrote; close() waits for this. */
  function terminate(slot: Slot, job: Job | null): Promise<void> {
    // Once terminate() resolves the thread has exited, its pending file operations included: nothing
    // writes under attachmentsDir after the rm.
    const done = slot.worker
      .terminate()
      .then(() => (job ? rm(job.attachmentsDir, { recursive: true, force: true }) : undefined))
      .finally(() => exiting.delete(done));
    exiting.add(done);
    return done;
  }

  function hardDeadline(slot: Slot, job: Job): void {
    if (slot.job !== job || slot.retired) return;
    retire(slot);
    logger.warn(
      { rawPath: job.rawPath, timeoutMs: job.limits.timeoutMs, graceMs },
      'parse ran past its deadline in a synchronous step: worker terminated, the message gets no parsed content',
    );
    topUp();
    terminate(slot, job).then(
      () => job.resolve(timedOut(job.limits.timeoutMs)),
      (err: Error) => job.reject(err), // the attachment files could not be removed: infrastructure
    );
  }

  function onExit(slot: Slot, code: number): void {
    if (slot.retired) return;
    const wasReady = slot.ready;
    const job = retire(slot);
    const cause = slot.error ?? new Error(`parse worker exited with code ${code}`);
    if (wasReady) {
      logger.error({ err: cause, code, rawPath: job?.rawPath }, 'parse worker died; starting a replacement');
      topUp();
    } else {
      logger.error({ err: cause, code }, 'parse worker failed to start; retrying');
      // Without a single worker up, queued jobs would wait for a fix that may never come: fail them
      // (451, the client retries later).
      if (![...slots].some((s) => s.ready)) {
        for (const queued of queue.splice(0)) queued.reject(new Error(`parse worker failed to start: ${cause.message}`));
      }
      scheduleRetry();
    }
    if (job) {
      // What killed the worker is almost always the message (a part built to exhaust its heap):
      // refused with 451 it would come back at every retry and kill a worker each time. It is
      // stored raw instead, as for the hard deadline; only a failure to remove its files rejects.
      const reason = `parse worker died: ${cause.message}`;
      rm(job.attachmentsDir, { recursive: true, force: true }).then(
        () => job.resolve(unparsed(reason)),
        (err: Error) => job.reject(err),
      );
    }
  }

  return {
    parse(raw, attachmentsDir, limits) {
      if (closed) return Promise.reject(new Error('parse pool is closed'));
      return new Promise<ParsedMessage>((resolve, reject) => {
        queue.push({ id: nextJobId++, rawPath: raw.path ?? null, attachmentsDir, limits, bytes: raw.bytes ?? null, resolve, reject });
        dispatch();
      });
    },

    close() {
      closing ??= (async () => {
        closed = true;
        if (retryTimer) clearTimeout(retryTimer);
        const err = new Error('parse pool is closed');
        for (const job of queue.splice(0)) job.reject(err);
        const stopping = [...slots].map((slot) => {
          const job = retire(slot);
          return terminate(slot, job).finally(() => job?.reject(err));
        });
        await Promise.allSettled([...stopping, ...exiting]);
      })();
      return closing;
    },
  };
}

/** What a job that hit the hard deadline resolves with: nothing parsed, nothing stored. */
export function timedOut(timeoutMs: number): ParsedMessage {
  return unparsed(`parse timed out after ${timeoutMs} ms`);
}
