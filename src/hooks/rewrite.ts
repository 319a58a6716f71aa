/**
 * Applies eom header edits to a spooled raw message: the header block is read (bounded), edited,
 * and streamed out ahead of the untouched body. The caller writes the result to a new spool entry
 * and commits it (in place of the old one) before the 250, so nothing answered is lost and the
 * stored raw message is the edited one.
 */
import { open } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { rawStream, type RawSource } from '../util/raw-source.js';
import { EditError, type HeaderOp } from './edits.js';
import { rawFields } from './fields.js';

// The header block an edit may touch. Real header blocks are a few KiB; 1 MiB covers long
// Received chains and DKIM-heavy mail and bounds what is held in memory for one message.
export const MAX_HEADER_BLOCK = 1024 * 1024;

interface Field {
  name: string;
  raw: string;
}

/** The edited message as a stream, or throws EditError when the header block is too big to edit. */
export async function rewriteHeaders(raw: RawSource, ops: readonly HeaderOp[]): Promise<Readable> {
  const { block, bodyOffset } = splitHeaderBlock(await readHead(raw), MAX_HEADER_BLOCK + 4);
  const head = bodyOffset === null ? editHeaderBytes(block, ops) : Buffer.concat([editHeaderBytes(block, ops), CRLF]);
  async function* parts(): AsyncGenerator<Buffer> {
    yield head;
    if (bodyOffset !== null) yield* rawStream(raw, bodyOffset) as AsyncIterable<Buffer>;
  }
  return Readable.from(parts(), { objectMode: false });
}

const CRLF = Buffer.from('\r\n');

/**
 * Applies header edits to a header block's bytes (each field ending in CRLF, no blank line).
 * Shared with the SMTP relay and POST /submit, whose messages are in memory. Lossless: a field no
 * edit touches keeps its exact bytes, whatever charset they are in (decoding the block as UTF-8
 * and encoding it again turned every byte of an ISO-8859-1 Subject into U+FFFD); an added or
 * changed field is written in UTF-8. The edits work on latin1 text, one character per byte: they
 * match fields by name (ASCII) and replace whole fields.
 */
export function editHeaderBytes(block: Buffer, ops: readonly HeaderOp[]): Buffer {
  const bytesOf = (value: string) => Buffer.from(value, 'utf8').toString('latin1');
  const fields = splitFields(block.toString('latin1'));
  for (const op of ops) apply(fields, op.op === 'delete' ? op : { ...op, value: bytesOf(op.value) });
  return Buffer.from(fields.map((f) => f.raw).join(''), 'latin1');
}

/** The first MAX_HEADER_BLOCK + 4 bytes of the message, or all of it when shorter. */
async function readHead(raw: RawSource): Promise<Buffer> {
  const limit = MAX_HEADER_BLOCK + 4;
  if (raw.bytes) return raw.bytes.subarray(0, limit);
  const fh = await open(raw.path, 'r');
  try {
    const buf = Buffer.alloc(limit);
    let len = 0;
    for (;;) {
      const { bytesRead } = await fh.read(buf, len, buf.length - len, len);
      if (bytesRead === 0) break;
      len += bytesRead;
      if (len === buf.length) break;
    }
    return buf.subarray(0, len);
  } finally {
    await fh.close();
  }
}

/** The header block (each field with its CRLF) and where the body starts (after the blank line). */
function splitHeaderBlock(data: Buffer, limit: number): { block: Buffer; bodyOffset: number | null } {
  if (data.subarray(0, 2).equals(CRLF)) return { block: Buffer.alloc(0), bodyOffset: 2 };
  const end = data.indexOf('\r\n\r\n');
  if (end !== -1) return { block: data.subarray(0, end + 2), bodyOffset: end + 4 };
  if (data.length < limit) {
    // No blank line: the whole message is headers.
    return { block: data.subarray(-2).equals(CRLF) ? data : Buffer.concat([data, CRLF]), bodyOffset: null };
  }
  throw new EditError(`the header block is larger than ${MAX_HEADER_BLOCK} bytes; headers cannot be edited`);
}

/** A message in memory (splitMessage) with header edits applied: the edited block, the blank line, the body. */
export function editMessage(parts: { head: Buffer; body: Buffer }, ops: readonly HeaderOp[]): Buffer {
  return Buffer.concat([editHeaderBytes(parts.head, ops), CRLF, parts.body]);
}

function splitFields(block: string): Field[] {
  return rawFields(block).map((raw) => ({ name: raw.slice(0, Math.max(0, raw.indexOf(':'))).trim().toLowerCase(), raw }));
}

function apply(fields: Field[], op: HeaderOp): void {
  const name = op.name.toLowerCase();
  const line = (value: string) => `${op.name}: ${value}\r\n`;
  if (op.op === 'add') {
    fields.push({ name, raw: line(op.value) });
    return;
  }
  const positions = fields.flatMap((f, i) => (f.name === name ? [i] : []));
  if (op.op === 'change') {
    const at = positions[op.index - 1];
    if (at === undefined) fields.push({ name, raw: line(op.value) });
    else fields[at] = { name, raw: line(op.value) };
    return;
  }
  const drop = op.index === null ? positions : positions.slice(op.index - 1, op.index);
  for (const i of drop.reverse()) fields.splice(i, 1);
}
