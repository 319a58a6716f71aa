/**
 * Builds the RFC 5322 message for a submission, once; each recipient's copy differs only in its
 * To: header (Haineko sent one transaction per recipient with To: that recipient). Everything
 * is 7-bit clean (base64 or quoted-printable when needed), so an upstream without 8BITMIME
 * takes it and a non-ASCII body cannot break the relay (a Haineko defect).
 */
import { randomBytes } from 'node:crypto';
import type { OutboundMessage } from '../relay/types.js';
import { encodeText, headerAddressText, headerText, normalizeCharset, type Charset } from './charset.js';
import type { SubmitRequest } from './request.js';

export interface MessageContext {
  queueid: string;
  /** Our host name, in Received: and Message-Id. */
  hostname: string;
  /** Our name in the loop header. */
  servername: string;
  remoteaddr: string;
  useragent: string | null;
  referer: string;
  version: string;
  date: Date;
}

const CRLF = '\r\n';
// RFC 5322 2.1.1: a line is at most 998 octets.
const MAX_LINE = 998;
// RFC 5322 2.1.1 and 2.2.3: header lines should be at most 78 characters, folded at whitespace.
const FOLD_AT = 78;

/** Header text we copy from HTTP headers (User-Agent, Referer): printable ASCII, bounded. */
function printable(s: string, max = 200): string {
  return s.replace(/[^\x20-\x7e]/g, '?').slice(0, max);
}

/** RFC 5322 date-time, in UTC. */
export function rfc5322Date(d: Date): string {
  return d.toUTCString().replace(/GMT$/, '+0000');
}

export function buildMessage(req: SubmitRequest, ctx: MessageContext): OutboundMessage {
  const charset = normalizeCharset(req.header.charset);
  const date = rfc5322Date(ctx.date);
  const head: string[] = [
    `Received: from ${req.ehlo} ([${ctx.remoteaddr}])${CRLF} by ${ctx.hostname} with HTTP id ${ctx.queueid};${CRLF} ${date}`,
    `Date: ${date}`,
    `Message-Id: <${ctx.queueid}.${Math.floor(ctx.date.getTime() / 1000)}@${ctx.hostname}>`,
    foldHeader(`From: ${headerAddressText(req.header.from ?? req.mail, charset)}`),
  ];
  const tail: string[] = [];
  if (req.header.cc.length) tail.push(foldHeader(`Cc: ${req.header.cc.map((c) => headerAddressText(c, charset)).join(`,${CRLF} `)}`));
  if (req.header.replyto) tail.push(foldHeader(`Reply-To: ${headerAddressText(req.header.replyto, charset)}`));
  tail.push(foldHeader(`Subject: ${headerText(req.header.subject, charset)}`));
  tail.push('MIME-Version: 1.0');
  if (ctx.useragent) tail.push(`X-Mailer: ${printable(ctx.useragent)}`);
  tail.push(`X-SMTP-Engine: mailwire ${ctx.version}`);
  if (ctx.referer) tail.push(`X-HTTP-Referer: ${printable(ctx.referer)}`);
  // Up to MAX_LOOP_HOPS names (validate.ts): folded, so a long list never makes an overlong line.
  tail.push(foldHeader(`X-Haineko-Loop: ${[...req.header.loop, ctx.servername].join(', ')}`));
  tail.push(`X-Originating-IP: [${ctx.remoteaddr}]`);
  for (const [name, value] of req.header.extra) tail.push(foldHeader(`${name}: ${headerText(value, charset)}`));
  tail.push(...mimeBody(req, charset, ctx.queueid));

  const before = Buffer.from(head.join(CRLF) + CRLF);
  const after = Buffer.from(tail.join(CRLF) + CRLF);
  return {
    queueid: ctx.queueid,
    raw: (rcpt) => Buffer.concat([before, Buffer.from(`To: ${rcpt}${CRLF}`), after]),
    json: forwardJson(req, ctx),
  };
}

