import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, open, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseMessageFile } from '../src/parse/parse.js';
import type { ParseLimits } from '../src/parse/types.js';

const FIXTURES = new URL('./fixtures/eml/', import.meta.url);
const LIMITS: ParseLimits = { maxTextBytes: 1024 * 1024, maxHtmlBytes: 1024 * 1024, maxAttachments: 50, maxHeaders: 500, timeoutMs: 10_000 };
/** The 1x1 PNG inside alternative-inline-image.eml. */
const PNG = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==', 'base64');

const sha256 = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('hex');
const crlf = (text: string): string => text.replace(/\r?\n/g, '\r\n');
const fixture = (name: string): string => new URL(name, FIXTURES).pathname;

let tmp: string;
let attDir: string;
beforeEach(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'mailwire-parse-'));
  attDir = join(tmp, 'attachments');
});
afterEach(async () => {
  await rm(tmp, { recursive: true, force: true });
});

/** Writes a generated message (string: LF turned into CRLF) and parses it. */
async function parseRaw(raw: string | Buffer, limits: Partial<ParseLimits> = {}) {
  const path = join(tmp, 'message.eml');
  await writeFile(path, typeof raw === 'string' ? crlf(raw) : raw);
  return parseMessageFile(path, attDir, { ...LIMITS, ...limits });
}

/** A multipart/mixed message whose parts are [headers, body] pairs. */
function multipart(parts: Array<[string, string]>, subject = 'parts'): string {
  const body = parts.map(([headers, content]) => `--b\n${headers}\n\n${content}\n`).join('');
  return `Subject: ${subject}\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="b"\n\n${body}--b--\n`;
}

function base64Lines(bytes: Buffer): string {
  return (bytes.toString('base64').match(/.{1,76}/g) ?? []).join('\r\n');
}

