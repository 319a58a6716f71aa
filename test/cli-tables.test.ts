/** `mailwire pw`, `mailwire setup` and check-config on the Haineko tables, run as real processes. */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parsePasswordHash, verifyPassword } from '../src/auth/ssha.js';

const ROOT = new URL('..', import.meta.url).pathname;

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

function mailwire(args: string[], input?: string): Promise<Result> {
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      ['--import', 'tsx', join(ROOT, 'src/cli.ts'), ...args],
      { cwd: ROOT, timeout: 30_000 },
      (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }),
    );
    child.stdin!.end(input ?? '');
  });
}

function verifies(stored: string, password: string): boolean {
  const h = parsePasswordHash(stored);
  if ('error' in h) throw new Error(h.error);
  return verifyPassword(h, password);
}

describe('mailwire pw', () => {
  it('prints an {SSHA512} hash of the first line of a piped password', async () => {
    const r = await mailwire(['pw'], 'kijitora\nignored second line\n');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const line = r.stdout.trim();
    expect(line).toMatch(/^\{SSHA512\}[A-Za-z0-9+/]+=*$/);
    expect(verifies(line, 'kijitora')).toBe(true);
    expect(verifies(line, 'kijitora\n')).toBe(false);
  });

  it('takes --scheme ssha (Haineko) and ssha256, and a password without a newline', async () => {
    const a = await mailwire(['pw', '--scheme', 'ssha'], 'kijitora');
    expect(a.stdout.trim()).toMatch(/^\{SSHA\}/);
    expect(verifies(a.stdout.trim(), 'kijitora')).toBe(true);
    const b = await mailwire(['pw', '--scheme', 'SSHA256'], 'pw with spaces\r\n');
    expect(b.stdout.trim()).toMatch(/^\{SSHA256\}/);
    expect(verifies(b.stdout.trim(), 'pw with spaces')).toBe(true);
  });

  it('refuses an unknown scheme (exit 2) and an empty password (exit 1)', async () => {
    const a = await mailwire(['pw', '--scheme', 'md5'], 'x\n');
    expect(a).toMatchObject({ code: 2, stdout: '' });
    expect(a.stderr.trim()).toBe('mailwire: --scheme must be one of ssha, ssha256, ssha512');
    const b = await mailwire(['pw'], '\n');
    expect(b).toMatchObject({ code: 1, stdout: '', stderr: 'mailwire: the password is empty\n' });
  });
});

describe('mailwire setup', () => {
  const root = mkdtempSync(join(tmpdir(), 'mailwire-setup-'));
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it('writes the commented starter files; secrets are 0600; the result passes check-config', async () => {
    const dest = join(root, 'etc');
    const r = await mailwire(['setup', '--dest', dest]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(readdirSync(dest).sort()).toEqual(['authinfo', 'domains', 'mailertable', 'mailwire.yml', 'password', 'recipients', 'relayhosts', 'sendermt']);
    expect(statSync(join(dest, 'authinfo')).mode & 0o777).toBe(0o600);
    expect(statSync(join(dest, 'password')).mode & 0o777).toBe(0o600);
    expect(statSync(join(dest, 'mailertable')).mode & 0o777).toBe(0o644);
    expect(readFileSync(join(dest, 'mailwire.yml'), 'utf8')).toBe(readFileSync(join(ROOT, 'config/mailwire.yml'), 'utf8'));
    expect(readFileSync(join(dest, 'mailertable'), 'utf8')).toContain('# default:');
    const check = await mailwire(['check-config', '--config-dir', dest]);
    expect(check).toMatchObject({ code: 0, stderr: '' });
  });

  it('refuses to overwrite, writing nothing, and names the existing files', async () => {
    const dest = join(root, 'existing');
    mkdirSync(dest);
    writeFileSync(join(dest, 'relayhosts'), 'open-relay: 1\n');
    const r = await mailwire(['setup', '--dest', dest]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe(`mailwire: ${dest} already has relayhosts; nothing was written (remove them or choose another --dest)`);
    expect(readdirSync(dest)).toEqual(['relayhosts']);
    expect(readFileSync(join(dest, 'relayhosts'), 'utf8')).toBe('open-relay: 1\n');
  });

  it('needs --dest', async () => {
    const r = await mailwire(['setup']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('setup needs --dest DIR');
  });
});

describe('check-config and the Haineko tables', () => {
  const root = mkdtempSync(join(tmpdir(), 'mailwire-cli-tables-'));
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it('names a broken table entry in one line', async () => {
    const dir = join(root, 'broken');
    mkdirSync(dir);
    writeFileSync(join(dir, 'password'), "neko: 'kijitora'\n");
    const r = await mailwire(['check-config', '--config-dir', dir]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain(`${join(dir, 'password')}: neko: user "neko": not a {SSHA}`);
  });

  it('names a hook file that is missing or does not load, as the start would', async () => {
    const dir = join(root, 'hooks');
    mkdirSync(join(dir, 'hooks'), { recursive: true });
    writeFileSync(join(dir, 'mailwire.yml'), 'hooks: { phases: { mail: [gone.ts] } }\n');
    const missing = await mailwire(['check-config', '--config-dir', dir]);
    expect(missing.code).toBe(1);
    expect(missing.stderr.trim()).toBe(`mailwire: hooks.phases.mail[0]: hook file not found: ${join(dir, 'hooks', 'gone.ts')}`);

    writeFileSync(join(dir, 'hooks', 'gone.ts'), 'export default { rcpt() {} };\n');
    const unfit = await mailwire(['check-config', '--config-dir', dir]);
    expect(unfit.code).toBe(1);
    expect(unfit.stderr.trim()).toBe(`mailwire: hooks.phases.mail[0]: ${join(dir, 'hooks', 'gone.ts')}: listed under mail but has no mail() handler`);

    // A hook that leaves a timer running at load: check-config still ends.
    writeFileSync(join(dir, 'hooks', 'gone.ts'), 'setInterval(() => {}, 60_000);\nexport default { mail() {} };\n');
    const started = Date.now();
    const fixed = await mailwire(['check-config', '--config-dir', dir]);
    expect(fixed.stderr).toBe('');
    expect(fixed.code).toBe(0);
    expect(Date.now() - started).toBeLessThan(20_000);
  });

  it('names a misspelt key in a table', async () => {
    const dir = join(root, 'misspelt');
    mkdirSync(dir);
    writeFileSync(join(dir, 'relayhosts'), 'open-relay: 0\nrelay-hosts: []\n');
    const r = await mailwire(['check-config', '--config-dir', dir]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe(`mailwire: ${join(dir, 'relayhosts')}: unknown key relay-hosts`);
  });
});
