/**
 * Where a message's bytes are. A message of up to 64 KiB (most mail) lives in memory and, for
 * durability, in a shared log: the spool journal before it is stored, the store's database
 * after. A larger one is a file. Every consumer of raw bytes (spamd, the parser, header
 * rewriting, the relay, the raw download) takes a RawSource, so none cares which.
 */
import { createReadStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { Readable } from 'node:stream';

export type RawSource = { readonly path: string; readonly bytes?: undefined } | { readonly bytes: Buffer; readonly path?: undefined };

/** The bytes from `start` on, as a stream (a file is streamed, never read whole). */
export function rawStream(raw: RawSource, start = 0): Readable {
  if (raw.bytes) return Readable.from([raw.bytes.subarray(start)], { objectMode: false });
  return createReadStream(raw.path, { start });
}

/** The whole message in memory. For callers that need it so; bounded by the message size limit. */
export async function readRaw(raw: RawSource): Promise<Buffer> {
  return raw.bytes ?? (await readFile(raw.path));
}

/** For logs: the file, or that the bytes are in memory. Never the content. */
export function rawLabel(raw: RawSource): string {
  return raw.path ?? `(${raw.bytes.length} bytes in memory)`;
}
