/**
 * Live reload of hooks: an edit applies to the next session without a restart; a broken file
 * makes its phase fail closed (451 4.3.0) for new sessions, logged with file and line, and fixing
 * it recovers. Also: configuration errors at start name the key.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { validateConfig } from '../src/config/load.js';
import { HookRegistry } from '../src/hooks/registry.js';
import { silentLogger } from '../src/log/logger.js';
import { waitFor } from './helpers/app.js';
import { line, openSession, startHookApp, waitForLog, type HookApp } from './helpers/hooks.js';

const block = (text: string) => `
import type { Hook } from '../../../src/hooks/api.js';
export default {
  name: 'block-spammer',
  mail(ctx) {
    if (ctx.address.address === 'spammer@bad.test') return { verdict: 'reject', code: 550, enhanced: '5.7.1', message: '${text}' };
  },
} satisfies Hook;
`;

async function mailReply(h: HookApp, from = 'spammer@bad.test'): Promise<string> {
  const c = await openSession(h.t.smtpPort);
  const r = line(await c.command(`MAIL FROM:<${from}>`));
  c.close();
  return r;
}

describe('hook reload', () => {
  let h: HookApp;
  beforeAll(async () => {
    h = await startHookApp({ 'block-spammer.ts': block('Blocked, version one') }, { mail: ['block-spammer.ts'] });
  });
  afterAll(async () => h.stop());

  it('an edit shows in the next session, a syntax error fails closed, a fix recovers', async () => {
    expect(await mailReply(h)).toBe('550 5.7.1 Blocked, version one');

    // A session opened before the edit keeps the version it started with.
    const early = await openSession(h.t.smtpPort);
    h.write('block-spammer.ts', block('Blocked, version two'));
    await waitFor(async () => (await mailReply(h)) === '550 5.7.1 Blocked, version two');
    expect(line(await early.command('MAIL FROM:<spammer@bad.test>'))).toBe('550 5.7.1 Blocked, version one');
    early.close();

    // A syntax error on line 6: new sessions fail closed, in this phase only for this file.
    const running = await openSession(h.t.smtpPort);
    h.write('block-spammer.ts', block('Blocked, version two').replace("if (ctx.address", 'if (ctx..address'));
    await waitFor(async () => (await mailReply(h)) === '451 4.3.0 Temporary policy failure, try again later');
    expect(await mailReply(h, 'anyone@x.test')).toBe('451 4.3.0 Temporary policy failure, try again later');
    const logged = await waitForLog(h, (l) => l.msg === 'hook failed to load; its phases fail closed (451) for new sessions until it is fixed');
    expect(logged).toMatchObject({ hook: 'block-spammer.ts', file: join(h.hooksDir, 'block-spammer.ts'), line: 6, level: 50, phases: ['mail'] });
    // Once per change, not once per session.
    expect(h.logs.filter((l) => l.msg === logged.msg)).toHaveLength(1);
    // The session that was running keeps the last good version.
    expect(line(await running.command('MAIL FROM:<spammer@bad.test>'))).toBe('550 5.7.1 Blocked, version two');
    running.close();

    h.write('block-spammer.ts', block('Blocked, version three'));
    await waitFor(async () => (await mailReply(h)) === '550 5.7.1 Blocked, version three');
    expect(await mailReply(h, 'anyone@x.test')).toBe('250 2.1.0 Accepted');
  });

  it('a throw while the module loads is reported with its line', async () => {
    h.write('block-spammer.ts', `const x = 1;\n\nthrow new Error('not today');\nexport default { mail() {} };\n`);
    const logged = await waitForLog(h, (l) => l.msg?.toString().startsWith('hook failed to load') === true && l.reason === 'not today');
    expect(logged).toMatchObject({ line: 3 });
    h.write('block-spammer.ts', block('Back'));
    await waitFor(async () => (await mailReply(h)) === '550 5.7.1 Back');
  });
});

describe('hook configuration errors at start', () => {
  const dir = mkdtempSync(join(tmpdir(), 'mailwire-hookcfg-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const registryFor = (phases: Record<string, unknown>, files: Record<string, string> = {}, loadTimeoutMs?: number) => {
    mkdirSync(join(dir, 'hooks'), { recursive: true });
    for (const [f, s] of Object.entries(files)) writeFileSync(join(dir, 'hooks', f), s);
    const config = validateConfig({ hooks: { phases } }, dir);
    return new HookRegistry(config.hooks, config.configDir, silentLogger(), loadTimeoutMs);
  };
  const load = async (phases: Record<string, unknown>, files: Record<string, string> = {}) => registryFor(phases, files).load();

  it('an unknown phase names the key', async () => {
    await expect(load({ helo: [], mailfrom: ['x.ts'] })).rejects.toThrow('unknown key hooks.phases.mailfrom');
  });

  it('a missing file, a path outside the hooks dir, a missing handler and a syntax error name the key', async () => {
    await expect(load({ mail: ['nope.ts'] })).rejects.toThrow(`hooks.phases.mail[0]: hook file not found: ${join(dir, 'hooks', 'nope.ts')}`);
    await expect(load({ mail: ['../evil.ts'] })).rejects.toThrow('hooks.phases.mail.0: must be a path inside the hooks directory');
    await expect(load({ rcpt: ['a.ts'] }, { 'a.ts': 'export default { mail() {} };' })).rejects.toThrow(`hooks.phases.rcpt[0]: ${join(dir, 'hooks', 'a.ts')}: listed under rcpt but has no rcpt() handler`);
    await expect(load({ eom: ['ok.ts', 'b.ts'] }, { 'ok.ts': 'export default { eom() {} };', 'b.ts': 'export default {\n  eom( {\n};' })).rejects.toThrow(
      new RegExp(`hooks\\.phases\\.eom\\[1\\]: ${join(dir, 'hooks', 'b.ts').replace(/[.]/g, '\\.')}:3: `),
    );
  });

  it('a module whose top-level await never settles stops the start naming the key; at a reload it fails alone and later reloads go on', async () => {
    const hang = 'await new Promise(() => {});\nexport default { mail() {} };\n';
    const started = Date.now();
    await expect(registryFor({ mail: ['hang.mjs'] }, { 'hang.mjs': hang }, 300).load()).rejects.toThrow(
      `hooks.phases.mail[0]: ${join(dir, 'hooks', 'hang.mjs')}: did not finish loading within 300 ms (a top-level await that never settles?)`,
    );
    expect(Date.now() - started).toBeLessThan(5000);

    const registry = registryFor({ mail: ['later.mjs'] }, { 'later.mjs': "export default { name: 'v1', mail() {} };\n" }, 300);
    await registry.load();
    const nameNow = () => registry.current.byPhase.get('mail')?.[0]?.hook.name;
    writeFileSync(join(dir, 'hooks', 'later.mjs'), hang);
    await registry.reload('later.mjs');
    expect(registry.current.byPhase.get('mail')?.[0]?.broken?.reason).toBe('did not finish loading within 300 ms (a top-level await that never settles?)');
    expect(nameNow()).toBe('v1'); // the last good version is kept
    writeFileSync(join(dir, 'hooks', 'later.mjs'), "export default { name: 'v2', mail() {} };\n");
    await registry.reload('later.mjs');
    expect(nameNow()).toBe('v2');
    expect(registry.current.byPhase.get('mail')?.[0]?.broken).toBeNull();
  });
});