describe('charsets and headers', () => {
  it('8bit.eml: raw UTF-8 header and body, addresses with a group, header order', async () => {
    const parsed = await parseMessageFile(fixture('8bit.eml'), attDir, LIMITS);
    expect(parsed.subject).toBe('Grüße aus Köln ✓');
    expect(parsed.text).toBe('Grüße aus Köln — naïve café ✓ 日本語\nZweite Zeile.\n');
    expect(parsed.html).toBeNull();
    expect(parsed.messageId).toBe('<8bit-1@example.net>');
    expect(parsed.date).toBe('2026-11-21T09:00:00.000Z');
    expect(parsed.from).toEqual([{ name: 'Jürgen Müller', address: 'juergen@example.net' }]);
    expect(parsed.to).toEqual([
      { name: 'Alice', address: 'alice@example.org' },
      { name: '', address: 'bob@example.org' },
      { name: 'Carol C.', address: 'carol@example.org' },
    ]);
    expect(parsed.cc).toEqual([{ name: '', address: 'dave@example.org' }]);
    expect(parsed.replyTo).toEqual([{ name: '', address: 'replies@example.net' }]);
    expect(parsed.headers.map((h) => h.name)).toEqual([
      'Received', 'Received', 'Return-Path', 'Message-ID', 'Date', 'From', 'To', 'Cc', 'Reply-To',
      'Subject', 'X-Folded', 'MIME-Version', 'Content-Type', 'Content-Transfer-Encoding',
    ]);
    expect(parsed.headers[0]?.value).toBe('from mx2.example.net by mx.example.org; Sat, 21 Nov 2026 10:00:02 +0000');
    expect(parsed.headers.find((h) => h.name === 'From')?.value).toBe('Jürgen Müller <juergen@example.net>');
    expect(parsed.headers.find((h) => h.name === 'Subject')?.value).toBe('Grüße aus Köln ✓');
    // folded and with an encoded-word: unfolded, decoded
    expect(parsed.headers.find((h) => h.name === 'X-Folded')?.value).toBe('first part second part äöü');
    expect(parsed.truncated).toEqual({ text: false, html: false });
    expect(parsed.attachments).toEqual([]);
    expect(parsed.parseError).toBeNull();
    expect(existsSync(attDir)).toBe(false); // created only for a first attachment
  });

  it('iso-2022-jp.eml: encoded-word subject and a 7bit ISO-2022-JP body', async () => {
    const raw = await readFile(fixture('iso-2022-jp.eml'));
    expect(raw.every((b) => b < 0x80)).toBe(true); // 7bit on the wire...
    expect(raw.includes(Buffer.from('\x1b$B'))).toBe(true); // ...with JIS X 0208 escape sequences
    const parsed = await parseMessageFile(fixture('iso-2022-jp.eml'), attDir, LIMITS);
    expect(parsed.subject).toBe('日本語の件名テスト');
    expect(parsed.from).toEqual([{ name: '山田太郎', address: 'taro@example.jp' }]);
    expect(parsed.text).toBe('こんにちは、世界。\nこれはテストメールです。\n');
    expect(parsed.headers.find((h) => h.name === 'Subject')?.value).toBe('日本語の件名テスト');
    expect(parsed.headers.find((h) => h.name === 'From')?.value).toBe('山田太郎 <taro@example.jp>');
    expect(parsed.date).toBe('2026-11-22T00:30:00.000Z');
    expect(parsed.parseError).toBeNull();
  });

  it('latin1.eml: ISO-8859-1 quoted-printable body and Q-encoded subject', async () => {
    const parsed = await parseMessageFile(fixture('latin1.eml'), attDir, LIMITS);
    expect(parsed.subject).toBe('Café crème à la française');
    expect(parsed.from).toEqual([{ name: 'François', address: 'francois@example.fr' }]);
    expect(parsed.text).toBe('Déjà vu: ¡Olé! Ñandú, señor. 5 £ = «cinq livres».\nÜber die Straße.\n');
    expect(parsed.headers.find((h) => h.name === 'Subject')?.value).toBe('Café crème à la française');
    expect(parsed.parseError).toBeNull();
  });

  it('windows-1252.eml: the 0x80-0x9F range (€, smart quotes, dashes) in body and header', async () => {
    const parsed = await parseMessageFile(fixture('windows-1252.eml'), attDir, LIMITS);
    expect(parsed.subject).toBe('“Smart” quotes – € price');
    expect(parsed.headers.find((h) => h.name === 'Subject')?.value).toBe('“Smart” quotes – € price');
    expect(parsed.text).toBe('Price: 10 € … “quoted” — ‘single’ ™ Œuvre\n');
    expect(parsed.parseError).toBeNull();
  });

  it('caps the headers list at maxHeaders, keeping the first ones', async () => {
    const parsed = await parseMessageFile(fixture('8bit.eml'), attDir, { ...LIMITS, maxHeaders: 3 });
    expect(parsed.headers.map((h) => h.name)).toEqual(['Received', 'Received', 'Return-Path']);
    expect(parsed.subject).toBe('Grüße aus Köln ✓'); // fields still come from every header
    expect(parsed.date).toBe('2026-11-21T09:00:00.000Z');
  });

  it('absent or invalid fields: null subject and date, empty address lists, messageId gets <>', async () => {
    const parsed = await parseRaw('Date: not a date at all\nMessage-ID: bare-id@example.org\nTo: undisclosed-recipients:;\n\nhi\n');
    expect(parsed.subject).toBeNull();
    expect(parsed.date).toBeNull(); // mailparser itself would say "now"
    expect(parsed.messageId).toBe('<bare-id@example.org>');
    expect(parsed.from).toEqual([]);
    expect(parsed.to).toEqual([]); // an empty group
    expect(parsed.cc).toEqual([]);
    expect(parsed.replyTo).toEqual([]);
    expect(parsed.text).toBe('hi\n');
    expect(parsed.parseError).toBeNull();
  });

  it('repeated To headers are all kept', async () => {
    const parsed = await parseRaw('Subject: two\nTo: a@example.org\nTo: "B" <b@example.org>\n\nx\n');
    expect(parsed.to).toEqual([
      { name: '', address: 'a@example.org' },
      { name: 'B', address: 'b@example.org' },
    ]);
  });
});

