/**
 * The main thread's end of the store's writer thread (writer.ts says why there is one,
 * writer-worker.ts is the other end). Requests run one at a time in the order they are made;
 * each resolves with what the writer returned or rejects with its error (message and code).
 *
 * Failures: a thread that dies (out of memory, a crash in the native module) fails the requests
 * it held, and a new one is started at once; the pipeline keeps such a message in the spool and
 * stores it again later, the way it does when a disk fills. A thread that cannot open the
 * database is not restarted in a loop: the next request starts the next one. Until a thread is
 * up again, `healthy` is false (/readyz reports it).
 *
 * The thread keeps the process alive only while a request is in flight.
 */
import { Worker } from 'node:worker_threads';
import type { Logger } from '../log/logger.js';
import { workerSpawn } from '../util/worker-spawn.js';
import { errorFrom } from './writer.js';
import type { WriterMessage, WriterReply, WriterRequest } from './writer-worker.js';

/** Omit over each member of a union (a plain Omit would merge the members). */
type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;
/** A request as callers make it: the thread's end numbers it. */
type Request = DistributiveOmit<WriterRequest, 'n'>;

interface Pending {
  resolve(value: unknown): void;
  reject(err: Error): void;
}

function describe(err: unknown): string {
  const e = err as { message?: unknown; code?: unknown } | null;
  const parts = [typeof e?.code === 'string' ? e.code : '', typeof e?.message === 'string' ? e.message : ''].filter(Boolean);
  return parts.length > 0 ? parts.join(': ') : String(err);
}

export class StoreWriterThread {
  readonly #file: string;
  readonly #log: Logger;
  readonly #spawn = workerSpawn(new URL('./writer-worker.js', import.meta.url));
  readonly #pending = new Map<number, Pending>();
  #worker: Worker | null = null;
  #ready = false;
  #next = 1;
  /** Why the last thread exited unexpectedly; cleared once a new one has opened the database. */
  #failure: Error | null = null;
  #closing: Promise<void> | null = null;

  constructor(file: string, logger: Logger) {
    this.#file = file;
    this.#log = logger;
    // At once, not at the first write: it loads in parallel with the rest of the start, so the
    // first commit (or the event-log trim's first round) does not wait for it.
    this.#start();
  }

  /** Runs one request on the writer thread. */
  call<T>(request: Request): Promise<T> {
    if (this.#closing) return Promise.reject(new Error('the store is closed'));
    const worker = this.#worker ?? this.#start();
    const n = this.#next++;
    return new Promise<T>((resolve, reject) => {
      this.#pending.set(n, { resolve: resolve as (value: unknown) => void, reject });
      worker.ref();
      worker.postMessage({ ...request, n } as WriterMessage);
    });
  }

  /** False while no writer thread is up (after a crash, until the next has opened the database). */
  get healthy(): boolean {
    return this.#closing === null && this.#failure === null;
  }

  /** Lets the requests made so far finish, then closes the writer's connection. */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    const worker = this.#worker;
    if (!worker) return;
    // 'exit' only: events.once() would reject on an 'error' first (a thread that cannot open
    // the database), and the thread is gone either way.
    const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
    worker.ref(); // a clean close of the database is worth waiting for
    worker.postMessage({ op: 'close' } satisfies WriterMessage);
    await exited;
  }

  #start(): Worker {
    const worker = new Worker(this.#spawn.url, { execArgv: this.#spawn.execArgv, workerData: { file: this.#file } });
    worker.unref();
    let error: string | null = null;
    worker.on('message', (msg: WriterReply) => this.#onReply(worker, msg));
    // 'exit' follows. What a thread throws arrives as a copy: a SqliteError's message, not being
    // an own property, does not come along, its code does.
    worker.on('error', (err: unknown) => (error = describe(err)));
    worker.on('exit', (code) => this.#onExit(worker, code, error));
    this.#worker = worker;
    this.#ready = false;
    return worker;
  }

  #onReply(worker: Worker, msg: WriterReply): void {
    if (worker !== this.#worker) return;
    if ('ready' in msg) {
      this.#ready = true;
      if (this.#failure) this.#log.info('the store writer thread is back');
      this.#failure = null;
      return;
    }
    const pending = this.#pending.get(msg.n);
    if (!pending) return;
    this.#pending.delete(msg.n);
    if (this.#pending.size === 0 && !this.#closing) worker.unref();
    if (msg.ok) pending.resolve(msg.value);
    else pending.reject(errorFrom(msg.error));
  }

  #onExit(worker: Worker, code: number, error: string | null): void {
    if (worker !== this.#worker) return;
    this.#worker = null;
    const wasReady = this.#ready;
    this.#ready = false;
    const failure = new Error(`the store writer thread exited (code ${code})${error ? `: ${error}` : ''}`);
    for (const pending of this.#pending.values()) pending.reject(failure);
    this.#pending.clear();
    if (this.#closing) return;
    this.#failure = failure;
    this.#log.error({ err: failure, code }, 'the store writer thread exited; the writes it held failed');
    if (wasReady) this.#start();
  }
}
