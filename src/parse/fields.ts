/**
 * Pure helpers that turn what mailparser hands over into MailEvent fields: header lines, addresses,
 * filenames and body caps. No I/O and no mailparser import, so each rule is testable on its own.
 */
import type { AddressInfo, HeaderLine } from '../events/types.js';
import { UNSAFE_CHARS } from '../util/unsafe-chars.js';

/**
 * Longest filename, Content-Type or Content-ID kept as metadata. The values come from the sender and
 * end up in the event, the store index and the viewer; 255 is the longest name common filesystems
 * accept, so no legitimate attachment name is longer.
 */
export const MAX_META_LENGTH = 255;

/** Longest parseError: it is one line in an event and in the log, not a dump of the input. */
export const MAX_ERROR_LENGTH = 500;

/** A header field name as RFC 5322 defines it: printable ASCII except the colon. */
const FIELD_NAME = /^[\u0021-\u0039\u003b-\u007e]+$/;

/** Cuts a string to at most `max` UTF-16 units without leaving half a surrogate pair at the end. */
function capLength(value: string, max: number): string {
  if (value.length <= max) return value;
  const code = value.charCodeAt(max - 1);
  return value.slice(0, code >= 0xd800 && code <= 0xdbff ? max - 1 : max);
}

/** Strips controls and caps the length of a sender-chosen token (Content-Type, Content-ID). */
export function cleanToken(value: string | undefined | null): string | null {
  const cleaned = capLength((value ?? '').replace(UNSAFE_CHARS, '').trim(), MAX_META_LENGTH);
  return cleaned === '' ? null : cleaned;
}

/**
 * The attachment filename as metadata only: files on disk are named by index, so this never
 * reaches a path. Still, a viewer offers it as a download name: keep the last path segment (no
 * "../../etc/passwd", no "C:\\x" directories), drop controls, cap the length. "." and ".." mean nothing.
 */
export function sanitizeFilename(name: string | undefined | null): string | null {
  if (!name) return null;
  const base = name.replace(UNSAFE_CHARS, '').split(/[/\\]/).pop() ?? '';
  const cleaned = capLength(base.trim(), MAX_META_LENGTH);
  return cleaned === '' || cleaned === '.' || cleaned === '..' ? null : cleaned;
}

/** Caps a string at `maxBytes` of UTF-8, cutting on a character boundary. */
export function capUtf8(value: string, maxBytes: number): { value: string; truncated: boolean } {
  // Fast path: a UTF-16 unit is at most 3 UTF-8 bytes (a surrogate pair is 4 bytes for 2 units).
  if (value.length * 3 <= maxBytes) return { value, truncated: false };
  const bytes = Buffer.from(value, 'utf8');
  if (bytes.length <= maxBytes) return { value, truncated: false };
  let end = Math.max(0, maxBytes);
  // Back off over continuation bytes (10xxxxxx) so the cut lands before a character's lead byte.
  while (end > 0 && ((bytes[end] ?? 0) & 0xc0) === 0x80) end--;
  return { value: bytes.subarray(0, end).toString('utf8'), truncated: true };
}

/** One line, capped: for parseError. */
export function oneLine(message: string): string {
  return capLength(message.replace(/\s+/g, ' ').trim(), MAX_ERROR_LENGTH);
}

/** The shape mailparser (addressparser) gives an address; groups hold their members. */
export interface ParsedAddress {
  name?: string;
  address?: string;
  group?: ParsedAddress[];
}

/**
 * Flattens addresses, expanding groups into their members ("friends: a@x, b@y;" is two entries),
 * keeping at most `max`; `total` counts them all. A loop, never a spread: a hostile To: of half a
 * million addresses overflowed the stack with push(...list) and killed the parse worker.
 */
export function flattenAddresses(list: readonly ParsedAddress[], max: number): { addresses: AddressInfo[]; total: number } {
  const addresses: AddressInfo[] = [];
  let total = 0;
  const pending: (readonly ParsedAddress[])[] = [list];
  const positions: number[] = [0];
  while (pending.length > 0) {
    const top = pending.length - 1;
    const entry = pending[top]![positions[top]!];
    if (entry === undefined) {
      pending.pop();
      positions.pop();
      continue;
    }
    positions[top]!++;
    if (entry.group) {
      pending.push(entry.group);
      positions.push(0);
    } else if (entry.address || entry.name) {
      total++;
      if (addresses.length < max) addresses.push({ name: entry.name ?? '', address: entry.address ?? '' });
    }
  }
  return { addresses, total };
}

