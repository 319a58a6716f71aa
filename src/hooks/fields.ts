/**
 * Header fields as hooks see them, in one place for every path that shows them: the SMTP DATA
 * stream (stream.ts), eom header edits (rewrite.ts) and POST /submit's built message
 * (src/submit/hooks.ts), so a hook gets the same name and value whichever way the mail came.
 */
import type { HeaderField } from './api.js';

/**
 * One field as name and value: the value unfolded (RFC 5322 2.2.3: a line break before white
 * space is removed) and trimmed. A line without a colon is not a field (RFC 5322 2.2); it is
 * kept under an empty name rather than dropped, so hooks see every line.
 */
export function headerField(raw: string): HeaderField {
  const colon = raw.indexOf(':');
  return colon > 0 ? { name: raw.slice(0, colon).trim(), value: unfold(raw.slice(colon + 1)) } : { name: '', value: unfold(raw) };
}

/**
 * A whole message in memory as its header block (fields ending in CRLF, no blank line) and its
 * body. `block` is the text hooks are shown (UTF-8); `head` the block's bytes, which edits work on.
 */
export function splitMessage(raw: Buffer): { block: string; head: Buffer; body: Buffer } {
  const end = raw.indexOf('\r\n\r\n');
  const head = end === -1 ? raw : raw.subarray(0, end + 2);
  return { block: head.toString('utf8'), head, body: end === -1 ? Buffer.alloc(0) : raw.subarray(end + 4) };
}

/** Header fields of a block, values unfolded and trimmed (as the SMTP stream tap gives them). */
export function headerFields(block: string): HeaderField[] {
  return rawFields(block).map(headerField);
}

/** A header block (lines ending in CRLF, no blank line) as raw fields, each with its continuation lines and CRLFs. */
export function rawFields(block: string): string[] {
  const fields: string[] = [];
  for (const line of block.split(/(?<=\r\n)/)) {
    if (!line) continue;
    if ((line.startsWith(' ') || line.startsWith('\t')) && fields.length) fields[fields.length - 1] += line;
    else fields.push(line);
  }
  return fields;
}

// A bare LF counts too: the stream tap sees the client's bytes before the spool normalizes them.
function unfold(value: string): string {
  return value.replace(/\r?\n(?=[ \t])/g, '').trim();
}