describe('attachments', () => {
  it('alternative-inline-image.eml: text and html from the alternative, the cid image stays an attachment', async () => {
    const parsed = await parseMessageFile(fixture('alternative-inline-image.eml'), attDir, LIMITS);
    expect(parsed.text).toBe('Plain version of the newsletter.');
    expect(parsed.html).toBe('<html><body><p>HTML version</p><img src="cid:logo@example.com"></body></html>');
    expect(parsed.attachments).toEqual([
      { index: 0, filename: 'logo.png', contentType: 'image/png', size: PNG.length, sha256: sha256(PNG), contentId: 'logo@example.com', disposition: 'inline' },
    ]);
    expect(await readFile(join(attDir, '0'))).toEqual(PNG);
    expect(parsed.parseError).toBeNull();
  });

  it('attached-message.eml: message/rfc822 is one attachment with its exact bytes, outer text untouched', async () => {
    const raw = await readFile(fixture('attached-message.eml'), 'latin1');
    const inner = Buffer.from(raw.slice(raw.indexOf('Message-ID: <inner-1'), raw.indexOf('\r\n--mix-boundary--')), 'latin1');
    const parsed = await parseMessageFile(fixture('attached-message.eml'), attDir, LIMITS);
    expect(parsed.subject).toBe('Fwd: Inner subject');
    expect(parsed.text).toBe('Please see the forwarded message.');
    expect(parsed.attachments).toEqual([
      { index: 0, filename: 'forwarded.eml', contentType: 'message/rfc822', size: inner.length, sha256: sha256(inner), contentId: null, disposition: 'attachment' },
    ]);
    expect(await readFile(join(attDir, '0'))).toEqual(inner);
  });

  it('an inline message/rfc822 is not expanded into the outer message (mailparser would by default)', async () => {
    const raw = await readFile(fixture('attached-message.eml'), 'latin1');
    const inline = raw.replace('Content-Disposition: attachment; filename="forwarded.eml"', 'Content-Disposition: inline');
    const parsed = await parseRaw(Buffer.from(inline, 'latin1'));
    expect(parsed.text).toBe('Please see the forwarded message.');
    expect(parsed.attachments).toHaveLength(1);
    expect(parsed.attachments[0]).toMatchObject({ index: 0, filename: 'forwarded.eml', contentType: 'message/rfc822', disposition: 'inline' });
    expect((await readFile(join(attDir, '0'), 'latin1')).endsWith('INNER BODY TEXT')).toBe(true);
  });

  it('a 10 MB base64 attachment is streamed to disk with the right size and sha256', async () => {
    const original = randomBytes(10 * 1024 * 1024);
    const path = join(tmp, 'big.eml');
    await writeFile(path, Buffer.concat([
      Buffer.from(crlf(multipart([['Content-Type: text/plain', 'see attached']]).replace('--b--\n', ''))),
      Buffer.from('--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename="big.bin"\r\nContent-Transfer-Encoding: base64\r\n\r\n'),
      Buffer.from(base64Lines(original)),
      Buffer.from('\r\n--b--\r\n'),
    ]));
    const parsed = await parseMessageFile(path, attDir, LIMITS);
    expect(parsed.parseError).toBeNull();
    expect(parsed.text).toBe('see attached');
    expect(parsed.attachments).toEqual([
      { index: 0, filename: 'big.bin', contentType: 'application/octet-stream', size: original.length, sha256: sha256(original), contentId: null, disposition: 'attachment' },
    ]);
    const onDisk = await readFile(join(attDir, '0'));
    expect(onDisk.length).toBe(original.length);
    expect(sha256(onDisk)).toBe(sha256(original));
    expect(onDisk.equals(original)).toBe(true);
  });

  it('past maxAttachments the rest are drained, not written, and parseError says so', async () => {
    const contents = ['zero', 'one', 'two', 'three', 'four'];
    const parts: Array<[string, string]> = contents.map((c, i) => [`Content-Type: application/octet-stream\nContent-Disposition: attachment; filename="f${i}.bin"`, c]);
    parts.push(['Content-Type: text/plain', 'text after the attachments']);
    const parsed = await parseRaw(multipart(parts), { maxAttachments: 2 });
    expect(parsed.attachments.map((a) => [a.index, a.filename, a.size, a.sha256])).toEqual([
      [0, 'f0.bin', 4, sha256(Buffer.from('zero'))],
      [1, 'f1.bin', 3, sha256(Buffer.from('one'))],
    ]);
    expect((await readdir(attDir)).sort()).toEqual(['0', '1']);
    expect(await readFile(join(attDir, '1'), 'utf8')).toBe('one');
    expect(parsed.text).toBe('text after the attachments'); // the parse went on past the drained parts
    expect(parsed.parseError).toBe('attachment limit 2 reached; 3 attachments not stored');
  });

  it('hostile filenames are kept as sanitised metadata only; files are named by index', async () => {
    const parsed = await parseRaw(multipart([
      ['Content-Type: application/octet-stream\nContent-Disposition: attachment; filename="../../etc/passwd"', 'root'],
      ['Content-Type: application/octet-stream\nContent-Disposition: attachment; filename="..\\\\..\\\\windows\\\\evil.bat"', 'bat'],
      // RFC 2231: CR, LF and a right-to-left override inside the name
      ["Content-Type: application/octet-stream\nContent-Disposition: attachment; filename*=utf-8''evil%0D%0Aname%E2%80%AEtxt.exe", 'crlf'],
      // RFC 2047 in a quoted parameter, as many clients send it
      ['Content-Type: application/octet-stream\nContent-Disposition: attachment; filename="=?utf-8?Q?x=0D=0Ay.pdf?="', 'qp'],
      [`Content-Type: application/octet-stream\nContent-Disposition: attachment; filename="${'a'.repeat(1000)}.bin"`, 'long'],
      ['Content-Type: application/octet-stream\nContent-Disposition: attachment; filename=".."', 'dots'],
    ]));
    expect(parsed.attachments.map((a) => a.filename)).toEqual(['passwd', 'evil.bat', 'evilnametxt.exe', 'xy.pdf', 'a'.repeat(255), null]);
    // mailparser guesses the type of an application/octet-stream part from its (decoded) filename
    expect(parsed.attachments.map((a) => a.contentType)).toEqual([
      'application/octet-stream', 'application/octet-stream', 'application/octet-stream', 'application/pdf', 'application/octet-stream', 'application/octet-stream',
    ]);
    expect((await readdir(attDir)).sort()).toEqual(['0', '1', '2', '3', '4', '5']);
    expect(await readFile(join(attDir, '0'), 'utf8')).toBe('root');
    expect(existsSync(join(tmp, 'etc'))).toBe(false);
    expect(parsed.parseError).toBeNull();
  });

  it('disposition: header value mapped to attachment, inline or null; text parts with attachment disposition are attachments', async () => {
    const parsed = await parseRaw(multipart([
      ['Content-Type: text/plain', 'body'],
      ['Content-Type: application/pdf; name="a.pdf"', 'pdf'],
      ['Content-Type: text/plain\nContent-Disposition: attachment; filename="notes.txt"', 'notes'],
      ['Content-Type: image/gif\nContent-Disposition: form-data; name="x"', 'gif'],
    ]));
    expect(parsed.text).toBe('body');
    expect(parsed.attachments.map((a) => [a.filename, a.contentType, a.disposition])).toEqual([
      ['a.pdf', 'application/pdf', null],
      ['notes.txt', 'text/plain', 'attachment'],
      [null, 'image/gif', 'attachment'],
    ]);
  });
});

