/**
 * The mailparser adapter: streams a spooled message through mailparser's MailParser and returns the
 * parsed part of a MailEvent. Attachments go to `${attachmentsDir}/${index}` as they stream past.
 *
 * Outcomes:
 * - Anything about the message itself (broken MIME, garbage, a mailparser error, the deadline, the
 *   attachment limit) resolves, with `parseError` saying what went wrong and the fields collected so far.
 * - Broken infrastructure rejects: the spool file cannot be read, or an attachment file cannot be
 *   written (disk full, permissions). The caller tempfails and the spool entry is processed again.
 *
 * Decisions:
 * - messageId is exactly what mailparser returns: with angle brackets ("<id@host>"), added by mailparser
 *   when the header lacks them. That is the form References and In-Reply-To use, so threading tools can
 *   compare them as they are.
 * - More than maxAttachments attachments: the rest are drained (read and discarded, never written) and
 *   parseError says "attachment limit N reached; M attachments not stored". The message is otherwise
 *   parsed normally; a consumer must be able to tell that the list is incomplete, and the event has no
 *   other field for it.
 * - message/rfc822 parts are always attachments: the splitter's `ignoreEmbedded` is set. Without it
 *   mailparser 3.9.31 expands a forwarded message whose Content-Disposition is inline: the inner
 *   message's parts become parts of the outer one, and its From/Subject/Date lines and body are
 *   appended to the outer text. With it the forwarded message is one attachment with its exact bytes
 *   (contentType "message/rfc822") and the outer text is the outer text only.
 * - text and html are mailparser's, with its conversions switched off (html→text, text→html, links):
 *   text is null for an HTML-only message. In a multipart/mixed with several body parts (not an
 *   alternative) mailparser joins the parts of each kind, with "\n" and "<br/>\n"; a part of the other
 *   kind then contributes an empty string, so such a message may have a trailing "\n" in text and a
 *   leading or doubled "<br/>\n" in html.
 * - date comes from the Date header here, not from mailparser, which replaces an invalid date with
 *   the current time; an invalid or missing date is null.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { MailParser, type AttachmentStream, type HeaderLines, type Headers, type HeaderValue, type MailParserOptions, type MessageText } from 'mailparser';
import type { AttachmentMeta, HeaderLine } from '../events/types.js';
import { capUtf8, cleanToken, decodeHeaderLine, flattenAddresses, oneLine, parseMailDate, sanitizeFilename, type ParsedAddress } from './fields.js';
import { unparsed, type ParseLimits, type ParsedMessage } from './types.js';

/** mailsplit's splitter reads these too; @types/mailparser does not know them. */
interface SplitterOptions {
  ignoreEmbedded: boolean;
  maxHeadSize: number;
  maxChildNodes: number;
}

const PARSER_OPTIONS: MailParserOptions & SplitterOptions = {
  // html→text runs html-to-text over the whole HTML part in one synchronous call: a huge or deeply
  // nested HTML body would block the event loop (and the deadline below cannot interrupt it). We keep
  // the HTML as sent instead.
  skipHtmlToText: true,
  // text→html (textAsHtml) and link detection cost time and a second copy of every text part; we never
  // use textAsHtml. mailparser budgets linkify, but skipping it costs nothing.
  skipTextToHtml: true,
  skipTextLinks: true,
  // Only simpleParser rewrites cid: links (inlining images as data: URLs); set anyway so it never does.
  skipImageLinks: true,
  // mailparser hashes every attachment as it streams; ask for the hash the event needs, so the
  // attachment is hashed once, in the same pass that writes it to disk.
  checksumAlgo: 'sha256',
  // See "message/rfc822" above.
  ignoreEmbedded: true,
  // One header block (the message's or a part's) may hold at most 1 MiB: a message that is one endless
  // header would otherwise be buffered whole. 1 MiB is mailsplit's default and far above real header
  // blocks (long Received/DKIM/ARC chains come to tens of KiB). Past it the parse fails.
  maxHeadSize: 1024 * 1024,
  // At most 1000 MIME parts (mailsplit's default): every part is a node kept in the tree until the end,
  // so the count bounds memory and the work of walking the tree. Ordinary mail has a few dozen at most.
  maxChildNodes: 1000,
};

/**
 * Parses a spooled message: `bytes` when it is in memory, else the file at rawPath. Limits, and the threat each stops:
 * - maxAttachments: files and disk space one message can create (a tiny message can declare thousands
 *   of empty parts). The rest are drained and counted in parseError.
 * - maxTextBytes / maxHtmlBytes: the size of the event, its JSON and its store row; the body is cut on
 *   a character boundary and flagged in `truncated`. (mailparser buffers text parts before we see them;
 *   the spool's message size limit bounds that.)
 * - maxHeaders: the length of the headers list in the event (the header bytes are bounded by maxHeadSize).
 * - timeoutMs: the whole parse, so a message built to be slow cannot hold the SMTP reply; on the
 *   deadline the streams are destroyed and what was collected is returned.
 */
