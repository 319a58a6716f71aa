/**
 * The spamd client against the real spamd from the global setup, checked against the real spamc:
 * for the same bytes, our score and threshold must be what `spamc -R` prints as "score/threshold",
 * and our rules the rules in its report table.
 */
import { describe, it, expect, inject } from 'vitest';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pingSpamd, scoreBuffer, scoreFile } from '../src/spam/spamd.js';
import type { SpamdOptions } from '../src/spam/types.js';

const EXAMPLES = '/usr/share/doc/spamassassin/examples';
const fixture = (name: string): string => fileURLToPath(new URL(`./fixtures/spam/${name}`, import.meta.url));
const MESSAGES = {
  'sample-spam.txt': join(EXAMPLES, 'sample-spam.txt'),
  'sample-nonspam.txt': join(EXAMPLES, 'sample-nonspam.txt'),
  'lottery.eml': fixture('lottery.eml'),
  '8bit.eml': fixture('8bit.eml'),
  'attachment-base64.eml': fixture('attachment-base64.eml'),
  'attachment-binary.eml': fixture('attachment-binary.eml'),
};

function options(): SpamdOptions {
  const { host, port } = inject('spamd');
  // spamd scans a message in well under a second here; 20 s only guards a stuck test.
  return { host, port, timeoutMs: 20_000, maxSize: 512 * 1024 };
}

/** What the real spamc says for these bytes: "score/threshold" and the rule names in its report table. */
async function spamc(bytes: Buffer): Promise<{ score: number; threshold: number; rules: string[] }> {
  const { host, port } = inject('spamd');
  const child = spawn('spamc', ['-R', '-d', host, '-p', String(port)], { stdio: ['pipe', 'pipe', 'inherit'] });
  const out: Buffer[] = [];
  child.stdout.on('data', (d: Buffer) => out.push(d));
  child.stdin.end(bytes);
  await new Promise((resolve) => child.on('close', resolve));
  const text = Buffer.concat(out).toString('utf8');
  const first = /^(-?[\d.]+)\/(-?[\d.]+)\n/.exec(text);
  if (!first) throw new Error(`unexpected spamc output: ${text.slice(0, 200)}`);
  const table = text.split('\n---- ---------------------- ')[1] ?? '';
  const rules = [...table.matchAll(/^ {0,4}-?\d+(?:\.\d+)? (\w+)/gm)].map((m) => m[1] ?? '');
  return { score: Number(first[1]), threshold: Number(first[2]), rules };
}

describe('scoreFile against a real spamd', () => {
  it('the GTUBE sample is spam', async () => {
    const result = await scoreFile(MESSAGES['sample-spam.txt'], options());
    expect(result).toMatchObject({ status: 'spam', score: 1000, threshold: 5 });
    expect(result).not.toHaveProperty('reason');
    expect(result.rules).toContainEqual({ name: 'GTUBE', score: 1000, description: 'BODY: Generic Test for Unsolicited Bulk Email' });
    expect(result.rules.map((r) => r.name).sort()).toEqual(['GTUBE', 'NO_RECEIVED', 'NO_RELAYS']);
  });

  it('the non-spam sample is ham', async () => {
    expect(await scoreFile(MESSAGES['sample-nonspam.txt'], options())).toEqual({
      status: 'ham',
      score: 0,
      threshold: 5,
      rules: [],
    });
  });

  it('the fixtures hold the bytes they claim to', () => {
    const eight = readFileSync(MESSAGES['8bit.eml']);
    expect(eight.includes(Buffer.from('Glückwunsch', 'utf8'))).toBe(true);
    expect(eight.includes(Buffer.from('Félicitations', 'latin1'))).toBe(true);
    expect(eight.includes(Buffer.from('Content-Transfer-Encoding: 8bit'))).toBe(true);
    const binary = readFileSync(MESSAGES['attachment-binary.eml']);
    expect(binary.includes(Buffer.from('Content-Transfer-Encoding: binary'))).toBe(true);
    for (const bytes of [[0x00], [0xff], [0x0d, 0x41]]) expect(binary.includes(Buffer.from(bytes))).toBe(true);
    expect(readFileSync(MESSAGES['attachment-base64.eml']).includes(Buffer.from('Content-Transfer-Encoding: base64'))).toBe(true);
  });

  describe.each(Object.entries(MESSAGES))('%s', (_name, path) => {
    it('has the score, threshold and rules spamc -R reports for the same bytes', async () => {
      const bytes = readFileSync(path);
      const [ours, theirs] = await Promise.all([scoreFile(path, options()), spamc(bytes)]);
      expect(ours.reason).toBeUndefined();
      expect(ours.score).toBe(theirs.score);
      expect(ours.threshold).toBe(theirs.threshold);
      expect(ours.rules.map((r) => r.name).sort()).toEqual([...theirs.rules].sort());
      // spamd calls a message spam from score >= threshold (and never reports a ham's score as the threshold)
      expect(ours.status).toBe(theirs.score >= theirs.threshold ? 'spam' : 'ham');
    });

    it('scoreBuffer gives the same result as scoreFile', async () => {
      const fromFile = await scoreFile(path, options());
      const fromBuffer = await scoreBuffer(readFileSync(path), options());
      expect({ ...fromBuffer, rules: [...fromBuffer.rules].sort((a, b) => a.name.localeCompare(b.name)) }).toEqual({
        ...fromFile,
        rules: [...fromFile.rules].sort((a, b) => a.name.localeCompare(b.name)),
      });
    });
  });

  it('a sender cannot hide rules: a hit detail longer than 76 characters (printed flush left) does not end the table', async () => {
    const bytes = Buffer.from(`From: ${'a'.repeat(90)}@gmail.com\r\nTo: b@example.test\r\nSubject: long detail\r\n\r\nbody\r\n`);
    const [ours, theirs] = await Promise.all([scoreBuffer(bytes, options()), spamc(bytes)]);
    expect(theirs.rules).toContain('FREEMAIL_FROM');
    expect(theirs.rules.indexOf('FREEMAIL_FROM')).toBeLessThan(theirs.rules.length - 1); // rules follow the long detail
    expect(ours.rules.map((r) => r.name).sort()).toEqual([...theirs.rules].sort());
    expect(ours.score).toBe(theirs.score);
  });

  it('the binary attachment is scored on its raw bytes (NULL_IN_BODY fires)', async () => {
    const result = await scoreFile(MESSAGES['attachment-binary.eml'], options());
    expect(result.rules.map((r) => r.name)).toContain('NULL_IN_BODY');
  });

  it('an empty message is scored, not left hanging (spamd reads "Content-length: 0" to end of input)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mailwire-spam-'));
    writeFileSync(join(dir, 'empty.eml'), '');
    const started = Date.now();
    const result = await scoreFile(join(dir, 'empty.eml'), options());
    expect(Date.now() - started).toBeLessThan(5000);
    expect(result.status).toBe('spam');
    expect(result.rules.map((r) => r.name)).toContain('EMPTY_MESSAGE');
  });

  it('a message of exactly maxSize bytes is scored', async () => {
    const bytes = readFileSync(MESSAGES['sample-spam.txt']);
    expect(await scoreBuffer(bytes, { ...options(), maxSize: bytes.length })).toMatchObject({ status: 'spam', score: 1000 });
  });

  it('pingSpamd is true', async () => {
    expect(await pingSpamd(options())).toBe(true);
  });
});