describe('limits on bodies', () => {
  it('text is cut at maxTextBytes on a character boundary', async () => {
    const body = 'aéééé'; // 1 + 4 * 2 bytes
    const message = `Subject: cut\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n${body}`;
    const cut = await parseRaw(message, { maxTextBytes: 4 }); // the 4th byte starts the 2nd é
    expect(cut.text).toBe('aé');
    expect(Buffer.byteLength(cut.text ?? '')).toBe(3);
    expect(cut.truncated).toEqual({ text: true, html: false });

    const exact = await parseRaw(message, { maxTextBytes: 9 });
    expect(exact.text).toBe(body);
    expect(exact.truncated.text).toBe(false);

    const emoji = await parseRaw(`Subject: cut\nContent-Type: text/plain; charset=utf-8\n\n😀😀`, { maxTextBytes: 7 });
    expect(emoji.text).toBe('😀');
    expect(emoji.truncated.text).toBe(true);
  });

  it('html is cut at maxHtmlBytes; an HTML-only message has no text (no html→text conversion)', async () => {
    const html = `<p>${'x'.repeat(1000)}</p>`;
    const parsed = await parseRaw(`Subject: html\nContent-Type: text/html; charset=utf-8\n\n${html}`, { maxHtmlBytes: 100 });
    expect(parsed.html).toBe(html.slice(0, 100));
    expect(parsed.text).toBeNull();
    expect(parsed.truncated).toEqual({ text: false, html: true });
    expect(parsed.parseError).toBeNull();
  });

  it('huge deeply nested HTML costs no html→text conversion', async () => {
    const html = '<div>'.repeat(200_000) + 'deep' + '</div>'.repeat(200_000);
    const started = Date.now();
    const parsed = await parseRaw(`Subject: nested\nContent-Type: text/html\n\n${html}`, { maxHtmlBytes: 4 * 1024 * 1024 });
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(parsed.html?.length).toBe(html.length);
    expect(parsed.html === html).toBe(true); // not toBe(): a failure would print megabytes
    expect(parsed.text).toBeNull();
  });
});

