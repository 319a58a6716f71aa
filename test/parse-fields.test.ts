import { describe, expect, it } from 'vitest';
import { capUtf8, cleanToken, decodeEncodedWords, decodeHeaderLine, flattenAddresses, oneLine, parseMailDate, sanitizeFilename } from '../src/parse/fields.js';

describe('decodeEncodedWords (RFC 2047)', () => {
  it('decodes B and Q words; "_" is a space in Q', () => {
    expect(decodeEncodedWords('=?UTF-8?B?w6TDtsO8?=')).toBe('äöü');
    expect(decodeEncodedWords('=?iso-8859-1?q?Caf=E9_cr=E8me?=')).toBe('Café crème');
  });

  it('drops whitespace between adjacent words, keeps it next to plain text', () => {
    expect(decodeEncodedWords('=?UTF-8?Q?a?= =?UTF-8?Q?b?=')).toBe('ab');
    // ISO-2022-JP: each word ends in ASCII mode (RFC 1468), the way long Japanese subjects are written.
    expect(decodeEncodedWords('=?ISO-2022-JP?B?GyRCJEgkRhsoQg==?= =?ISO-2022-JP?B?GyRCJGIbKEI=?=')).toBe('とても');
    expect(decodeEncodedWords('=?UTF-8?Q?a?=\t =?ISO-8859-1?Q?=E9?=')).toBe('aé');
    expect(decodeEncodedWords('Re: =?UTF-8?Q?caf=C3=A9?= ok')).toBe('Re: café ok');
  });

  it('joins a multi-byte character split across two words of the same charset', () => {
    // "€" is E2 82 AC in UTF-8: split after the first byte
    expect(decodeEncodedWords('=?UTF-8?Q?=E2?= =?UTF-8?Q?=82=AC?=')).toBe('€');
    // ISO-2022-JP "日本" with the escape sequences in one word and the characters in another
    const jis = Buffer.from('\x1b$BF|K\\\x1b(B', 'latin1');
    expect(decodeEncodedWords(`=?ISO-2022-JP?B?${jis.subarray(0, 5).toString('base64')}?= =?ISO-2022-JP?B?${jis.subarray(5).toString('base64')}?=`)).toBe('日本');
  });

  it('Windows-1252 (and the latin1 labels that mean it) decode 0x80-0x9F, despite Node\'s TextDecoder', () => {
    expect(decodeEncodedWords('=?windows-1252?Q?=80=85=93x=94=96=97=99?=')).toBe('€…“x”–—™');
    expect(decodeEncodedWords('=?iso-8859-1?Q?=93x=94?=')).toBe('“x”');
  });

  it('other charsets: ISO-8859-2, KOI8-R, Shift_JIS; RFC 2231 language suffix', () => {
    expect(decodeEncodedWords('=?ISO-8859-2?Q?=A3=F3d=BC?=')).toBe('Łódź');
    expect(decodeEncodedWords('=?KOI8-R?B?8NLJ18XU?=')).toBe('Привет');
    expect(decodeEncodedWords('=?Shift_JIS?B?k/qWe4zq?=')).toBe('日本語');
    expect(decodeEncodedWords('=?UTF-8*en?Q?hi?=')).toBe('hi');
  });

  it('leaves an unknown charset and malformed words as written', () => {
    expect(decodeEncodedWords('=?x-unknown?Q?abc?= =?UTF-8?Q?d?=')).toBe('=?x-unknown?Q?abc?=d');
    expect(decodeEncodedWords('=?UTF-8?X?abc?=')).toBe('=?UTF-8?X?abc?=');
    expect(decodeEncodedWords('100% =? not a word')).toBe('100% =? not a word');
  });
});

describe('decodeHeaderLine', () => {
  it('keeps the name as written, unfolds and decodes the value', () => {
    expect(decodeHeaderLine('X-Thing: a\r\n =?UTF-8?Q?b=C3=BC?=\r\n\tc')).toEqual({ name: 'X-Thing', value: 'a bü\tc' });
  });
  it('decodes raw 8-bit UTF-8 given as a binary string', () => {
    expect(decodeHeaderLine(Buffer.from('Subject: Grüße', 'utf8').toString('latin1'))).toEqual({ name: 'Subject', value: 'Grüße' });
  });
  it('accepts whitespace before the colon (obsolete syntax) and an empty value', () => {
    expect(decodeHeaderLine('Subject : hi')).toEqual({ name: 'Subject', value: 'hi' });
    expect(decodeHeaderLine('Subject:')).toEqual({ name: 'Subject', value: '' });
  });
  it('rejects lines that are not header fields', () => {
    expect(decodeHeaderLine('no colon here')).toBeNull();
    expect(decodeHeaderLine(': empty name')).toBeNull();
    expect(decodeHeaderLine('two words: x')).toBeNull();
    expect(decodeHeaderLine('\x00\x01bin: x')).toBeNull();
  });
});