/** The submission as Haineko JSON for the Haineko mailer, with this server added to the loop list. */
function forwardJson(req: SubmitRequest, ctx: MessageContext): Record<string, unknown> {
  const header: Record<string, unknown> = { subject: req.header.subject, charset: req.header.charset, 'x-haineko-loop': [...req.header.loop, ctx.servername] };
  if (req.header.from !== null) header['from'] = req.header.from;
  if (req.header.replyto !== null) header['replyto'] = req.header.replyto;
  if (req.header.cc.length) header['cc'] = req.header.cc;
  for (const [name, value] of req.header.extra) header[name] = value;
  const json: Record<string, unknown> = { ehlo: ctx.hostname, mail: req.mail, header, body: req.body };
  if (req.html !== null) json['html'] = req.html;
  if (req.attachments.length) json['attachments'] = req.attachments.map((a) => ({ filename: a.filename, contentType: a.contentType, content: a.content.toString('base64') }));
  return json;
}

/** Content headers, a blank line and the body: one text part, or multipart when there is HTML or attachments. */
function mimeBody(req: SubmitRequest, charset: Charset, queueid: string): string[] {
  const text = textPart(req.body, 'text/plain', charset);
  let body: Part = text;
  if (req.html !== null) {
    body = multipart('alternative', [text, textPart(req.html, 'text/html', charset)], queueid);
  }
  if (req.attachments.length) {
    const parts: Part[] = [body];
    for (const a of req.attachments) {
      parts.push({
        headers: [
          foldHeader(`Content-Type: ${a.contentType};${CRLF} name=${paramValue(a.filename)}`),
          `Content-Disposition: attachment;${CRLF} ${filenameParam(a.filename)}`,
          'Content-Transfer-Encoding: base64',
        ],
        body: base64Lines(a.content),
      });
    }
    body = multipart('mixed', parts, queueid);
  }
  return [...body.headers, '', body.body];
}

interface Part {
  headers: string[];
  body: string;
}

function multipart(kind: 'alternative' | 'mixed', parts: Part[], queueid: string): Part {
  const boundary = `=_mailwire_${kind}_${queueid}_${randomBytes(6).toString('hex')}`;
  const lines: string[] = ['This is a multi-part message in MIME format.'];
  for (const p of parts) lines.push(`--${boundary}`, ...p.headers, '', p.body);
  lines.push(`--${boundary}--`);
  return { headers: [`Content-Type: multipart/${kind};${CRLF} boundary="${boundary}"`], body: lines.join(CRLF) };
}

function textPart(text: string, type: string, charset: Charset): Part {
  // Bare LF and bare CR become CRLF: SMTP lines end in CRLF, and a bare one is smuggling bait.
  const normalized = text.replace(/\r\n|\r|\n/g, CRLF);
  const bytes = encodeText(normalized, charset);
  const eightBit = bytes.some((b) => b >= 0x80);
  const longLine = normalized.split(CRLF).some((l) => Buffer.byteLength(l) > MAX_LINE);
  let cte: string;
  let body: string;
  if (!eightBit && !longLine) {
    cte = '7bit';
    body = bytes.toString('latin1');
  } else if (charset === 'ISO-8859-1') {
    cte = 'quoted-printable';
    body = quotedPrintable(bytes);
  } else {
    cte = 'base64';
    body = base64Lines(bytes);
  }
  return { headers: [`Content-Type: ${type}; charset=${charset}`, `Content-Transfer-Encoding: ${cte}`], body };
}

function base64Lines(buf: Buffer): string {
  const b64 = buf.toString('base64');
  const lines: string[] = [];
  for (let i = 0; i < b64.length; i += 76) lines.push(b64.slice(i, i + 76));
  return lines.join(CRLF);
}

