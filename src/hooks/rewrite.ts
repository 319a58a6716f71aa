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
  const head = Buffer.from(editHeaderBlock(block, ops) + (bodyOffset === null ? '' : '\r\n'), 'utf8');
  async function* parts(): AsyncGenerator<Buffer> {
    yield head;
    if (bodyOffset !== null) yield* rawStream(raw, bodyOffset) as AsyncIterable<Buffer>;
  }
  return Readable.from(parts(), { objectMode: false });
}

/**
 * Applies header edits to a header block in memory (each field ending in CRLF, no blank line).
 * Shared with POST /submit, whose message is built in memory (src/submit/hooks.ts).
 */
export function editHeaderBlock(block: string, ops: readonly HeaderOp[]): string {
  const fields = splitFields(block);
  for (const op of ops) apply(fields, op);
  return fields.map((f) => f.raw).join('');
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
function splitHeaderBlock(data: Buffer, limit: number): { block: string; bodyOffset: number | null } {
  if (data.subarray(0, 2).toString('latin1') === '\r\n') return { block: '', bodyOffset: 2 };
  const end = data.indexOf('\r\n\r\n');
  if (end !== -1) return { block: data.subarray(0, end + 2).toString('utf8'), bodyOffset: end + 4 };
  if (data.length < limit) {
    // No blank line: the whole message is headers.
    const text = data.toString('utf8');
    return { block: text.endsWith('\r\n') ? text : `${text}\r\n`, bodyOffset: null };
  }
  throw new EditError(`the header block is larger than ${MAX_HEADER_BLOCK} bytes; headers cannot be edited`);
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