export async function parseMessageFile(rawPath: string | null, attachmentsDir: string, limits: ParseLimits, bytes: Uint8Array | null = null): Promise<ParsedMessage> {
  if (bytes === null && rawPath === null) throw new Error('parseMessageFile: neither bytes nor a file');
  const input = bytes ? Readable.from([Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)], { objectMode: false }) : createReadStream(rawPath!);
  const empty = () => (bytes ? bytes.byteLength === 0 : (input as ReturnType<typeof createReadStream>).bytesRead === 0);
  const parser = new MailParser(PARSER_OPTIONS);
  const abort = new AbortController();

  let headerLines: HeaderLines = [];
  let headers: Headers = new Map();
  let body: MessageText | null = null;
  const attachments: AttachmentMeta[] = [];
  const storing: Promise<void>[] = [];
  let seen = 0; // attachments mailparser handed over, stored or not
  let dirReady: Promise<unknown> | null = null;
  let contentError: string | null = null;

  // Writes one attachment's decoded content to disk; mailparser computes its size and sha256 meanwhile.
  async function store(attachment: AttachmentStream, index: number): Promise<void> {
    const path = join(attachmentsDir, String(index));
    let writeFailed = false;
    try {
      dirReady ??= mkdir(attachmentsDir, { recursive: true });
      await dirReady;
      // 'w', not 'wx': a spool entry processed again after a crash rewrites the same files.
      const file = createWriteStream(path, { flags: 'w' }).once('error', () => (writeFailed = true));
      await pipeline(attachment.content as Readable, file, { signal: abort.signal });
      attachments[index] = {
        index,
        filename: sanitizeFilename(attachment.filename),
        contentType: cleanToken(attachment.contentType) ?? 'application/octet-stream',
        size: attachment.size,
        sha256: attachment.checksum,
        contentId: cleanToken(attachment.cid),
        disposition: dispositionOf(attachment.contentDisposition),
      };
    } catch (err) {
      await unlink(path).catch(() => undefined); // no file on disk without its metadata
      if (abort.signal.aborted) return; // the deadline or a parse error ended the parse
      if (writeFailed || !(err instanceof Error) || 'syscall' in err) throw err; // infrastructure
      contentError ??= `attachment ${index}: ${err.message}`;
    } finally {
      attachment.release();
    }
  }

  return new Promise<ParsedMessage>((resolve, reject) => {
    let settled = false;
    // Settles once; an interrupted parse (deadline, mailparser error, broken disk) stops every stream.
    const settle = (interrupt: boolean): boolean => {
      if (settled) return false;
      settled = true;
      clearTimeout(timer);
      if (interrupt) {
        abort.abort();
        input.destroy();
        parser.destroy();
      }
      return true;
    };
    const finish = (error: string | null): void => {
      if (settle(error !== null)) Promise.all(storing).then(() => resolve(safeResult(error)), reject);
    };
    const fail = (err: unknown): void => {
      if (settle(true)) reject(err);
    };
    // setTimeout turns a delay past 2^31-1 ms into 1 ms: clamp, so a huge configured value means "long".
    const timer = setTimeout(() => finish(`parse timed out after ${limits.timeoutMs} ms`), Math.min(limits.timeoutMs, 2 ** 31 - 1));

    input.on('error', fail);
    parser.on('headerLines', (lines: HeaderLines) => (headerLines = lines));
    parser.on('headers', (map: Headers) => (headers = map));
    parser.on('data', (data: AttachmentStream | MessageText) => {
      if (data.type === 'text') {
        body = data;
        return;
      }
      const index = seen++;
      if (index >= limits.maxAttachments) {
        // Drain: read and discard, so the parser goes on to the text parts after it.
        (data.content as Readable).resume();
        data.release();
        return;
      }
      const stored = store(data, index);
      storing.push(stored); // finish() waits for it and rejects if it fails after the end of input
      stored.catch(fail);
    });
    parser.on('error', (err: Error) => finish(oneLine(err.message || 'mailparser error')));
    parser.on('end', () => finish(null));
    input.pipe(parser);
  });

  /**
   * The result, whatever the message holds: a fault while building it (a bug, or a message built
   * to find one) must not kill the worker and turn the message into a 451 at every retry; it is
   * stored raw with the fault in parseError instead.
   */
  function safeResult(error: string | null): ParsedMessage {
    try {
      return result(error);
    } catch (err) {
      return unparsed(oneLine(`building the parsed message failed: ${(err as Error).message}`));
    }
  }

  function result(error: string | null): ParsedMessage {
    const decoded = headerLines.map((line) => decodeHeaderLine(line.line)).filter((h): h is HeaderLine => h !== null);
    const text = capUtf8(typeof body?.text === 'string' ? body.text : '', limits.maxTextBytes);
    const html = capUtf8(typeof body?.html === 'string' ? body.html : '', limits.maxHtmlBytes);
    const stored = attachments.filter(() => true); // skips the holes a failed attachment leaves
    const notStored = Math.max(0, seen - limits.maxAttachments);
    const fields = { from: addressesOf(headers.get('from')), to: addressesOf(headers.get('to')), cc: addressesOf(headers.get('cc')), replyTo: addressesOf(headers.get('reply-to')) };
    const cut = Object.entries(fields)
      .filter(([, f]) => f.total > f.addresses.length)
      .map(([name, f]) => `${name}: ${f.total} addresses, the first ${f.addresses.length} kept`);

    const problems = [
      error,
      contentError,
      // What mailparser accepts without complaint but leaves the event empty; after an error it is
      // only the error's consequence, so it is not reported again.
      error === null && decoded.length === 0 ? (empty() ? 'empty message' : 'no header fields found (not an RFC 5322 message)') : null,
      error === null ? missingParts(stored.length + notStored, text.value, html.value) : null,
      notStored > 0 ? `attachment limit ${limits.maxAttachments} reached; ${notStored} attachments not stored` : null,
      ...cut,
    ].filter((p): p is string => p !== null);

    return {
      messageId: stringHeader(headers.get('message-id')),
      subject: stringHeader(headers.get('subject')),
      date: dateOf(decoded),
      from: fields.from.addresses,
      to: fields.to.addresses,
      cc: fields.cc.addresses,
      replyTo: fields.replyTo.addresses,
      headers: decoded.slice(0, limits.maxHeaders),
      text: text.value === '' ? null : text.value,
      html: html.value === '' ? null : html.value,
      truncated: { text: text.truncated, html: html.truncated },
      attachments: stored,
      parseError: problems.length > 0 ? oneLine(problems.join('; ')) : null,
    };
  }

  /** A multipart message in which mailparser found nothing: usually a boundary that never appears. */
  function missingParts(attachmentCount: number, text: string, html: string): string | null {
    const type = headers.get('content-type');
    if (!isStructured(type) || !/^multipart\//i.test(type.value) || attachmentCount > 0 || text !== '' || html !== '') return null;
    const boundary = type.params['boundary'];
    return boundary ? `no MIME part found for boundary "${boundary}"` : 'multipart message without a boundary';
  }
}

