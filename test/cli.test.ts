/**
 * The mailwire command line: an invalid value or an unknown key stops the start with exit code 1
 * and one line naming the key; check-config and print-config work on a config directory.
 */
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort } from './helpers/ports.js';
import { RawSmtp } from './helpers/raw-smtp.js';
import { waitFor } from './helpers/app.js';

const ROOT = new URL('..', import.meta.url).pathname;

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

function mailwire(args: string[], env: Record<string, string> = {}): Promise<Result> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', join(ROOT, 'src/cli.ts'), ...args],
      { cwd: ROOT, env: { ...process.env, ...env }, timeout: 30_000 },
      (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }),
    );
  });
}

describe('mailwire CLI', () => {
  const root = mkdtempSync(join(tmpdir(), 'mailwire-cli-'));
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  function configDir(name: string, yml: string, files: Record<string, string> = {}): string {
    const dir = join(root, name);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'mailwire.yml'), yml);
    for (const [f, content] of Object.entries(files)) writeFileSync(join(dir, f), content);
    return dir;
  }

  it('start stops with exit 1 and one line naming an invalid value', async () => {
    const dir = configDir('invalid', 'smtp:\n  port: "twenty-five"\n');
    const r = await mailwire(['start', '--config-dir', dir]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain('smtp.port');
  });

  it('start stops with exit 1 and one line naming an unknown key', async () => {
    const dir = configDir('unknown', 'smtp:\n  limits:\n    max_mesage_size: 10\n');
    const r = await mailwire(['start', '--config-dir', dir]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe(`mailwire: ${join(dir, 'mailwire.yml')}: unknown key smtp.limits.max_mesage_size`);
  });

  it('check-config names a broken domains table', async () => {
    const dir = configDir('domains', '', { domains: 'accept:\n  - "not a domain!"\n' });
    const r = await mailwire(['check-config', '--config-dir', dir]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain('accept.0');
  });

  it('check-config accepts the shipped config directory', async () => {
    const r = await mailwire(['check-config', '--config-dir', join(ROOT, 'config')]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
  });

  it('print-config shows defaults with environment overrides applied', async () => {
    const dir = configDir('print', 'http:\n  port: 9000\n');
    const r = await mailwire(['print-config', '--config-dir', dir], { MAILWIRE_HTTP_PORT: '9100', MAILWIRE_SPAMD: 'off' });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^http:\n {2}host: 127\.0\.0\.1\n {2}port: 9100$/m);
    expect(r.stdout).toMatch(/^spamd:\n {2}enabled: false$/m);
    expect(r.stdout).toMatch(/^ {4}max_message_size: 26214400$/m);
  });

  it('rejects a malformed MAILWIRE_SPAMD', async () => {
    const r = await mailwire(['print-config', '--config-dir', join(root, 'none')], { MAILWIRE_SPAMD: 'nonsense' });
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe('mailwire: MAILWIRE_SPAMD: expected host:port or off, got "nonsense"');
  });
});

describe('how mailwire is launched', () => {
  // package.json config.node_flags is the one list of Node flags for the server (README,
  // Performance): npm start reads it, the Docker image's CMD must carry the same flags.
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { config: { node_flags: string }; scripts: { start: string } };
  const flags = pkg.config.node_flags.split(/\s+/).filter(Boolean);

  it('npm start and the Docker image pass the same Node flags', () => {
    expect(flags).toEqual(['--max-semi-space-size=32']);
    expect(pkg.scripts.start).toBe('npm run build --silent && node $npm_package_config_node_flags dist/src/cli.js start');
    const cmd = /^CMD (\[.*\])$/m.exec(readFileSync(join(ROOT, 'Dockerfile'), 'utf8'));
    expect(JSON.parse(cmd![1]!)).toEqual(['node', ...flags, 'dist/src/cli.js', 'start']);
  });

  it('this node accepts the flags, and they size the young generation', async () => {
    const script = "console.log(require('node:v8').getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_size)";
    const out = await new Promise<string>((resolve, reject) =>
      execFile(process.execPath, [...flags, '-e', `let a = []; for (let i = 0; i < 3e6; i++) { a.push({ i, s: 'x' + i }); if (a.length > 2e5) a = []; } ${script}`], { timeout: 30_000 }, (err, stdout) =>
        err ? reject(err) : resolve(stdout),
      ),
    );
    // Churn with survivors makes V8 grow the new space to its limit: two semi-spaces, 16 MiB
    // each without the flag (32 MiB in all), 32 MiB each with it.
    expect(Number(out.trim())).toBe(64 * 1024 * 1024);
  });
});

describe('mailwire start', () => {
  it('outlives a promise a hook left to reject with nobody waiting: the rejection is logged, the session and the server go on', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mailwire-stray-'));
    mkdirSync(join(dir, 'hooks'));
    writeFileSync(join(dir, 'hooks', 'stray.mjs'), "export default { mail() { Promise.reject(new Error('stray rejection')); } };\n");
    writeFileSync(join(dir, 'mailwire.yml'), 'hooks: { phases: { mail: [stray.mjs] } }\nspamd: { enabled: false }\n');
    const [smtpPort, httpPort] = [await freePort(), await freePort()];
    const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'src/cli.ts'), 'start', '--config-dir', dir], {
      cwd: ROOT,
      env: { ...process.env, MAILWIRE_SMTP_PORT: String(smtpPort), MAILWIRE_HTTP_PORT: String(httpPort), MAILWIRE_DATA_DIR: join(dir, 'data') },
    });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (out += c.toString()));
    try {
      await waitFor(async () => (await fetch(`http://127.0.0.1:${httpPort}/readyz`).catch(() => null))?.status === 200, 20_000);
      const c = await RawSmtp.connect(smtpPort);
      expect((await c.read()).code).toBe(220);
      await c.command('EHLO client.test');
      expect((await c.command('MAIL FROM:<a@client.test>')).code).toBe(250);
      await waitFor(async () => out.includes('a promise rejected with nobody waiting for it'), 5000);
      expect(out).toContain('stray rejection');
      expect((await c.command('RCPT TO:<b@example.test>')).code).toBe(250);
      c.close();
      expect(child.exitCode).toBeNull();
    } finally {
      child.kill('SIGTERM');
      await once(child, 'exit');
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
