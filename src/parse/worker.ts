/**
 * A parse worker thread (see parse-pool.ts): runs parseMessageFile for one job at a time, so
 * mailparser's synchronous work (a quoted-printable part is decoded in one call at the end of the
 * part: about a second for 19 MB) blocks this thread, never the SMTP and HTTP event loop.
 *
 * Protocol, on the worker's parentPort:
 *   → { jobId, rawPath, attachmentsDir, limits, bytes }   bytes: the message, or null to read rawPath
 *   ← { ready: true }                                   once, when this module has loaded
 *   ← { jobId, ok: true, result }                       parseMessageFile resolved (parseError may be set)
 *   ← { jobId, ok: false, error: { message, code } }    parseMessageFile rejected: broken infrastructure
 * The soft deadline (limits.timeoutMs) stays inside parseMessageFile; the pool adds a hard one.
 */
import { parentPort } from 'node:worker_threads';
import { parseMessageFile } from './parse.js';
import type { ParseLimits, ParsedMessage } from './types.js';

export interface ParseJobMessage {
  jobId: number;
  /** The message's file, or null when bytes holds the message. */
  rawPath: string | null;
  attachmentsDir: string;
  limits: ParseLimits;
  /** The message when it is in memory (arrives as a Uint8Array), else null. */
  bytes: Uint8Array | null;
}

export type ParseReplyMessage =
  | { jobId: number; ok: true; result: ParsedMessage }
  | { jobId: number; ok: false; error: { message: string; code: string | null } };

export type WorkerToPoolMessage = { ready: true } | ParseReplyMessage;

const port = parentPort;
if (!port) throw new Error('src/parse/worker is a worker thread; it is started by the parse pool');

port.on('message', (job: ParseJobMessage) => {
  parseMessageFile(job.rawPath, job.attachmentsDir, job.limits, job.bytes).then(
    (result) => port.postMessage({ jobId: job.jobId, ok: true, result } satisfies ParseReplyMessage),
    (err: unknown) => {
      // An Error's own properties (code) do not survive postMessage: send what the caller needs.
      const message = err instanceof Error ? err.message : String(err);
      const code = typeof (err as { code?: unknown } | null)?.code === 'string' ? (err as { code: string }).code : null;
      port.postMessage({ jobId: job.jobId, ok: false, error: { message, code } } satisfies ParseReplyMessage);
    },
  );
});
port.postMessage({ ready: true } satisfies WorkerToPoolMessage);