/** RFC 2045 6.7 quoted-printable of text bytes whose line breaks are CRLF. */
export function quotedPrintable(bytes: Buffer): string {
  const out: string[] = [];
  let start = 0;
  for (let i = 0; i <= bytes.length; i++) {
    if (i === bytes.length || (bytes[i] === 0x0d && bytes[i + 1] === 0x0a)) {
      out.push(qpLine(bytes.subarray(start, i)));
      start = i + 2;
      i++;
    }
  }
  return out.join(CRLF);
}

function qpLine(line: Buffer): string {
  let out = '';
  let width = 0;
  for (let i = 0; i < line.length; i++) {
    const b = line[i]!;
    const last = i === line.length - 1;
    const literal = (b >= 33 && b <= 126 && b !== 61) || ((b === 32 || b === 9) && !last);
    const token = literal ? String.fromCharCode(b) : `=${b.toString(16).toUpperCase().padStart(2, '0')}`;
    // Soft line break: lines stay within 76 characters including the trailing '='.
    if (width + token.length > 75) {
      out += `=${CRLF}`;
      width = 0;
    }
    out += token;
    width += token.length;
  }
  return out;
}

/**
 * A MIME parameter value, quoted, with `"` and `\` escaped whatever the branch (a quote would
 * end the value and let the name add parameters of its own); non-ASCII names get RFC 2047
 * words (read by every client). Control characters were refused by validation.
 */
function paramValue(name: string): string {
  const text = /^[\x20-\x7e]*$/.test(name) ? name : headerText(name, 'UTF-8').replace(/\r\n /g, ' ');
  return `"${text.replace(/["\\]/g, '\\$&')}"`;
}

// RFC 2231 3: a long parameter is split into numbered sections, each on its own line.
const RFC2231_SECTION = 60;

/** filename= for ASCII names, RFC 2231 filename*= for the others (in sections when long). */
function filenameParam(name: string): string {
  if (/^[\x20-\x7e]*$/.test(name)) return `filename=${paramValue(name)}`;
  const encoded = encodeURIComponent(name).replace(/['()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  if (encoded.length <= RFC2231_SECTION) return `filename*=UTF-8''${encoded}`;
  // Sections never split a %XX triplet.
  const sections = encoded.match(new RegExp(`(?:%[0-9A-F]{2}|[^%]){1,${RFC2231_SECTION / 3}}`, 'g')) ?? [];
  return sections.map((sec, i) => `filename*${i}*=${i === 0 ? "UTF-8''" : ''}${sec}`).join(`;${CRLF} `);
}

const isWsp = (c: string | undefined) => c === ' ' || c === '\t';

/**
 * Folds a header field at whitespace (RFC 5322 2.2.3) so that each line is at most 78
 * characters where whitespace allows; lines already folded (CRLF + space) are folded each.
 * A fold goes before a whitespace that follows a non-whitespace character, so no line is only
 * whitespace, and never before the value's first word. A word longer than a line stays whole:
 * headerText and headerAddressText encode words too long for 998 (charset.ts).
 */
export function foldHeader(field: string): string {
  return field
    .split(CRLF)
    .map((line, n) => foldLine(line, n === 0 ? line.indexOf(':') + 1 : 0))
    .join(CRLF);
}

function foldLine(line: string, minCut: number): string {
  const parts: string[] = [];
  let start = 0;
  let min = Math.max(minCut, 0);
  while (line.length - start > FOLD_AT) {
    let cut = -1;
    for (let i = start + FOLD_AT; i > start + min; i--) {
      if (isWsp(line[i]) && !isWsp(line[i - 1])) {
        cut = i;
        break;
      }
    }
    if (cut < 0) {
      // No whitespace in the first 78 characters: fold at the next one, if any.
      const next = /[^ \t][ \t]/g;
      next.lastIndex = start + FOLD_AT;
      const found = next.exec(line);
      if (!found) break;
      cut = found.index + 1;
    }
    parts.push(line.slice(start, cut));
    start = cut;
    min = 0;
  }
  parts.push(line.slice(start));
  return parts.join(CRLF);
}
