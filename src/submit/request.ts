/**
 * Reads a /submit body into a typed request. Haineko clients send JSON, and Haineko's own
 * sample clients send YAML flow style (single quotes, bare keys) with a form content type, so
 * a body that is not JSON is read as YAML. Field aliases are Haineko's.
 */
import { parseUntrustedYaml } from '../config/yaml.js';

export interface Attachment {
  filename: string;
  contentType: string;
  content: Buffer;
}

export interface SubmitRequest {
  ehlo: string;
  mail: string;
  /** As given; a number or boolean is kept as its string form and fails the address check (an object or array is malformed). */
  rcpt: string[];
  header: {
    from: string | null;
    subject: string;
    replyto: string | null;
    cc: string[];
    charset: string;
    /** Extra `X-` headers, in the order given. */
    extra: [string, string][];
    /** Servers this message already passed (Haineko's `x-haineko-loop`). */
    loop: string[];
  };
  body: string;
  html: string | null;
  attachments: Attachment[];
  /** Why the extended content (html, attachments, X- headers) is not acceptable, checked at DATA. */
  contentError: string | null;
}

// A message needs a handful of custom headers; hundreds are a way to bloat every copy.
const MAX_EXTRA_HEADERS = 50;
// Attachments per message: real mail has a few; each costs a MIME part and a base64 decode.
const MAX_ATTACHMENTS = 50;
// Haineko names (x-haineko-loop) and headers mailwire writes itself cannot be set as X- headers.
const RESERVED = new Set(['x-haineko-loop', 'x-mailer', 'x-smtp-engine', 'x-originating-ip', 'x-http-referer']);
const MAX_FILENAME = 255;
const X_HEADER_NAME = /^X-[A-Za-z0-9][A-Za-z0-9-]{0,70}$/i;
const MIME_TYPE = /^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}\/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}$/;
const BASE64 = /^[A-Za-z0-9+/\s]*={0,2}\s*$/;

/**
 * The largest body read as YAML. Haineko's sample clients post a short mail in YAML flow
 * style; anything bigger is sent as JSON. The YAML parser is slower than JSON.parse and builds
 * far more garbage, so a request that is not JSON does not get to feed it megabytes.
 */
export const MAX_YAML_BODY = 256 * 1024;

/** The body as an object, or null when it is neither a JSON nor a (small, alias-free) YAML object. */
export function parseBody(text: string): Record<string, unknown> | null {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    if (text.length > MAX_YAML_BODY) return null;
    try {
      value = parseUntrustedYaml(text);
    } catch {
      return null;
    }
  }
  return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : null;
}

class Malformed extends Error {}

/** A scalar field as a string: numbers and booleans as written, absent as ''; objects are malformed. */
function scalar(v: unknown): string {
  if (v === undefined || v === null) return '';
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  throw new Malformed();
}

function first(obj: Record<string, unknown>, ...keys: string[]): unknown {
  for (const k of keys) if (obj[k] !== undefined && obj[k] !== null) return obj[k];
  return undefined;
}

/**
 * A list of addresses: an array of scalars or one scalar. An object or array inside the list is
 * no address any client could mean, and turning it into text (JSON.stringify) would cost as
 * much as the client cares to nest: malformed.
 */
function list(v: unknown): string[] {
  if (v === undefined || v === null) return [];
  if (Array.isArray(v)) return v.map((x) => (x === null ? 'null' : scalar(x)));
  return [scalar(v)];
}

/** The typed request, or null when a field has a type no client could have meant. */
export function readRequest(json: Record<string, unknown>): SubmitRequest | null {
  try {
    return read(json);
  } catch (err) {
    if (err instanceof Malformed) return null;
    throw err;
  }
}

/** RFC 5321 4.5.3.1.3: a path is at most 256 octets, so no real address is longer. */
const MAX_ADDRESS = 256;

/** The address of an address header value: what is inside <…>, or the whole value without them. */
function addressPart(value: string): string {
  const m = /<([^<>]*)>\s*$/.exec(value);
  return m ? m[1]! : value.trim();
}

