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
    `From: ${headerAddressText(req.header.from ?? req.mail, charset)}`,
  ];
  const tail: string[] = [];
  if (req.header.cc.length) tail.push(`Cc: ${req.header.cc.map((c) => headerAddressText(c, charset)).join(`,${CRLF} `)}`);
  if (req.header.replyto) tail.push(`Reply-To: ${headerAddressText(req.header.replyto, charset)}`);
  tail.push(`Subject: ${headerText(req.header.subject, charset)}`);
  tail.push('MIME-Version: 1.0');
  if (ctx.useragent) tail.push(`X-Mailer: ${printable(ctx.useragent)}`);
  tail.push(`X-SMTP-Engine: mailwire ${ctx.version}`);
  if (ctx.referer) tail.push(`X-HTTP-Referer: ${printable(ctx.referer)}`);
  tail.push(`X-Haineko-Loop: ${[...req.header.loop, ctx.servername].join(',')}`);
  tail.push(`X-Originating-IP: [${ctx.remoteaddr}]`);
  for (const [name, value] of req.header.extra) tail.push(`${name}: ${headerText(value, charset)}`);
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
          `Content-Type: ${a.contentType};${CRLF} name=${paramValue(a.filename)}`,
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

/** A MIME parameter value, quoted; non-ASCII names get RFC 2047 words (read by every client). */
function paramValue(name: string): string {
  if (/^[\x20-\x7e]*$/.test(name)) return `"${name.replace(/["\\]/g, '\\$&')}"`;
  return `"${headerText(name, 'UTF-8').replace(/\r\n /g, ' ')}"`;
}

/** filename= for ASCII names, RFC 2231 filename*= for the others. */
function filenameParam(name: string): string {
  if (/^[\x20-\x7e]*$/.test(name)) return `filename=${paramValue(name)}`;
  return `filename*=UTF-8''${encodeURIComponent(name).replace(/['()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)}`;
}
