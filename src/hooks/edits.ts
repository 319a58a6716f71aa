/**
 * What eom hooks may change: headers, the envelope sender, recipients, tags. Collected while the
 * hooks run and applied once afterwards (src/hooks/rewrite.ts for the raw message), so a hook that
 * fails half-way changes nothing. Every value is checked here: a hook must not be able to inject
 * a header line break, a bare CR/LF, or an unbounded list.
 */
import { splitAddress } from '../policy/address.js';

export type HeaderOp =
  | { op: 'add'; name: string; value: string }
  | { op: 'change'; name: string; value: string; index: number }
  | { op: 'delete'; name: string; index: number | null };

// RFC 5322 2.2: a field name is printable US-ASCII except the colon.
const FIELD_NAME = /^[\x21-\x39\x3b-\x7e]{1,76}$/;
// A value may hold folding (CRLF followed by white space) but no other line break. 998 octets is
// RFC 5322's line limit; 8 KiB for a folded value is plenty for any header a hook writes.
const MAX_VALUE = 8192;
// Bounds the edits of one message: a runaway loop in a hook cannot grow the header block or the
// recipient list without limit. Real hooks make a handful.
const MAX_HEADER_OPS = 100;
const MAX_TAGS = 50;
const MAX_TAG_LENGTH = 64;
const MAX_RCPT_OPS = 100;

export class EditError extends Error {
  override name = 'EditError';
}

export class EomEdits {
  headers: HeaderOp[] = [];
  sender: string | null = null;
  added: string[] = [];
  removed: string[] = [];
  tags: string[] = [];

  get changesRaw(): boolean {
    return this.headers.length > 0;
  }

  get changesEnvelope(): boolean {
    return this.sender !== null || this.added.length > 0 || this.removed.length > 0;
  }

  addHeader(name: string, value: string): void {
    this.#header({ op: 'add', name: checkName(name), value: checkValue(value) });
  }

  changeHeader(name: string, value: string, index = 1): void {
    this.#header({ op: 'change', name: checkName(name), value: checkValue(value), index: checkIndex(index) });
  }

  deleteHeader(name: string, index?: number): void {
    this.#header({ op: 'delete', name: checkName(name), index: index === undefined ? null : checkIndex(index) });
  }

  setSender(address: string): void {
    // '' is the null sender (bounces).
    if (address !== '' && !isValidAddress(address)) throw new EditError(`setSender: not a valid address: ${JSON.stringify(address)}`);
    this.sender = address;
  }

  addRecipient(address: string): void {
    if (!isValidAddress(address)) throw new EditError(`addRecipient: not a valid address: ${JSON.stringify(address)}`);
    this.#rcptOp();
    this.added.push(address);
  }

  removeRecipient(address: string): void {
    if (typeof address !== 'string') throw new EditError('removeRecipient: address must be a string');
    this.#rcptOp();
    this.removed.push(address);
  }

  addTag(tag: string): void {
    if (typeof tag !== 'string' || !tag || tag.length > MAX_TAG_LENGTH || /[\x00-\x1f\x7f]/.test(tag)) {
      throw new EditError(`addTag: a tag is 1-${MAX_TAG_LENGTH} printable characters`);
    }
    if (this.tags.includes(tag)) return;
    if (this.tags.length >= MAX_TAGS) throw new EditError(`addTag: at most ${MAX_TAGS} tags`);
    this.tags.push(tag);
  }

  /** The recipients after the edits (removal is case-insensitive; added ones are not duplicated). */
  applyRecipients(rcptTo: readonly string[]): string[] {
    const removed = new Set(this.removed.map((a) => a.toLowerCase()));
    const out = rcptTo.filter((a) => !removed.has(a.toLowerCase()));
    for (const a of this.added) if (!out.some((b) => b.toLowerCase() === a.toLowerCase())) out.push(a);
    return out;
  }

  #header(op: HeaderOp): void {
    if (this.headers.length >= MAX_HEADER_OPS) throw new EditError(`at most ${MAX_HEADER_OPS} header edits per message`);
    this.headers.push(op);
  }

  #rcptOp(): void {
    if (this.added.length + this.removed.length >= MAX_RCPT_OPS) throw new EditError(`at most ${MAX_RCPT_OPS} recipient edits per message`);
  }
}

/** A bare address (no brackets, spaces or control characters) with a local part and a domain. */
function isValidAddress(address: string): boolean {
  return typeof address === 'string' && !/[\s<>\x00-\x1f\x7f]/.test(address) && splitAddress(address) !== null;
}

function checkName(name: string): string {
  if (typeof name !== 'string' || !FIELD_NAME.test(name)) throw new EditError(`not a valid header name: ${JSON.stringify(name)}`);
  return name;
}

function checkValue(value: string): string {
  if (typeof value !== 'string' || value.length > MAX_VALUE) throw new EditError(`a header value is a string of at most ${MAX_VALUE} characters`);
  // Only folding is allowed: every line break is CRLF followed by a space or tab.
  if (/\r(?!\n[ \t])|(?<!\r)\n|\r\n(?![ \t])|\0/.test(value)) throw new EditError('a header value may contain line breaks only as folding (CRLF + space)');
  return value.trim();
}

function checkIndex(index: number): number {
  if (!Number.isInteger(index) || index < 1) throw new EditError('a header index is 1 or more');
  return index;
}
