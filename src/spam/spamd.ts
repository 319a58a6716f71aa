/**
 * SpamAssassin spamd client: one `REPORT SPAMC/1.5` exchange per message, with Content-length.
 *
 * Why not the npm package spamc-stream: it sets its input stream to utf8 (`setEncoding('utf8')`),
 * which corrupts 8-bit and binary message bytes so the score differs from spamc's; it sends no
 * Content-length; it splits reply chunks on CRLF per TCP chunk, breaking lines that straddle two
 * chunks; and it has no overall deadline.
 *
 * Why REPORT: one round trip gives everything the event needs. The reply's Spam header carries the
 * verdict, score and threshold (exactly what `spamc -R` prints as "score/threshold"), and its body is
 * the report whose table lists every rule hit with its points and description. SYMBOLS gives only
 * the names, so it would need a second exchange (and a second scan) for the rest.
 *
 * Failure policy (DESIGN.md): scoring fails open. Nothing here throws or rejects; every failure is
 * a SpamResult with status "error" (or "skipped" for oversized messages) and a reason.
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { Readable } from 'node:stream';
import type { SpamResult } from '../events/types.js';
import { failed, parseSpamdReply } from './report.js';
import type { SpamdOptions } from './types.js';
import type { RawSource } from '../util/raw-source.js';

/** A REPORT reply is a few KiB (template, content preview, one line per rule). spamd is trusted-ish,
 *  but a wrong host or port could be any service streaming anything: 1 MiB leaves room for a large
 *  custom report template and stops a runaway peer from filling memory. */
export const MAX_REPLY_BYTES = 1024 * 1024;

type Exchange = { ok: true; reply: Buffer } | { ok: false; reason: string };

/** Scores the message in the file at `path`, streamed from disk (never read into memory). */
export async function scoreFile(path: string, opts: SpamdOptions, signal?: AbortSignal): Promise<SpamResult> {
  let size: number;
  try {
    size = (await stat(path)).size;
  } catch (err) {
    return failed(`cannot read the message: ${errorText(err)}`);
  }
  // `end` is inclusive and must not be negative; an empty file sends no bytes at all.
  return score(size, () => (size === 0 ? Readable.from([]) : createReadStream(path, { end: size - 1 })), opts, signal);
}

/** Scores a spooled or stored message, wherever its bytes are. */
export function scoreRaw(raw: RawSource, opts: SpamdOptions, signal?: AbortSignal): Promise<SpamResult> {
  return raw.bytes ? scoreBuffer(raw.bytes, opts, signal) : scoreFile(raw.path, opts, signal);
}

/** Scores a message already in memory (a small message, tests). */
export async function scoreBuffer(buf: Buffer, opts: SpamdOptions, signal?: AbortSignal): Promise<SpamResult> {
  return score(buf.length, () => Readable.from([buf]), opts, signal);
}

/** True when spamd answers PING with PONG within timeoutMs. Never throws. */
export async function pingSpamd(opts: Pick<SpamdOptions, 'host' | 'port' | 'timeoutMs'>): Promise<boolean> {
  const result = await exchange(opts, 'PING SPAMC/1.5\r\n\r\n', undefined);
  return result.ok && /^SPAMD\/\d+\.\d+ 0 PONG\r\n/.test(result.reply.toString('latin1'));
}

async function score(size: number, open: () => Readable, opts: SpamdOptions, signal?: AbortSignal): Promise<SpamResult> {
  if (size > opts.maxSize) {
    return {
      status: 'skipped',
      score: null,
      threshold: null,
      rules: [],
      reason: `size ${size} exceeds spamd max_size ${opts.maxSize}`,
    };
  }
  const request = `REPORT SPAMC/1.5\r\nContent-length: ${size}\r\n\r\n`;
  const result = await exchange(opts, request, { open, size }, signal);
  return result.ok ? parseSpamdReply(result.reply) : failed(result.reason);
}

/**
 * Connects, sends `head` and then the body, and collects the reply until spamd closes the connection.
 * The whole exchange (DNS, connect, send, scan, reply) shares one deadline of opts.timeoutMs, so a
 * spamd that trickles bytes cannot hold a message longer than that. The socket and the body stream
 * are destroyed and the timer cleared on every path.
 */
function exchange(
  opts: Pick<SpamdOptions, 'host' | 'port' | 'timeoutMs'>,
  head: string,
  body: { open: () => Readable; size: number } | undefined,
  signal?: AbortSignal,
): Promise<Exchange> {
  const where = `spamd at ${opts.host}:${opts.port}`;
  if (signal?.aborted) return Promise.resolve({ ok: false, reason: 'aborted' });

  return new Promise<Exchange>((resolve) => {
    const chunks: Buffer[] = [];
    let received = 0;
    let source: Readable | undefined;
    let settled = false;

    const finish = (result: Exchange): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      source?.destroy();
      socket.destroy();
      resolve(result);
    };
    let socket: Socket;
    try {
      socket = connect({ host: opts.host, port: opts.port });
    } catch (err) {
      // connect() throws at once for a port outside 0-65535; still a value, not an exception.
      return resolve({ ok: false, reason: `cannot talk to ${where}: ${errorText(err)}` });
    }
    const timer = setTimeout(
      () => finish({ ok: false, reason: `no complete reply from ${where} within the ${opts.timeoutMs} ms deadline` }),
      opts.timeoutMs,
    );
    const onAbort = (): void => finish({ ok: false, reason: 'aborted' });
    signal?.addEventListener('abort', onAbort, { once: true });

    socket.on('connect', () => {
      socket.write(head);
      if (!body) return void socket.end();
      const stream = body.open();
      source = stream;
      // pipe() half-closes the socket after the last byte. spamd needs that for an empty message:
      // it takes "Content-length: 0" as no length at all and reads until end of input.
      stream.pipe(socket);
      let sent = 0;
      stream.on('data', (chunk: Buffer) => {
        sent += chunk.length;
      });
      stream.on('error', (err) => finish({ ok: false, reason: `cannot read the message: ${errorText(err)}` }));
      stream.on('end', () => {
        // A file that shrank after stat would leave spamd waiting for bytes that never come.
        if (sent !== body.size) finish({ ok: false, reason: `message is ${sent} bytes, not the ${body.size} announced` });
      });
    });
    socket.on('data', (chunk: Buffer) => {
      received += chunk.length;
      if (received > MAX_REPLY_BYTES) {
        finish({ ok: false, reason: `reply from ${where} exceeds ${MAX_REPLY_BYTES} bytes` });
      } else {
        chunks.push(chunk);
      }
    });
    socket.on('end', () => {
      if (received === 0) finish({ ok: false, reason: `${where} closed the connection without a reply` });
      else finish({ ok: true, reply: Buffer.concat(chunks) });
    });
    socket.on('error', (err) => {
      // spamd may answer an error (e.g. 76 EX_PROTOCOL) and close while we are still sending:
      // then the write fails, but what it said is the better reason.
      if (received > 0) finish({ ok: true, reply: Buffer.concat(chunks) });
      else finish({ ok: false, reason: `cannot talk to ${where}: ${errorText(err)}` });
    });
  });
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
