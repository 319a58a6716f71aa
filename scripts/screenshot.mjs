#!/usr/bin/env node
/**
 * Takes docs/viewer.png: the web viewer at desktop width with a few sample messages, one of
 * them open. Starts a throwaway mailwire (temporary data directory, ports chosen by the OS)
 * and, when SpamAssassin is installed, a spamd of its own, so the spam badges are real.
 *
 *   node --import tsx scripts/screenshot.mjs [output.png]
 *
 * Needs Debian's chromium (/usr/bin/chromium, see test/install-deps.sh).
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import nodemailer from 'nodemailer';
import { chromium } from 'playwright-core';
import { createApp } from '../src/app.ts';
import { validateConfig } from '../src/config/load.ts';
import { silentLogger } from '../src/log/logger.ts';
import { startSpamd } from '../test/helpers/spamd.ts';

const output = resolve(process.argv[2] ?? 'docs/viewer.png');
const dir = mkdtempSync(join(tmpdir(), 'mailwire-screenshot-'));
const spamd = existsSync('/usr/sbin/spamd') ? await startSpamd() : null;
const config = validateConfig(
  {
    smtp: { host: '127.0.0.1', port: 0, hostname: 'mx.mailwire.test' },
    http: { host: '127.0.0.1', port: 0 },
    tls: { cert: join(dir, 'cert.pem'), key: join(dir, 'key.pem') },
    storage: { data_dir: join(dir, 'data') },
    spamd: spamd ? { host: spamd.host, port: spamd.port } : { enabled: false },
    log: { level: 'silent' },
  },
  join(dir, 'config'),
);
const app = createApp(config, { logger: silentLogger() });
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'] });
try {
  const addresses = await app.start();
  const transport = nodemailer.createTransport({ host: '127.0.0.1', port: addresses.smtp.port, secure: false, ignoreTLS: true });
  const send = (mail) => transport.sendMail(mail);

  await send({
    from: 'Build Bot <ci@builds.example.org>',
    to: 'dev-team@example.test',
    subject: 'Build #2291 passed on main',
    text: 'All 412 tests passed in 3 min 12 s.\n\nCommit 4f2a9c1 by Dana: "store: group commits"\n',
  });
  await send({
    from: 'Accounts <billing@supplier.example>',
    to: 'finance@example.test',
    subject: 'Invoice INV-1042 for November',
    text: 'Hello,\n\nplease find attached our invoice INV-1042.\n\nKind regards,\nAccounts',
    attachments: [{ filename: 'INV-1042.pdf', content: Buffer.from('%PDF-1.4\n% sample invoice\n'), contentType: 'application/pdf' }],
  });
  await send({
    from: 'Prize Department <winner@lottery.example>',
    to: 'ana@example.test',
    subject: 'You have WON 1,000,000 — claim now',
    text: 'XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\n',
  });
  await send({
    from: 'Dana Developer <dana@example.org>',
    to: 'ana@example.test',
    subject: 'Re: staging deploy tomorrow?',
    text: 'Sounds good, 10:00 works for me.\n\n> Shall we deploy to staging tomorrow morning?\n',
  });
  await send({
    from: 'Acme Cloud <hello@acme.example>',
    to: 'ana@example.test',
    subject: 'Welcome to Acme Cloud — confirm your email',
    text: 'Welcome, Ana!\n\nConfirm your email address: https://acme.example/confirm?t=8f3a\n',
    html: `<!doctype html><html><body style="margin:0;background:#f4f5f7;font-family:Helvetica,Arial,sans-serif">
<table width="100%" cellpadding="0" cellspacing="0"><tr><td align="center" style="padding:32px 12px">
<table width="480" cellpadding="0" cellspacing="0" style="background:#fff;border-radius:8px;padding:32px">
<tr><td><img src="https://acme.example/logo.png" alt="Acme Cloud" width="120" height="32" style="display:block;margin-bottom:24px">
<h1 style="font-size:22px;color:#1d2330;margin:0 0 12px">Welcome, Ana!</h1>
<p style="font-size:15px;line-height:1.5;color:#444">Thanks for signing up. Please confirm your email address to activate your account.</p>
<p style="margin:28px 0"><a href="https://acme.example/confirm?t=8f3a" style="background:#2457c5;color:#fff;padding:12px 22px;border-radius:6px;text-decoration:none;font-weight:bold">Confirm my email</a></p>
<p style="font-size:12px;color:#888">If you did not sign up, ignore this message.</p></td></tr></table>
</td></tr></table></body></html>`,
  });
  transport.close();

  const base = `http://127.0.0.1:${addresses.http.port}`;
  let newest = null;
  for (let i = 0; i < 100 && !newest; i++) {
    const page = await (await fetch(`${base}/api/v1/messages?limit=5`)).json();
    if (page.items.length === 5) newest = page.items[0].id;
    else await new Promise((r) => setTimeout(r, 100));
  }
  if (!newest) throw new Error('the sample messages were not stored');

  const context = await browser.newContext({ viewport: { width: 1280, height: 760 }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  await page.goto(`${base}/#${newest}`);
  await page.locator('#status[data-mode="live"]').waitFor({ timeout: 10_000 });
  await page.frameLocator('iframe.html-body').locator('h1').waitFor({ timeout: 10_000 });
  await page.screenshot({ path: output });
  console.log(`wrote ${output}`);
} finally {
  await browser.close();
  await app.stop();
  await spamd?.stop();
  rmSync(dir, { recursive: true, force: true });
}