function dispositionOf(value: string | undefined): 'attachment' | 'inline' | null {
  if (!value) return null;
  // mailparser treats any disposition other than inline as attachment (RFC 2183 2.8); so do we.
  return value.toLowerCase() === 'inline' ? 'inline' : 'attachment';
}

function stringHeader(value: HeaderValue | undefined): string | null {
  return typeof value === 'string' && value !== '' ? value : null;
}

function isStructured(value: HeaderValue | undefined): value is { value: string; params: Record<string, string> } {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && 'params' in value;
}

/** Addresses kept per field (From, To, Cc, Reply-To): the event's size stays bounded; the rest are counted in parseError. */
export const MAX_ADDRESSES_PER_FIELD = 1000;

/** From, To, Cc, Reply-To: mailparser gives one AddressObject, or an array of them for repeated headers. */
function addressesOf(value: HeaderValue | undefined): { addresses: ParsedMessage['from']; total: number } {
  const objects = Array.isArray(value) ? value : [value];
  const list: ParsedAddress[] = [];
  for (const object of objects) {
    if (typeof object === 'object' && object !== null && 'value' in object && Array.isArray(object.value)) {
      // As a group of its own: flattenAddresses walks each header's list where it is, where a
      // spread into `list` would copy it (and overflow the stack for a huge one).
      list.push({ name: '', address: '', group: object.value as ParsedAddress[] });
    }
  }
  return flattenAddresses(list, MAX_ADDRESSES_PER_FIELD);
}

/** The last Date header (mailparser's choice for single-valued headers) as ISO 8601, or null. */
function dateOf(headerList: readonly HeaderLine[]): string | null {
  let value: string | null = null;
  for (const header of headerList) if (header.name.toLowerCase() === 'date') value = header.value;
  return value === null ? null : parseMailDate(value);
}
