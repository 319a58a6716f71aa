/**
 * parseSpamdReply / parseReportTable on raw replies captured from a real spamd 4.0
 * (test/fixtures/spam/make-fixtures.mjs <port> re-captures them).
 */
import { describe, it, expect } from 'vitest';
import { readFileSync } from 'node:fs';
import { MAX_DESCRIPTION, MAX_RULES, parseReportTable, parseSpamdReply } from '../src/spam/report.js';

const reply = (name: string): Buffer => readFileSync(new URL(`./fixtures/spam/replies/${name}`, import.meta.url));
const crlf = (...lines: string[]): Buffer => Buffer.from(lines.join('\r\n'), 'latin1');
const TABLE_HEAD = ' pts rule name              description\n---- ---------------------- --------------------------------------------------\n';

/** A well-formed REPORT reply around `report`, with a correct Content-length. */
function okReply(report: string, spam = 'Spam: False ; 1.0 / 5.0'): Buffer {
  const body = Buffer.from(report, 'utf8');
  return Buffer.concat([crlf('SPAMD/1.1 0 EX_OK', `Content-length: ${body.length}`, spam, '', ''), body]);
}

describe('parseSpamdReply on captured spamd replies', () => {
  it('GTUBE: spam, 1000/5, whole-number points for a rule of 10 or more, -0.0 points', () => {
    expect(parseSpamdReply(reply('gtube.reply'))).toEqual({
      status: 'spam',
      score: 1000,
      threshold: 5,
      rules: [
        { name: 'NO_RECEIVED', score: -0, description: 'Informational: message has no Received headers' },
        { name: 'GTUBE', score: 1000, description: 'BODY: Generic Test for Unsolicited Bulk Email' },
        { name: 'NO_RELAYS', score: -0, description: 'Informational: message was not relayed via SMTP' },
      ],
    });
  });

  it('sample-nonspam: ham, 0/5, an empty table', () => {
    expect(parseSpamdReply(reply('nonspam.reply'))).toEqual({ status: 'ham', score: 0, threshold: 5, rules: [] });
  });

  it('lottery: wrapped descriptions joined, hit details dropped, negative points, a name longer than its column', () => {
    const result = parseSpamdReply(reply('lottery.reply'));
    expect(result.status).toBe('spam');
    expect(result.score).toBe(9.8);
    expect(result.threshold).toBe(5);
    expect(result.reason).toBeUndefined();
    // spamd lists rules in the order they fired, which varies between runs: compare as a sorted list.
    const byName = [...result.rules].sort((a, b) => a.name.localeCompare(b.name));
    expect(byName).toEqual([
      { name: 'ADVANCE_FEE_3_NEW_MONEY', score: 1, description: 'Advance Fee fraud and lots of money' },
      { name: 'ALL_TRUSTED', score: -1, description: 'Passed through trusted hosts only via SMTP' },
      { name: 'DEAR_BENEFICIARY', score: 1, description: 'BODY: Dear Beneficiary:' },
      { name: 'DRUGS_ERECTILE', score: 1.8, description: 'Refers to an erectile drug' },
      { name: 'FORGED_GMAIL_RCVD', score: 1, description: "'From' gmail.com does not match 'Received' headers" },
      { name: 'FREEMAIL_FROM', score: 0, description: 'Sender email is commonly abused enduser mail provider' },
      { name: 'FREEMAIL_REPLYTO', score: 1, description: 'Reply-To/From or Reply-To/body contain different freemails' },
      { name: 'HTML_FONT_LOW_CONTRAST', score: 0.7, description: 'BODY: HTML font color similar or identical to background' },
      { name: 'HTML_MESSAGE', score: 0, description: 'BODY: HTML included in message' },
      { name: 'LOTS_OF_MONEY', score: 0, description: 'Huge... sums of money' },
      { name: 'MILLION_USD', score: 1, description: 'BODY: Talks about millions of dollars' },
      { name: 'MIME_HTML_ONLY', score: 0.1, description: 'BODY: Message only has text/html MIME parts' },
      { name: 'MONEY_FRAUD_5', score: 1, description: 'Lots of money and many fraud phrases' },
      { name: 'MONEY_FREEMAIL_REPTO', score: 1, description: 'Lots of money from someone using free email?' },
      { name: 'NORMAL_HTTP_TO_IP', score: 0.2, description: 'URI: URI host has a public dotted-decimal IPv4 address' },
      { name: 'US_DOLLARS_3', score: 1, description: 'BODY: Mentions millions of $ ($NN,NNN,NNN.NN)' },
    ]);
  });

  it('8bit: a UTF-8 content preview in the report does not disturb the byte count or the table', () => {
    const raw = reply('8bit.reply');
    expect(raw.toString('utf8')).toContain('Glückwunsch');
    const result = parseSpamdReply(raw);
    expect(result).toMatchObject({ status: 'ham', score: 2, threshold: 5 });
    expect(result.rules.map((r) => r.name).sort()).toEqual([
      'ALL_TRUSTED', 'FORGED_GMAIL_RCVD', 'FREEMAIL_FROM', 'FREEMAIL_REPLYTO', 'LOTS_OF_MONEY', 'MONEY_FREEMAIL_REPTO',
    ]);
  });

  it('a non-zero response code (76 EX_PROTOCOL) is an error carrying spamd\'s message', () => {
    expect(parseSpamdReply(reply('length-mismatch.reply'))).toEqual({
      status: 'error', score: null, threshold: null, rules: [],
      reason: 'spamd error 76 (EX_PROTOCOL): "Bad header line: (Content-Length mismatch: Expected 100 bytes, got 22 bytes)"',
    });
  });

  it('79 EX_TIMEOUT (spamd\'s own child timeout) is an error', () => {
    expect(parseSpamdReply(crlf('SPAMD/1.0 79 Timeout: (300 second timeout while trying to REPORT)', '')).reason).toBe(
      'spamd error 79 (EX_TIMEOUT): "Timeout: (300 second timeout while trying to REPORT)"',
    );
  });
});