describe('broken input never throws', () => {
  it('broken-boundary.eml: a boundary that never appears', async () => {
    const parsed = await parseMessageFile(fixture('broken-boundary.eml'), attDir, LIMITS);
    expect(parsed.subject).toBe('Broken boundary');
    expect(parsed.from).toEqual([{ name: '', address: 'broken@example.org' }]);
    expect(parsed.text).toBeNull();
    expect(parsed.attachments).toEqual([]);
    expect(parsed.parseError).toBe('no MIME part found for boundary "declared-boundary"');
  });

  it('a part never closed and base64 cut short: what arrived is kept', async () => {
    const parsed = await parseRaw('Subject: unclosed\nContent-Type: multipart/mixed; boundary="b"\n\n--b\nContent-Type: text/plain\n\nvisible text\n--b\nContent-Type: application/pdf; name="a.pdf"\nContent-Transfer-Encoding: base64\n\nAAECAwQFBgcI\nAAEC');
    const bytes = Buffer.from('AAECAwQFBgcIAAEC', 'base64');
    expect(parsed.text).toBe('visible text');
    expect(parsed.attachments).toEqual([{ index: 0, filename: 'a.pdf', contentType: 'application/pdf', size: bytes.length, sha256: sha256(bytes), contentId: null, disposition: null }]);
    expect(parsed.parseError).toBeNull();
  });

  it('an empty file', async () => {
    const parsed = await parseRaw('');
    expect(parsed).toMatchObject({ messageId: null, subject: null, date: null, from: [], headers: [], text: null, html: null, attachments: [] });
    expect(parsed.parseError).toBe('empty message');
  });

  it('binary garbage', async () => {
    // deterministic bytes, without ":" so that no line looks like a header field by chance
    const garbage = Buffer.from(Array.from({ length: 64 * 1024 }, (_, i) => ((i * 7919 + 13) % 251) || 1).map((b) => (b === 0x3a ? 0x3b : b)));
    const parsed = await parseRaw(garbage);
    expect(parsed.headers).toEqual([]);
    expect(parsed.subject).toBeNull();
    expect(parsed.attachments).toEqual([]);
    expect(parsed.parseError).toBe('no header fields found (not an RFC 5322 message)');
  });

  it('a mailparser error (header block over 1 MiB) becomes parseError', async () => {
    const parsed = await parseRaw(`Subject: x\nX-Long: ${'a'.repeat(1100 * 1024)}\n\nbody\n`);
    expect(parsed.parseError).toBe('Max header size for a MIME node exceeded');
    expect(parsed.text).toBeNull();
  });

  it('more than 1000 MIME parts is a parse error, not a runaway tree', async () => {
    const parts: Array<[string, string]> = Array.from({ length: 1001 }, (_, i) => ['Content-Type: text/plain', `p${i}`]);
    const parsed = await parseRaw(multipart(parts, 'many'));
    expect(parsed.subject).toBe('many');
    expect(parsed.parseError).toBe('Max allowed child nodes exceeded');
  });

  it('a missing spool file rejects (infrastructure, not message content)', async () => {
    await expect(parseMessageFile(join(tmp, 'nope.eml'), attDir, LIMITS)).rejects.toThrow(/ENOENT/);
  });
});

describe('deadline', () => {
  it('timeoutMs: returns what was collected with parseError, and leaves no partial file', async () => {
    const original = randomBytes(8 * 1024 * 1024);
    const path = join(tmp, 'big.eml');
    await writeFile(path, Buffer.concat([
      Buffer.from('Subject: slow\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n'),
      Buffer.from(base64Lines(original)),
      Buffer.from('\r\n--b--\r\n'),
    ]));
    const started = Date.now();
    const parsed = await parseMessageFile(path, attDir, { ...LIMITS, timeoutMs: 1 });
    expect(Date.now() - started).toBeLessThan(1_000);
    expect(parsed.parseError).toBe('parse timed out after 1 ms');
    expect(parsed.attachments).toEqual([]);
    const files = existsSync(attDir) ? await readdir(attDir) : [];
    expect(files).toEqual([]);
  });

  it('timeoutMs in the middle of an attachment: earlier attachments kept, the partial file removed', async () => {
    // A FIFO that never ends: the parse is stuck in attachment 1 when the deadline comes, whatever the machine's speed.
    const fifo = join(tmp, 'stalled.eml');
    execFileSync('mkfifo', [fifo]);
    const parsing = parseMessageFile(fifo, attDir, { ...LIMITS, timeoutMs: 500 });
    const writer = await open(fifo, 'w');
    try {
      const started = multipart([['Content-Type: application/octet-stream\nContent-Disposition: attachment; filename="done.bin"', 'complete']], 'stalled')
        .replace('--b--\n', '--b\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n');
      await writer.write(crlf(started) + base64Lines(randomBytes(48 * 1024)) + '\r\n');
      const parsed = await parsing;
      expect(parsed.parseError).toBe('parse timed out after 500 ms');
      expect(parsed.subject).toBe('stalled');
      expect(parsed.attachments).toEqual([
        { index: 0, filename: 'done.bin', contentType: 'application/octet-stream', size: 8, sha256: sha256(Buffer.from('complete')), contentId: null, disposition: 'attachment' },
      ]);
      expect(await readdir(attDir)).toEqual(['0']);
    } finally {
      await writer.close();
    }
  });
});
