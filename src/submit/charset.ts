/**
 * `header.charset`: the body and non-ASCII headers are written in the charset the client asked
 * for (Haineko ignored it). UTF-8, ISO-2022-JP and ISO-8859-1 are honoured; anything else is
 * UTF-8, as Haineko forced it. The only module that imports encoding-japanese.
 */
import Encoding from 'encoding-japanese';

export type Charset = 'UTF-8' | 'ISO-2022-JP' | 'ISO-8859-1';

const ALIASES: Record<string, Charset> = {
  'utf-8': 'UTF-8',
  utf8: 'UTF-8',
  'us-ascii': 'UTF-8',
  ascii: 'UTF-8',
  'iso-2022-jp': 'ISO-2022-JP',
  jis: 'ISO-2022-JP',
  'iso-8859-1': 'ISO-8859-1',
  latin1: 'ISO-8859-1',
  'iso_8859-1': 'ISO-8859-1',
};

export function normalizeCharset(name: string): Charset {
  return ALIASES[name.trim().toLowerCase()] ?? 'UTF-8';
}

export function isAscii(s: string): boolean {
  return /^[\x00-\x7f]*$/.test(s);
}

/** The text in the charset; characters it cannot hold become '?', as Perl's Encode does. */
export function encodeText(text: string, charset: Charset): Buffer {
  switch (charset) {
    case 'UTF-8':
      return Buffer.from(text, 'utf8');
    case 'ISO-8859-1': {
      const out = Buffer.alloc(text.length);
      let n = 0;
      for (const ch of text) out[n++] = ch.codePointAt(0)! <= 0xff ? ch.codePointAt(0)! : 0x3f;
      return out.subarray(0, n);
    }
    case 'ISO-2022-JP':
      return Buffer.from(Encoding.convert(Encoding.stringToCode(text), { to: 'JIS', from: 'UNICODE', type: 'array' }));
  }
}

// An encoded word is at most 75 characters (RFC 2047 2): `=?ISO-2022-JP?B?` + `?=` leave 57
// for base64, i.e. 42 bytes of text; chunks of 40 bytes stay under it for every charset here.
const MAX_WORD_BYTES = 40;

/**
 * RFC 2047 encoded words for a header value with non-ASCII characters, each whole characters
 * of at most 40 bytes (an ISO-2022-JP word ends back in ASCII, so each decodes on its own),
 * joined by folding whitespace, which decoders drop between adjacent encoded words.
 */
export function encodeWords(text: string, charset: Charset): string {
  const words: string[] = [];
  let chunk = '';
  for (const ch of text) {
    if (chunk && encodeText(chunk + ch, charset).length > MAX_WORD_BYTES) {
      words.push(word(chunk, charset));
      chunk = '';
    }
    chunk += ch;
  }
  if (chunk) words.push(word(chunk, charset));
  return words.join('\r\n ');
}

function word(text: string, charset: Charset): string {
  return `=?${charset}?B?${encodeText(text, charset).toString('base64')}?=`;
}

/**
 * The longest run without whitespace a header value keeps as it is. Folding happens only at
 * whitespace, and a header line is at most 998 octets (RFC 5322 2.1.1): with the longest field
 * name (`X-` + 70) and ": " a 900-character word still fits; a longer one becomes encoded
 * words, which can be split anywhere.
 */
const MAX_WORD = 900;

function hasLongWord(value: string): boolean {
  let run = 0;
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    run = c === 0x20 || c === 0x09 ? 0 : run + 1;
    if (run > MAX_WORD) return true;
  }
  return false;
}

/**
 * Runs of spaces and tabs become one space, and none is left at either end: folding happens
 * only before a space that follows a word, so a long run could not be folded, and a trailing
 * one would make a continuation line of nothing but whitespace.
 */
function squeeze(value: string): string {
  return value.replace(/[ \t]+/g, ' ').trim();
}

/** A header value: ASCII as it is (folded later), otherwise, or with a word too long to fold, encoded words. */
export function headerText(raw: string, charset: Charset): string {
  const value = squeeze(raw);
  return isAscii(value) && !hasLongWord(value) ? value : encodeWords(value, charset);
}

/** An address header value (`Name <a@b>`): only a non-ASCII (or unfoldably long) display name is encoded. */
export function headerAddressText(raw: string, charset: Charset): string {
  const value = squeeze(raw);
  if (isAscii(value) && !hasLongWord(value)) return value;
  const m = /^(.*?)\s*(<[^<>]*>)\s*$/.exec(value);
  if (!m) return encodeWords(value, charset);
  const name = m[1]!.replace(/^"(.*)"$/, '$1');
  return name ? `${encodeWords(name, charset)} ${m[2]}` : m[2]!;
}