describe('parseSpamdReply on malformed replies', () => {
  const reasonOf = (buf: Buffer): string | undefined => {
    const result = parseSpamdReply(buf);
    expect(result).toMatchObject({ status: 'error', score: null, threshold: null, rules: [] });
    return result.reason;
  };

  it('not a spamd reply at all; control bytes in the quote are neutralised', () => {
    expect(reasonOf(crlf('HTTP/1.1 400 Bad Request\x1b[2J', '', ''))).toBe(
      'malformed spamd reply: not a SPAMD status line: "HTTP/1.1 400 Bad Request?[2J"',
    );
  });

  it('a long garbage line is quoted only in part', () => {
    expect(reasonOf(Buffer.from('x'.repeat(5000)))).toBe(`malformed spamd reply: not a SPAMD status line: "${'x'.repeat(120)}…"`);
  });

  it('empty', () => {
    expect(reasonOf(Buffer.alloc(0))).toBe('malformed spamd reply: not a SPAMD status line: ""');
  });

  it('headers never terminated', () => {
    expect(reasonOf(crlf('SPAMD/1.1 0 EX_OK', 'Content-length: 5', 'Spam: True ; 6.0 / 5.0'))).toBe(
      'malformed spamd reply: headers not terminated by an empty line',
    );
  });

  it('no Spam header, or one that does not parse', () => {
    expect(reasonOf(crlf('SPAMD/1.1 0 EX_OK', 'Content-length: 0', '', ''))).toBe(
      'malformed spamd reply: bad or missing Spam header: ""',
    );
    expect(reasonOf(crlf('SPAMD/1.1 0 EX_OK', 'Content-length: 0', 'Spam: Maybe ; x / 5.0', '', ''))).toBe(
      'malformed spamd reply: bad or missing Spam header: "Maybe ; x / 5.0"',
    );
  });

  it('a report shorter or longer than its Content-length (a cut connection), as spamc checks', () => {
    const full = reply('gtube.reply');
    expect(reasonOf(full.subarray(0, full.length - 10))).toBe('malformed spamd reply: Content-length "973" but 963 bytes of report');
    expect(reasonOf(Buffer.concat([full, Buffer.from('extra')]))).toBe(
      'malformed spamd reply: Content-length "973" but 978 bytes of report',
    );
    expect(reasonOf(crlf('SPAMD/1.1 0 EX_OK', 'Spam: True ; 6.0 / 5.0', '', 'abc'))).toBe(
      'malformed spamd reply: Content-length "" but 3 bytes of report',
    );
  });
});

describe('parseReportTable', () => {
  it('no table (a custom report template without _SUMMARY_) gives no rules', () => {
    expect(parseReportTable('Spam detection software says hi.\n\nContent preview: ---- nothing\n')).toEqual([]);
    expect(parseSpamdReply(okReply('just text\n')).rules).toEqual([]);
  });

  it('a wrapped line that starts with a number is a continuation, not a row', () => {
    const report =
      TABLE_HEAD +
      ' 1.5 MANY_RCPTS             Message is addressed to more than twenty\n' +
      '                            10 recipients or so\n' +
      '-12 BIG_NEGATIVE           \n' +
      '\n' +
      ' 9.9 AFTER_TABLE            not part of the table\n';
    expect(parseReportTable(report)).toEqual([
      { name: 'MANY_RCPTS', score: 1.5, description: 'Message is addressed to more than twenty 10 recipients or so' },
      { name: 'BIG_NEGATIVE', score: -12, description: '' },
    ]);
  });

  it('the German template (Latin-1 report, different heading, same separator)', () => {
    const body = Buffer.from(
      'Vorschau: Grüße\n\nPkte Regelname              Beschreibung\n' +
        '---- ---------------------- --------------------------------------------------\n' +
        ' 2.7 MISSING_DATE           Fehlender Date: Header, Größe unbekannt\n',
      'latin1',
    );
    const buf = Buffer.concat([crlf('SPAMD/1.1 0 EX_OK', `Content-length: ${body.length}`, 'Spam: False ; 2.7 / 5.0', '', ''), body]);
    expect(parseSpamdReply(buf).rules).toEqual([
      { name: 'MISSING_DATE', score: 2.7, description: 'Fehlender Date: Header, Größe unbekannt' },
    ]);
  });

  it(`keeps at most ${MAX_RULES} rules and ${MAX_DESCRIPTION} characters of a description`, () => {
    const rows = Array.from({ length: MAX_RULES + 50 }, (_, i) => ` 0.1 RULE_${i}                 desc ${i}\n`).join('');
    const long = `${' 0.1 LONG_DESC              '}${'a'.repeat(400)}\n${' '.repeat(28)}${'b'.repeat(400)}\n`;
    const rules = parseReportTable(TABLE_HEAD + long + rows);
    expect(rules).toHaveLength(MAX_RULES);
    expect(rules[0]?.description).toBe(`${'a'.repeat(400)} ${'b'.repeat(MAX_DESCRIPTION - 401)}`);
    expect(rules.at(-1)?.name).toBe(`RULE_${MAX_RULES - 2}`);
  });
});