function read(json: Record<string, unknown>): SubmitRequest {
  const rawHeader = json['header'];
  const header: Record<string, unknown> = {};
  if (rawHeader !== undefined && rawHeader !== null) {
    if (typeof rawHeader !== 'object' || Array.isArray(rawHeader)) throw new Malformed();
    // Header names are case-insensitive (Reply-To, replyto, reply-to are one field).
    for (const [k, v] of Object.entries(rawHeader)) header[k.toLowerCase()] = v;
  }
  let contentError: string | null = null;
  const extra: [string, string][] = [];
  for (const [k, v] of Object.entries(rawHeader && typeof rawHeader === 'object' ? (rawHeader as Record<string, unknown>) : {})) {
    if (!/^x-/i.test(k) || RESERVED.has(k.toLowerCase())) continue;
    if (!X_HEADER_NAME.test(k)) contentError ??= `invalid header name ${JSON.stringify(k.slice(0, 80))}`;
    extra.push([k, scalar(v)]);
  }
  if (extra.length > MAX_EXTRA_HEADERS) contentError ??= `more than ${MAX_EXTRA_HEADERS} X- headers`;

  const html = json['html'];
  const attachments: Attachment[] = [];
  const rawAttachments = json['attachments'];
  if (rawAttachments !== undefined && rawAttachments !== null) {
    if (!Array.isArray(rawAttachments)) throw new Malformed();
    if (rawAttachments.length > MAX_ATTACHMENTS) contentError ??= `more than ${MAX_ATTACHMENTS} attachments`;
    for (const a of rawAttachments.slice(0, MAX_ATTACHMENTS)) {
      if (a === null || typeof a !== 'object' || Array.isArray(a)) throw new Malformed();
      const att = a as Record<string, unknown>;
      const filename = scalar(att['filename']) || 'attachment.bin';
      const contentType = scalar(first(att, 'contentType', 'content_type', 'type')) || 'application/octet-stream';
      const content = scalar(att['content']);
      // File systems take 255; a longer name is no file's, and makes header lines no client folds well.
      if (filename.length > MAX_FILENAME) contentError ??= `attachment file name longer than ${MAX_FILENAME} characters`;
      // A control character has no place in a file name, and would end up in a MIME parameter.
      if (/[\x00-\x1f\x7f]/.test(filename)) contentError ??= `attachment file name ${JSON.stringify(filename.slice(0, 80))} contains a control character`;
      if (!MIME_TYPE.test(contentType)) contentError ??= `invalid attachment content type ${JSON.stringify(contentType.slice(0, 80))}`;
      if (!BASE64.test(content)) contentError ??= `attachment ${JSON.stringify(filename.slice(0, 80))} is not base64`;
      attachments.push({ filename, contentType, content: Buffer.from(content, 'base64') });
    }
  }

  const loop = header['x-haineko-loop'];
  const from = header['from'] === undefined || header['from'] === null ? null : scalar(header['from']);
  const replyto = (() => {
    const v = first(header, 'replyto', 'reply-to');
    return v === undefined ? null : scalar(v);
  })();
  const cc = list(header['cc']);
  for (const value of [from, replyto, ...cc]) {
    const address = value === null ? null : addressPart(value);
    // The address itself is never encoded or folded: a longer one would make an overlong line.
    if (address !== null && address.length > MAX_ADDRESS) contentError ??= `address longer than ${MAX_ADDRESS} characters in From, Reply-To or Cc`;
  }
  return {
    ehlo: scalar(first(json, 'ehlo', 'helo')),
    mail: scalar(first(json, 'mail', 'send', 'from')),
    // An empty string is no recipient ("rcpt": "" means none given).
    rcpt: list(first(json, 'rcpt', 'recv', 'to')).filter((r) => r !== ''),
    header: {
      from,
      subject: scalar(header['subject']),
      replyto,
      cc,
      charset: scalar(header['charset']) || 'UTF-8',
      extra,
      loop: typeof loop === 'string' ? loop.split(',').map((s) => s.trim()).filter(Boolean) : list(loop),
    },
    body: scalar(json['body']),
    html: html === undefined || html === null ? null : scalar(html),
    attachments,
    contentError,
  };
}