describe('capUtf8', () => {
  it('cuts on a character boundary and flags it', () => {
    expect(capUtf8('abc', 3)).toEqual({ value: 'abc', truncated: false });
    expect(capUtf8('abcd', 3)).toEqual({ value: 'abc', truncated: true });
    expect(capUtf8('aé', 2)).toEqual({ value: 'a', truncated: true });
    expect(capUtf8('日本語', 7)).toEqual({ value: '日本', truncated: true });
    expect(capUtf8('😀x', 3)).toEqual({ value: '', truncated: true });
    expect(capUtf8('x', 0)).toEqual({ value: '', truncated: true });
  });
});

describe('sanitizeFilename and cleanToken', () => {
  it('keeps the last path segment, drops controls and bidi overrides, caps at 255', () => {
    expect(sanitizeFilename('../../etc/passwd')).toBe('passwd');
    expect(sanitizeFilename('C:\\Users\\x\\evil.bat')).toBe('evil.bat');
    expect(sanitizeFilename('a\r\nb\u0000c\u202Egpj.exe')).toBe('abcgpj.exe');
    // U+061C (Arabic letter mark) is a bidi mark too; the download path and the parser drop the same set.
    expect(sanitizeFilename('invoice\u061Cfdp.exe')).toBe('invoicefdp.exe');
    expect(sanitizeFilename('dir/')).toBeNull();
    expect(sanitizeFilename('..')).toBeNull();
    expect(sanitizeFilename('')).toBeNull();
    expect(sanitizeFilename(undefined)).toBeNull();
    expect(sanitizeFilename('x'.repeat(1000))).toBe('x'.repeat(255));
    expect(sanitizeFilename('報告書.pdf')).toBe('報告書.pdf');
  });
  it('does not leave half a surrogate pair at the cap', () => {
    const capped = sanitizeFilename('a'.repeat(254) + '😀😀') ?? '';
    expect(capped).toBe('a'.repeat(254));
  });
  it('cleans tokens', () => {
    expect(cleanToken(' image/png\r\n')).toBe('image/png');
    expect(cleanToken('')).toBeNull();
    expect(cleanToken(undefined)).toBeNull();
  });
});

describe('flattenAddresses and oneLine', () => {
  it('expands groups and drops empty entries', () => {
    expect(flattenAddresses([
      { name: 'A', address: 'a@x' },
      { name: 'team', group: [{ name: '', address: 'b@x' }, { name: 'C', address: 'c@x' }] },
      { name: 'empty', group: [] },
      { name: '', address: '' },
      { name: 'D', address: 'd@x' },
    ], 10)).toEqual({
      addresses: [
        { name: 'A', address: 'a@x' },
        { name: '', address: 'b@x' },
        { name: 'C', address: 'c@x' },
        { name: 'D', address: 'd@x' },
      ],
      total: 4,
    });
  });

  it('keeps at most max addresses and counts them all, without recursion or spreads (half a million entries)', () => {
    const many = Array.from({ length: 500_000 }, (_, i) => ({ name: '', address: `a${i}@x` }));
    const { addresses, total } = flattenAddresses([{ name: 'all', group: many }], 3);
    expect(addresses).toEqual([{ name: '', address: 'a0@x' }, { name: '', address: 'a1@x' }, { name: '', address: 'a2@x' }]);
    expect(total).toBe(500_000);
  });
  it('makes an error one line of at most 500 characters', () => {
    expect(oneLine('a\r\n  b\tc')).toBe('a b c');
    expect(oneLine('x'.repeat(600))).toHaveLength(500);
  });
});

describe('parseMailDate', () => {
  it('reads RFC 5322 dates, obsolete forms included', () => {
    const cases: [string, string][] = [
      ['Sat, 21 Nov 2026 10:00:00 +0100', '2026-11-21T09:00:00.000Z'],
      ['Mon,  7 Dec 2026 00:52:48 +0000 (UTC)', '2026-12-07T00:52:48.000Z'],
      ['7 Dec 2026 00:52 -0530', '2026-12-07T06:22:00.000Z'],
      ['Tue, 1 Jan 2030 12:00:00 GMT', '2030-01-01T12:00:00.000Z'],
      ['Tue, 1 Jan 30 12:00:00 EST', '2030-01-01T17:00:00.000Z'],
      ['Tue, 1 Jan 99 12:00:00 PDT', '1999-01-01T19:00:00.000Z'],
      ['Tue, 1 Jan 2030 12:00:00 Z', '2030-01-01T12:00:00.000Z'],
    ];
    for (const [value, iso] of cases) expect(parseMailDate(value), value).toBe(iso);
  });

  it('is null for what is not an RFC 5322 date-time, where JavaScript would guess', () => {
    for (const value of ['foo 12', '1', 'Mon, 1 Jan 10000 00:00:00 +0000', 'Mon, 1 Jan 1800 00:00:00 +0000', 'Mon, 31 Feb 2026 10:00:00 +0000', 'Mon, 1 Jan 2026 10:00:00', 'Mon, 1 Jan 2026 25:00:00 +0000', '2026-01-01T10:00:00Z', '']) {
      expect(parseMailDate(value), value).toBeNull();
    }
  });
});