/**
 * One raw header line from mailparser's headerLines as {name, value}: the name as written, the value
 * unfolded and with RFC 2047 encoded-words decoded. mailparser keeps lines as binary strings (one
 * char per byte), so raw 8-bit UTF-8 (RFC 6532) is decoded here. A line that is not a header field
 * (no colon, or a name with spaces or controls: garbage, or a body without a header block) gives null.
 */
export function decodeHeaderLine(line: string): HeaderLine | null {
  const colon = line.indexOf(':');
  if (colon < 0) return null;
  // RFC 5322 obsolete syntax allows whitespace before the colon ("Subject : x").
  const name = line.slice(0, colon).replace(/[ \t]+$/, '');
  if (!FIELD_NAME.test(name)) return null;
  const raw = Buffer.from(line.slice(colon + 1), 'latin1').toString('utf8');
  // Unfolding (RFC 5322 2.2.3) removes the CRLF and keeps the whitespace that follows it.
  const value = decodeEncodedWords(raw.replace(/\r\n|\r|\n/g, '').trim());
  return { name, value };
}

/**
 * Windows-1252 bytes 0x80-0x9F (WHATWG index). Node >= 20.18.3 decodes the "windows-1252" encoding (which
 * every latin1/iso-8859-1/us-ascii label maps to) as ISO-8859-1, leaving C1 controls where "€", "“" and
 * "—" should be (nodejs/node#56542, #60888). Mapping the C1 range afterwards is right on fixed Nodes too:
 * a correct decoder only leaves the five undefined bytes there, and those map to themselves.
 */
const WINDOWS_1252_C1 = '€\u0081‚ƒ„…†‡ˆ‰Š‹Œ\u008dŽ\u008f\u0090‘’“”•–—˜™š›œ\u009džŸ';

function decodeCharset(charset: string, bytes: Buffer): string {
  const decoder = new TextDecoder(charset); // throws RangeError for an unknown charset
  const text = decoder.decode(bytes);
  if (decoder.encoding !== 'windows-1252') return text;
  return text.replace(/[\u0080-\u009f]/g, (c) => WINDOWS_1252_C1[c.charCodeAt(0) - 0x80] ?? c);
}

const ENCODED_WORD = /=\?([^?\s]+)\?([BbQq])\?([^?\s]*)\?=/g;

function wordBytes(encoding: string, text: string): Buffer {
  if (encoding === 'B' || encoding === 'b') return Buffer.from(text, 'base64');
  const bytes: number[] = [];
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    const hex = ch === '=' ? text.slice(i + 1, i + 3) : '';
    if (/^[0-9A-Fa-f]{2}$/.test(hex)) {
      bytes.push(parseInt(hex, 16));
      i += 2;
    } else {
      bytes.push(ch === '_' ? 0x20 : text.charCodeAt(i) & 0xff);
    }
  }
  return Buffer.from(bytes);
}

/** Ends with ESC ( B or ESC ( J: back to ASCII (or JIS-Roman) in ISO-2022-JP. */
function endsInAsciiEscape(bytes: Buffer): boolean {
  const n = bytes.length;
  return n >= 3 && bytes[n - 3] === 0x1b && bytes[n - 2] === 0x28 && (bytes[n - 1] === 0x42 || bytes[n - 1] === 0x4a);
}

/**
 * Decodes RFC 2047 encoded-words. Whitespace between two adjacent encoded-words is dropped (RFC 2047
 * 6.2), and adjacent words in the same charset are decoded together, so a multi-byte character (or an
 * ISO-2022-JP escape sequence) split across two words comes out whole. Charsets are those of the
 * WHATWG Encoding Standard via TextDecoder (UTF-8, ISO-2022-JP, Shift_JIS, ISO-8859-x, Windows-125x,
 * KOI8, GB18030, Big5, EUC-KR, ...); a word in an unknown charset is left as written.
 */
