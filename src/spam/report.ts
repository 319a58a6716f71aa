/**
 * Parses spamd's reply to `REPORT SPAMC/1.5` into a SpamResult. Pure: bytes in, value out.
 *
 *   SPAMD/1.1 0 EX_OK\r\n
 *   Content-length: 973\r\n
 *   Spam: True ; 1000.0 / 5.0\r\n
 *   \r\n
 *   …report text…
 *    pts rule name              description
 *   ---- ---------------------- --------------------------------------------------
 *   -0.0 NO_RECEIVED            Informational: message has no Received headers
 *   1000 GTUBE                  BODY: Generic Test for Unsolicited Bulk Email
 *
 * The score and threshold come from the Spam header, the very numbers `spamc -R` prints as
 * "score/threshold". The rules come from the table SpamAssassin's _SUMMARY_ tag renders into the
 * report template (PerMsgStatus.pm): "%4.1f" points (whole numbers from ±10 up), the rule name
 * padded to 22 columns, then the description, wrapped onto lines indented by 28 spaces. Rules
 * that log what they matched add "[…]" lines (e.g. "[winner(at)gmail.com]") with the same
 * indent; those are message content, not the rule's description, and are left out.
 */
import type { SpamResult, SpamRule } from '../events/types.js';

/** SpamAssassin's default rule set fires a few dozen rules on the worst spam; 200 is far above
 *  anything real and keeps a pathological or custom rule set from bloating every event. */
export const MAX_RULES = 200;
/** The longest description in SpamAssassin 4's rule set is about 150 characters (plus a
 *  "BODY: "-style prefix); 500 keeps all of them whole while bounding one rule's size. */
export const MAX_DESCRIPTION = 500;
/** Bound on text quoted from a reply into a reason: enough to recognise it, short enough for a log line. */
const MAX_QUOTE = 120;

/** sysexits.h names spamd uses as response codes. */
const EX_NAMES: Record<number, string> = {
  64: 'EX_USAGE', 65: 'EX_DATAERR', 66: 'EX_NOINPUT', 67: 'EX_NOUSER', 68: 'EX_NOHOST',
  69: 'EX_UNAVAILABLE', 70: 'EX_SOFTWARE', 71: 'EX_OSERR', 72: 'EX_OSFILE', 73: 'EX_CANTCREAT',
  74: 'EX_IOERR', 75: 'EX_TEMPFAIL', 76: 'EX_PROTOCOL', 77: 'EX_NOPERM', 78: 'EX_CONFIG', 79: 'EX_TIMEOUT',
};

const STATUS_LINE = /^SPAMD\/\d+\.\d+ +(\d+) *(.*)$/;
const NUMBER = '(-?\\d+(?:\\.\\d+)?)';
const SPAM_HEADER = new RegExp(`^(True|False) ; ${NUMBER} / ${NUMBER}$`);
const TABLE_SEPARATOR = /^-{4} -{22} -+\s*$/;
// Points are right-aligned in 4 columns (5 for |score| ≥ 1000), so a row has at most 4 leading
// spaces, while a wrapped description line has 28: a wrapped line starting with a number is no row.
const TABLE_ROW = new RegExp(`^ {0,4}${NUMBER} (\\w+)(?: +(.*))?$`);
const HIT_DETAIL = /^\[.*\]$/;

export function failed(reason: string): SpamResult {
  return { status: 'error', score: null, threshold: null, rules: [], reason };
}

export function parseSpamdReply(reply: Buffer): SpamResult {
  const eol = reply.indexOf('\r\n');
  const statusLine = (eol === -1 ? reply : reply.subarray(0, eol)).toString('latin1');
  const status = STATUS_LINE.exec(statusLine);
  if (!status) return failed(`malformed spamd reply: not a SPAMD status line: ${quote(statusLine)}`);
  const code = Number(status[1]);
  if (code !== 0) return failed(`spamd error ${code} (${EX_NAMES[code] ?? 'unknown code'}): ${quote(status[2] ?? '')}`);

  const headerEnd = reply.indexOf('\r\n\r\n');
  if (headerEnd === -1) return failed('malformed spamd reply: headers not terminated by an empty line');
  const headers = new Map<string, string>();
  for (const line of reply.subarray(eol + 2, headerEnd).toString('latin1').split('\r\n')) {
    const colon = line.indexOf(':');
    if (colon > 0) headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
  }

  const spam = SPAM_HEADER.exec(headers.get('spam') ?? '');
  if (!spam) return failed(`malformed spamd reply: bad or missing Spam header: ${quote(headers.get('spam') ?? '')}`);
  // spamc rejects a body whose length differs from Content-length ("failed sanity check"); so do we.
  const declared = headers.get('content-length') ?? '';
  const body = reply.subarray(headerEnd + 4);
  if (!/^\d+$/.test(declared) || Number(declared) !== body.length) {
    return failed(`malformed spamd reply: Content-length ${quote(declared)} but ${body.length} bytes of report`);
  }

  return {
    status: spam[1] === 'True' ? 'spam' : 'ham',
    score: Number(spam[2]),
    threshold: Number(spam[3]),
    rules: parseReportTable(decode(body)),
  };
}

/** The rules in a report's "pts rule name description" table, in the order spamd lists them. */
export function parseReportTable(report: string): SpamRule[] {
  const lines = report.split(/\r?\n/);
  const start = lines.findIndex((line) => TABLE_SEPARATOR.test(line));
  if (start === -1) return [];
  const rules: SpamRule[] = [];
  let last: SpamRule | undefined;
  for (const line of lines.slice(start + 1)) {
    const row = TABLE_ROW.exec(line);
    if (row) {
      if (rules.length === MAX_RULES) break;
      last = { name: row[2] ?? '', score: Number(row[1]), description: clip((row[3] ?? '').trim()) };
      rules.push(last);
    } else if (last && HIT_DETAIL.test(line.trim())) {
      // A rule's hit detail ("[addr(at)example.org]"): indented, except that SpamAssassin prints
      // one longer than 76 characters with %78s, flush left. The sender chooses what is in it,
      // so a long one must not end the table and hide the rules after it.
      continue;
    } else if (last && /^\s+\S/.test(line)) {
      last.description = clip(`${last.description} ${line.trim()}`.trim());
    } else {
      break; // an empty line or anything else ends the table
    }
  }
  return rules;
}

/** The report is UTF-8 unless the site set a legacy report_charset (the German template uses Latin-1). */
function decode(body: Buffer): string {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(body);
  } catch {
    return body.toString('latin1');
  }
}

function clip(text: string): string {
  return text.length > MAX_DESCRIPTION ? text.slice(0, MAX_DESCRIPTION) : text;
}

/** Text from an untrusted peer, made safe for a reason string: printable ASCII only, bounded. */
function quote(text: string): string {
  const printable = text.replace(/[^\x20-\x7e]/g, '?');
  return JSON.stringify(printable.length > MAX_QUOTE ? `${printable.slice(0, MAX_QUOTE)}…` : printable);
}
