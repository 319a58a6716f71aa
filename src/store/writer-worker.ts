/**
 * The store's writer thread (see writer.ts for why, writer-thread.ts for the other end). It runs
 * one request at a time, in the order they were posted.
 *
 * Protocol, on the worker's parentPort (workerData: { file }):
 *   → { n, op: 'insert', items } | { n, op: 'delete', id, at }
 *     | { n, op: 'trim', before, keepFrom, maxRows }
 *   → { op: 'close' }                        after every request before it: close the database, exit
 *   ← { ready: true }                        once, when the database is open
 *   ← { n, ok: true, value } | { n, ok: false, error: { message, code } }
 * A database that cannot be opened throws here: the thread exits and the other end sees why.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { StoreWriter, writerError, type InsertItem, type WriterError } from './writer.js';

export type WriterRequest =
  | { n: number; op: 'insert'; items: InsertItem[] }
  | { n: number; op: 'delete'; id: string; at: string }
  | { n: number; op: 'trim'; before: string; keepFrom: number; maxRows: number };

export type WriterMessage = WriterRequest | { op: 'close' };

export type WriterReply = { ready: true } | { n: number; ok: true; value: unknown } | { n: number; ok: false; error: WriterError };

const port = parentPort;
if (!port) throw new Error('src/store/writer-worker is a worker thread; the store starts it');

const writer = new StoreWriter((workerData as { file: string }).file);

function run(req: WriterRequest): unknown {
  switch (req.op) {
    case 'insert':
      return writer.insertBatch(req.items);
    case 'delete':
      return writer.delete(req.id, req.at);
    case 'trim':
      return writer.trim(req.before, req.keepFrom, req.maxRows);
  }
}

port.on('message', (msg: WriterMessage) => {
  if (msg.op === 'close') {
    writer.close();
    port.close();
    return;
  }
  let reply: WriterReply;
  try {
    reply = { n: msg.n, ok: true, value: run(msg) };
  } catch (err) {
    reply = { n: msg.n, ok: false, error: writerError(err) };
  }
  port.postMessage(reply);
});
port.postMessage({ ready: true } satisfies WriterReply);