export function decodeEncodedWords(value: string): string {
  if (!value.includes('=?')) return value;
  let out = '';
  let last = 0; // end of the previous encoded-word, 0 before the first
  let run: { charset: string; bytes: Buffer[]; source: string } | null = null;
  const flush = (): void => {
    if (!run) return;
    try {
      out += decodeCharset(run.charset, Buffer.concat(run.bytes));
    } catch {
      out += run.source; // unknown charset: keep the words as written
    }
    run = null;
  };
  for (const match of value.matchAll(ENCODED_WORD)) {
    const [word, charsetSpec = '', encoding = 'Q', text = ''] = match;
    const start = match.index ?? 0;
    const between = value.slice(last, start);
    // RFC 2231 allows a language after the charset: "utf-8*en".
    const charset = charsetSpec.split('*')[0]?.toLowerCase() ?? '';
    // Adjacent words of one charset are decoded together: a character may be split across two.
    if (run && /^[ \t]*$/.test(between) && run.charset === charset) {
      const bytes = wordBytes(encoding, text);
      // ISO-2022-*: each word should end back in ASCII (RFC 1468). Joined, that escape right
      // before the next word's own escape is an error to the decoder (U+FFFD between the
      // words), so it is dropped; it selects nothing the next escape does not replace.
      const previous = run.bytes[run.bytes.length - 1]!;
      if (charset.startsWith('iso-2022-') && bytes[0] === 0x1b && endsInAsciiEscape(previous)) {
        run.bytes[run.bytes.length - 1] = previous.subarray(0, previous.length - 3);
      }
      run.bytes.push(bytes);
      run.source += between + word;
    } else {
      flush();
      const betweenWords = last > 0 && /^[ \t]*$/.test(between);
      if (!betweenWords) out += between;
      run = { charset, bytes: [wordBytes(encoding, text)], source: word };
    }
    last = start + word.length;
  }
  flush();
  return out + value.slice(last);
}

const MONTHS = ['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec'];
/** RFC 5322 3.3 (obsolete forms included): [day-of-week ","] day month year hour:minute[:second] zone [comment]. */
const MAIL_DATE = /^(?:[a-z]{3}\s*,\s*)?(\d{1,2})\s+([a-z]{3})\s+(\d{2,4})\s+(\d{1,2}):(\d{2})(?::(\d{2}))?\s*([+-]\d{4}|ut|gmt|[ecmp][sd]t|[a-ik-z])\s*(?:\(.*\))?$/i;
/** RFC 5322 4.3: the obsolete US zone names; military letters are to be read as -0000 (their sign was never agreed). */
const ZONES: Record<string, number> = { ut: 0, gmt: 0, edt: -4, est: -5, cdt: -5, cst: -6, mdt: -6, mst: -7, pdt: -7, pst: -8 };

/**
 * A Date header's value as ISO 8601, or null when it is not an RFC 5322 date-time. Strict where
 * JavaScript's Date is lenient: a zone is required (without one, Date reads the server's local
 * time), "foo 12" is not a date (Date makes it 2001-12-01), and the year must be 1900-9999 (the
 * event's `date` is an RFC 3339 date-time, which has four-digit years).
 */
export function parseMailDate(value: string): string | null {
  const m = MAIL_DATE.exec(value.trim());
  if (!m) return null;
  const [, day, monthName, yearText, hour, minute, second, zone] = m;
  const month = MONTHS.indexOf(monthName!.toLowerCase());
  if (month === -1) return null;
  let year = Number(yearText);
  // RFC 5322 4.3: a two-digit year 00-49 is 2000-2049, 50-99 and three digits add 1900.
  if (yearText!.length === 2) year += year < 50 ? 2000 : 1900;
  else if (yearText!.length === 3) year += 1900;
  if (year < 1900 || year > 9999) return null;
  const [d, h, min, sec] = [Number(day), Number(hour), Number(minute), Number(second ?? 0)];
  if (h > 23 || min > 59 || sec > 60) return null;
  const z = zone!.toLowerCase();
  const offsetMinutes = /^[+-]\d{4}$/.test(z) ? (z[0] === '-' ? -1 : 1) * (Number(z.slice(1, 3)) * 60 + Number(z.slice(3, 5))) : (ZONES[z] ?? 0) * 60;
  const local = Date.UTC(year, month, d, h, min, Math.min(sec, 59));
  const check = new Date(local);
  // 31 Feb would roll over into March.
  if (check.getUTCDate() !== d || check.getUTCMonth() !== month) return null;
  return new Date(local - offsetMinutes * 60_000).toISOString();
}
