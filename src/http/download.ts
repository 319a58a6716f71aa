/**
 * Headers for serving stored files (attachments, raw messages) to a browser. Everything here
 * treats the filename and content type as hostile: they come from a stranger's email.
 */
import { UNSAFE_CHARS } from '../util/unsafe-chars.js';

/** Longest filename offered, in code points: longer ones are truncated (most filesystems stop at 255 bytes). */
const MAX_FILENAME_CHARS = 150;

/**
 * Types served under their own name. An allowlist of passive formats, not a denylist of active
 * ones: a browser renders text/html, image/svg+xml, application/xhtml+xml, text/xml and a
 * long tail (+xml types, text/xsl, multipart/x-mixed-replace, ...) as documents that run
 * script, and a denylist misses the next one. Everything else is application/octet-stream.
 * That alone is not the defence, it is one of three layers: every download is also
 * `Content-Disposition: attachment` (save, don't render), `X-Content-Type-Options: nosniff`
 * (no guessing HTML from the bytes), and `Content-Security-Policy: sandbox` (if anything
 * renders it anyway, it runs in an opaque origin with no script).
 */
const PASSIVE_TYPES = new Set([
  'application/octet-stream',
  'application/pdf',
  'application/json',
  'application/zip',
  'application/gzip',
  'application/x-gzip',
  'application/x-tar',
  'application/x-7z-compressed',
  'application/vnd.rar',
  'application/x-rar-compressed',
  'application/rtf',
  'application/msword',
  'application/vnd.ms-excel',
  'application/vnd.ms-powerpoint',
  'application/ics',
  'application/pgp-signature',
  'application/pgp-encrypted',
  'application/pkcs7-signature',
  'application/pkcs7-mime',
  'image/png',
  'image/jpeg',
  'image/gif',
  'image/webp',
  'image/avif',
  'image/bmp',
  'image/tiff',
  'image/heic',
  'text/plain',
  'text/csv',
  'text/calendar',
  'text/vcard',
  'message/rfc822',
  'message/delivery-status',
]);
/** Families that are passive as a whole (office formats, audio and video containers). */
const PASSIVE_PREFIXES = [
  'application/vnd.openxmlformats-officedocument.',
  'application/vnd.oasis.opendocument.',
  'audio/',
  'video/',
];
/** type/subtype as RFC 6838 tokens; anything else (spaces, CR/LF, quotes) is not a type. */
const MEDIA_TYPE = /^[a-z0-9][a-z0-9!#$&^_.+-]{0,63}\/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$/;

/** The Content-Type to serve an attachment with, given what its MIME part claimed. */
export function downloadContentType(claimed: string | null | undefined): string {
  const type = (claimed ?? '').split(';', 1)[0]?.trim().toLowerCase() ?? '';
  if (!MEDIA_TYPE.test(type)) return 'application/octet-stream';
  if (PASSIVE_TYPES.has(type) || PASSIVE_PREFIXES.some((p) => type.startsWith(p))) return type;
  return 'application/octet-stream';
}

/**
 * A filename fit to offer for saving: no path parts, no control or bidi characters (CR/LF
 * header injection, "file\u202Etxt.exe" spoofing), no quotes, no characters Windows forbids,
 * no leading dots (hidden files, ".."), bounded length. Empty after all that gives `fallback`.
 */
export function safeFilename(raw: string | null | undefined, fallback: string): string {
  let name = (raw ?? '').normalize('NFC');
  // Lone surrogates cannot be UTF-8 encoded (encodeURIComponent throws on them).
  name = name.replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, '\uFFFD');
  name = name.slice(Math.max(name.lastIndexOf('/'), name.lastIndexOf('\\')) + 1);
  name = name.replace(UNSAFE_CHARS, '').replace(/"/g, '');
  name = name.replace(/[<>:|?*]/g, '_');
  name = name.replace(/^[.\s]+/, '').replace(/[.\s]+$/, '');
  name = Array.from(name).slice(0, MAX_FILENAME_CHARS).join('');
  return name === '' ? fallback : name;
}

/** RFC 5987 value-chars: encodeURIComponent leaves ' ( ) * alone, which attr-char does not allow. */
function encodeExtValue(s: string): string {
  return encodeURIComponent(s).replace(/['()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/**
 * `attachment; filename="<ascii>"; filename*=UTF-8''<utf-8>` (RFC 6266 section 4.3): modern
 * browsers use filename*, old ones the ASCII fallback. `name` must come from safeFilename().
 * In the fallback every non-ASCII character becomes "_", and so do "\" and "%", which some
 * browsers would otherwise read as escapes inside the quoted string.
 */
export function attachmentDisposition(name: string): string {
  const ascii = name.replace(/[^\x20-\x7e]/g, '_').replace(/[\\%"]/g, '_');
  return `attachment; filename="${ascii}"; filename*=UTF-8''${encodeExtValue(name)}`;
}
