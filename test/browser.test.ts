/**
 * The web viewer in a real browser: Debian's chromium driven by playwright-core, the real app
 * on port 0, real SMTP (nodemailer), real spamd. One browser for the file; a fresh page
 * (context) per test.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Browser, BrowserContext, Frame, Page } from 'playwright-core';
import { startTestApp, waitFor, type TestApp } from './helpers/app.js';
import { launchChromium, sendMail, startCountingServer, type CountingServer } from './helpers/browser.js';

/** The bound: new mail shows in an open viewer within 2 s, without a reload. */
const LIVE_MS = 2000;
const DISPOSABLE_DOMAIN = 'inbox.mailwire.test';
/** A 1x1 GIF, sent as an inline (cid:) image. */
const GIF = Buffer.from('R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7', 'base64');

let browser: Browser;
let t: TestApp;
let remote: CountingServer;
const contexts: BrowserContext[] = [];
/** Uncaught exceptions in any viewer page: there must be none. */
const pageErrors: string[] = [];

beforeAll(async () => {
  [browser, t, remote] = await Promise.all([
    launchChromium(),
    startTestApp({ config: { web: { disposable_domain: DISPOSABLE_DOMAIN, poll_interval_ms: 500 } } }),
    startCountingServer(),
  ]);
});

afterAll(async () => {
  await browser?.close();
  await remote?.close();
  await t?.stop();
});

afterEach(async () => {
  for (const context of contexts.splice(0)) await context.close();
  expect(pageErrors.splice(0)).toEqual([]);
});

async function newPage(viewport = { width: 1280, height: 800 }): Promise<Page> {
  const context = await browser.newContext({ viewport, acceptDownloads: true });
  contexts.push(context);
  // A step that cannot happen fails within seconds with its own message, not at the test timeout.
  context.setDefaultTimeout(5000);
  const page = await context.newPage();
  page.on('pageerror', (err) => pageErrors.push(err.message));
  return page;
}

/** Opens the viewer (optionally at `query`) and waits until the feed is live. */
async function openViewer(page: Page, query = ''): Promise<void> {
  await page.goto(`${t.httpUrl}/${query}`);
  await page.locator('#status[data-mode="live"]').waitFor({ timeout: 10_000 });
}

function row(page: Page, subject: string) {
  return page.locator('#list li', { hasText: subject });
}

/** The frame of the message's HTML body (served from /api/v1/messages/:id/html). */
function htmlFrame(page: Page): Frame {
  const frame = page.frames().find((f) => /\/api\/v1\/messages\/[0-9A-Z]{26}\/html/.test(f.url()));
  if (!frame) throw new Error('no HTML frame in the page');
  return frame;
}

function unique(label: string): string {
  return `${label} ${randomBytes(4).toString('hex')}`;
}

describe('live list', () => {
  it('shows mail sent over SMTP within 2 s, without a reload, in live mode', async () => {
    const page = await newPage();
    await openViewer(page);
    // A reload would lose this marker.
    await page.evaluate(() => ((window as unknown as { marker: number }).marker = 42));
    const subject = unique('live arrival');

    await sendMail(t.smtpPort, { subject, text: 'hello' });
    await row(page, subject).waitFor({ timeout: LIVE_MS });

    expect(await page.evaluate(() => (window as unknown as { marker?: number }).marker)).toBe(42);
    await expect(row(page, subject).locator('.from').textContent()).resolves.toBe('Alice Sender');
    await expect(row(page, subject).locator('.to').textContent()).resolves.toBe('bob@example.test');
    await expect(page.locator('#status').getAttribute('data-mode')).resolves.toBe('live');
  });

  it('lists what was received before the page opened, newest first', async () => {
    const first = unique('older');
    const second = unique('newer');
    await sendMail(t.smtpPort, { subject: first, text: '1' });
    await sendMail(t.smtpPort, { subject: second, text: '2' });
    const page = await newPage();
    await openViewer(page);
    const subjects = await page.locator('#list li .subject').allTextContents();
    expect(subjects.indexOf(second)).toBeGreaterThanOrEqual(0);
    expect(subjects.indexOf(second)).toBeLessThan(subjects.indexOf(first));
  });

  it('opens a message: summary, envelope, headers, text, raw source and the spam rules that fired', async () => {
    const page = await newPage();
    await openViewer(page);
    const subject = unique('GTUBE');
    // The GTUBE line makes spamd call it spam with its GTUBE rule, whatever else it thinks.
    const id = await sendMail(t.smtpPort, {
      subject,
      text: 'XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\n',
      headers: { 'X-Probe': '<script>alert(1)</script>' },
    });
    await row(page, subject).waitFor({ timeout: LIVE_MS });
    await expect(row(page, subject).locator('.badge.spam').textContent()).resolves.toMatch(/^spam \d+\.\d$/);

    await row(page, subject).click();
    await page.locator(`article.message[data-id="${id}"]`).waitFor();
    expect(page.url()).toBe(`${t.httpUrl}/#${id}`);
    await expect(page.locator('article.message h2.message-subject').textContent()).resolves.toContain(subject);
    await expect(page.locator('article.message .text-body').textContent()).resolves.toContain('GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL');

    await page.getByRole('tab', { name: 'Envelope' }).click();
    const envelope = await page.locator('dl.envelope').innerText();
    expect(envelope).toContain('MAIL FROM\nalice@example.org');
    expect(envelope).toContain('RCPT TO\nbob@example.test');
    expect(envelope).toMatch(/Client\n127\.0\.0\.1 port \d+/);
    expect(envelope).toContain('HELO\n');
    expect(envelope).toContain('TLS\nnone (plain text)');
    expect(envelope).toContain(`Message id\n${id}`);

    await page.getByRole('tab', { name: 'Headers' }).click();
    // A hostile header value is shown as text, never parsed as markup.
    await expect(page.locator('table.headers tr', { hasText: 'X-Probe' }).locator('td').textContent()).resolves.toBe('<script>alert(1)</script>');
    await expect(page.locator('table.headers script').count()).resolves.toBe(0);

    await page.getByRole('tab', { name: 'Raw' }).click();
    await page.locator('pre.raw-body', { hasText: `Subject: ${subject}` }).waitFor();
    await expect(page.locator('pre.raw-body').textContent()).resolves.toContain('X-Probe: <script>alert(1)</script>');

    await page.getByRole('tab', { name: 'Spam' }).click();
    await expect(page.locator('dl.spam-summary').innerText()).resolves.toContain('Status\nspam');
    await expect(page.locator('table.rules code', { hasText: /^GTUBE$/ }).count()).resolves.toBe(1);
  });
});

describe('the HTML view', () => {
  it('runs none of the scripts and event handlers an HTML mail carries', async () => {
    const page = await newPage();
    await openViewer(page);
    const subject = unique('xss');
    const r = `${remote.url}/xss`;
    const beacon = (name: string) => `parent.postMessage('pwned-${name}','*');document.getElementById('target').textContent='pwned by ${name}';new Image().src='${r}/${name}'`;
    const html = `<!doctype html><html><head>
<meta http-equiv="refresh" content="0;url=${r}/refresh">
<base href="${r}/base/">
<link rel="stylesheet" href="${r}/style.css">
<style>@import url("${r}/import.css"); #target { color: rgb(1, 2, 3); }</style>
<script>window.addEventListener('DOMContentLoaded', function () { ${beacon('script')} });</script>
<script src="${r}/external.js"></script>
</head>
<body onload="${beacon('onload')}">
<p id="target">clean</p>
<img src="does-not-exist.png" onerror="${beacon('onerror')}">
<svg><image href="nope.png" onerror="${beacon('svgerror')}"/></svg>
<svg onload="${beacon('svgonload')}"></svg>
<iframe srcdoc="<script>parent.parent.postMessage('pwned-nested','*')</script>"></iframe>
<object data="${r}/object"></object><embed src="${r}/embed">
<form action="${r}/form" method="post"><input name="a" value="1" autofocus onfocus="${beacon('onfocus')}"><button id="submit">go</button></form>
<a id="jslink" href="javascript:${beacon('jslink')}">javascript link</a>
<div id="hover" onmouseover="${beacon('onmouseover')}">hover me</div>
</body></html>`;
    const id = await sendMail(t.smtpPort, { subject, html, text: 'see html' });
    await row(page, subject).waitFor({ timeout: LIVE_MS });
    // Anything the frame posts to the viewer would land here.
    await page.evaluate(() => {
      const w = window as unknown as { posted: string[] };
      w.posted = [];
      window.addEventListener('message', (e) => w.posted.push(String(e.data)));
    });
    await row(page, subject).click();

    const frame = page.frameLocator('iframe.html-body');
    // Positive control: the HTML rendered, inline styles apply.
    await frame.locator('#target').waitFor();
    await expect(frame.locator('#target').evaluate((e) => getComputedStyle(e).color)).resolves.toBe('rgb(1, 2, 3)');
    // Interact like a user: hover, click the javascript: link, submit the form.
    await frame.locator('#hover').hover();
    await frame.locator('#jslink').click();
    await frame.locator('#submit').click();
    // Nothing below is an event we could wait for: give anything that was going to run a moment.
    await page.waitForTimeout(500);

    await expect(frame.locator('#target').textContent()).resolves.toBe('clean');
    expect(await page.evaluate(() => (window as unknown as { posted: string[] }).posted)).toEqual([]);
    expect(await page.title()).toBe('mailwire');
    expect([...remote.hits.keys()].filter((path) => path.startsWith('/xss'))).toEqual([]);
    // The viewer itself is still where it was (no top navigation).
    expect(page.url()).toBe(`${t.httpUrl}/#${id}`);

    // Opened directly in a tab, outside the viewer's iframe, the body still runs nothing.
    const direct = await newPage();
    const res = await direct.goto(`${t.httpUrl}/api/v1/messages/${id}/html`);
    expect(res?.headers()['content-security-policy']).toContain('sandbox allow-popups allow-popups-to-escape-sandbox');
    await direct.locator('#target').waitFor();
    await direct.locator('#jslink').click();
    await direct.waitForTimeout(300);
    await expect(direct.locator('#target').textContent()).resolves.toBe('clean');
    expect([...remote.hits.keys()].filter((path) => path.startsWith('/xss'))).toEqual([]);
  });

  it('fetches no remote image until the user allows it; cid: images show at once', async () => {
    const page = await newPage();
    await openViewer(page);
    const subject = unique('remote images');
    const tag = randomBytes(4).toString('hex');
    const pixel = `/img/${tag}/pixel.gif`;
    const background = `/img/${tag}/bg.gif`;
    const html = `<p id="marker">newsletter</p>
<img id="remote" src="${remote.url}${pixel}" width="1" height="1">
<div style="background-image:url('${remote.url}${background}');width:10px;height:10px"></div>
<img id="inline" src="cid:logo@mailwire.test">`;
    await sendMail(t.smtpPort, {
      subject,
      html,
      attachments: [{ filename: 'logo.gif', content: GIF, contentType: 'image/gif', cid: 'logo@mailwire.test' }],
    });
    await row(page, subject).waitFor({ timeout: LIVE_MS });
    await row(page, subject).click();

    const frame = page.frameLocator('iframe.html-body');
    await frame.locator('#marker').waitFor();
    // After the frame's load event every image it was allowed to fetch has been fetched.
    await htmlFrame(page).waitForLoadState('load');
    await expect(frame.locator('#inline').evaluate((img: HTMLImageElement) => img.complete && img.naturalWidth)).resolves.toBe(1);
    expect(remote.count(pixel)).toBe(0);
    expect(remote.count(background)).toBe(0);
    await expect(page.locator('.notice.remote').textContent()).resolves.toContain('Remote images are blocked');

    await page.locator('[data-action="remote-images"]').click();
    await waitFor(async () => remote.count(pixel) === 1 && remote.count(background) === 1, 5000);
    await waitFor(() => frame.locator('#remote').evaluate((img: HTMLImageElement) => img.complete && img.naturalWidth === 1), 5000);
  });
});

describe('attachments, delete, search', () => {
  it('downloads an attachment with exactly the bytes that were sent', async () => {
    const page = await newPage();
    await openViewer(page);
    const subject = unique('attachment');
    const content = randomBytes(70_000);
    await sendMail(t.smtpPort, {
      subject,
      text: 'see attached',
      attachments: [{ filename: 'data.bin', content, contentType: 'application/octet-stream' }],
    });
    await row(page, subject).waitFor({ timeout: LIVE_MS });
    await expect(row(page, subject).locator('.clip').textContent()).resolves.toBe('1');
    await row(page, subject).click();

    const link = page.locator('ul.attachments a[data-index="0"]');
    await expect(link.textContent()).resolves.toBe('data.bin');
    const [download] = await Promise.all([page.waitForEvent('download'), link.click()]);
    expect(download.suggestedFilename()).toBe('data.bin');
    const saved = await readFile(await download.path());
    expect(createHash('sha256').update(saved).digest('hex')).toBe(createHash('sha256').update(content).digest('hex'));
  });

  it('deletes a message, and another open viewer drops it live', async () => {
    const [a, b] = [await newPage(), await newPage()];
    await Promise.all([openViewer(a), openViewer(b)]);
    const subject = unique('to delete');
    const id = await sendMail(t.smtpPort, { subject, text: 'bye' });
    await Promise.all([row(a, subject).waitFor({ timeout: LIVE_MS }), row(b, subject).waitFor({ timeout: LIVE_MS })]);

    await row(a, subject).click();
    await a.locator('[data-action="delete"]').click();
    await row(a, subject).waitFor({ state: 'detached', timeout: LIVE_MS });
    await row(b, subject).waitFor({ state: 'detached', timeout: LIVE_MS });
    await expect(a.locator('#detail').textContent()).resolves.toContain('deleted');
    const res = await fetch(`${t.httpUrl}/api/v1/messages/${id}`);
    expect(res.status).toBe(404);
  });

  it('works from the keyboard: Enter opens a message and focuses it, arrows move between tabs, Delete leaves focus on the next row', async () => {
    const page = await newPage();
    const word = randomBytes(4).toString('hex');
    const [older, newer] = [`kbd ${word} older`, `kbd ${word} newer`];
    await sendMail(t.smtpPort, { subject: older, text: 'o' });
    await sendMail(t.smtpPort, { subject: newer, text: 'n' });
    await openViewer(page, `?q=${word}`);
    await row(page, newer).locator('a').focus();
    await page.keyboard.press('Enter');
    await page.locator('#detail .message-subject').filter({ hasText: newer }).waitFor();
    await waitFor(async () => (await page.evaluate(() => document.activeElement?.classList.contains('message-subject'))) === true);
    // Tabs: only the selected one is a Tab stop; arrows move and select.
    const tab = page.locator('#detail [role="tab"][aria-selected="true"]');
    const first = await tab.getAttribute('data-tab');
    await tab.focus();
    await page.keyboard.press('ArrowRight');
    const second = await page.evaluate(() => (document.activeElement as HTMLElement | null)?.dataset.tab);
    expect(second).not.toBe(first);
    await expect(page.locator('#detail [role="tab"][aria-selected="true"]').getAttribute('data-tab')).resolves.toBe(second);
    await expect(page.locator('#detail [role="tab"][tabindex="0"]').count()).resolves.toBe(1);
    // Delete: focus goes to the row that took its place.
    await page.locator('[data-action="delete"]').click();
    await row(page, newer).waitFor({ state: 'detached', timeout: LIVE_MS });
    await waitFor(async () => (await page.evaluate(() => document.activeElement?.closest('li')?.querySelector('.subject')?.textContent)) === older);
  });

  it('searches and filters by recipient, and new mail that does not match stays out', async () => {
    const page = await newPage();
    const word = randomBytes(4).toString('hex');
    const hit = `needle ${word}`;
    const miss = unique('haystack');
    await sendMail(t.smtpPort, { subject: hit, text: '1' });
    await sendMail(t.smtpPort, { subject: miss, text: '2' });
    await openViewer(page, `?q=${word}`);
    await expect(page.locator('#q').inputValue()).resolves.toBe(word);
    await expect(page.locator('#list li .subject').allTextContents()).resolves.toEqual([hit]);

    // Live: a matching message is added, a non-matching one is not.
    const liveHit = `live needle ${word}`;
    await sendMail(t.smtpPort, { subject: unique('live haystack'), text: '3' });
    await sendMail(t.smtpPort, { subject: liveHit, text: '4' });
    await row(page, liveHit).waitFor({ timeout: LIVE_MS });
    await expect(page.locator('#list li .subject').allTextContents()).resolves.toEqual([liveHit, hit]);
    // Live, as after a reload: the word only in a To or Cc display name matches too.
    const viaTo = unique('addressed');
    const viaCc = unique('copied');
    await sendMail(t.smtpPort, { to: `Team ${word} <team@example.test>`, subject: viaTo, text: '6' });
    await sendMail(t.smtpPort, { to: 'dave@example.test', cc: `${word}-list@example.test`, subject: viaCc, text: '7' });
    await row(page, viaCc).waitFor({ timeout: LIVE_MS });
    await expect(page.locator('#list li .subject').allTextContents()).resolves.toEqual([viaCc, viaTo, liveHit, hit]);

    // Typing a new search reloads the list.
    await page.locator('#q').fill('');
    await page.locator('#rcpt').fill(`carol-${word}@example.test`);
    await page.locator('#rcpt').press('Enter');
    await page.locator('#list-empty').waitFor();
    await sendMail(t.smtpPort, { to: `carol-${word}@example.test`, subject: `for carol ${word}`, text: '5' });
    await row(page, `for carol ${word}`).waitFor({ timeout: LIVE_MS });
    await expect(page.locator('#list li').count()).resolves.toBe(1);
    expect(new URL(page.url()).searchParams.get('rcpt')).toBe(`carol-${word}@example.test`);
  });
});

describe('disposable addresses', () => {
  it('makes a random address at the configured domain whose mail appears live', async () => {
    const page = await newPage();
    await openViewer(page);
    await page.locator('#new-address').click();
    const address = (await page.locator('#inbox-address').textContent()) ?? '';
    // 16 random bytes in base32: 26 characters, 128 bits.
    expect(address).toMatch(new RegExp(`^[a-z2-7]{26}@${DISPOSABLE_DOMAIN.replaceAll('.', '\\.')}$`));
    expect(new URL(page.url()).searchParams.get('rcpt')).toBe(address);
    await page.locator('#status[data-mode="live"]').waitFor({ timeout: 5000 });
    await page.locator('#list-empty').waitFor();

    const other = unique('not for the inbox');
    const mine = unique('for the inbox');
    await sendMail(t.smtpPort, { to: 'someone@example.test', subject: other, text: 'x' });
    await sendMail(t.smtpPort, { to: address, subject: mine, text: 'y' });
    await row(page, mine).waitFor({ timeout: LIVE_MS });
    await expect(page.locator('#list li .subject').allTextContents()).resolves.toEqual([mine]);

    // A second click gives another address.
    await page.locator('#new-address').click();
    const second = (await page.locator('#inbox-address').textContent()) ?? '';
    expect(second).not.toBe(address);
    await page.locator('#list-empty').waitFor();

    // The link brings the inbox back (after a reload, with its mail).
    await page.goto(`${t.httpUrl}/?rcpt=${encodeURIComponent(address)}&inbox=1`);
    await row(page, mine).waitFor();
    await expect(page.locator('#inbox-address').textContent()).resolves.toBe(address);
  });
});

describe('connection handling', () => {
  it('falls back to polling when the WebSocket cannot connect, and goes live again when it can', async () => {
    const page = await newPage();
    let blocked = true;
    const attempts: string[] = [];
    await page.routeWebSocket(/\/api\/v1\/events/, (ws) => {
      attempts.push(ws.url());
      // A proxy that does not pass WebSockets: the socket closes before the feed says ready.
      if (blocked) void ws.close({ code: 1011 });
      else ws.connectToServer();
    });
    await page.goto(`${t.httpUrl}/`);
    await page.locator('#status[data-mode="polling"]').waitFor({ timeout: 10_000 });
    expect(attempts.length).toBeGreaterThanOrEqual(3);

    const subject = unique('polled');
    await sendMail(t.smtpPort, { subject, text: 'p' });
    // Polling every 500 ms (web.poll_interval_ms in this test app).
    await row(page, subject).waitFor({ timeout: 3000 });

    blocked = false;
    await page.locator('#status[data-mode="live"]').waitFor({ timeout: 20_000 });
    const live = unique('live again');
    await sendMail(t.smtpPort, { subject: live, text: 'l' });
    await row(page, live).waitFor({ timeout: LIVE_MS });
  });

  it('keeps every row while polling, across pages, when a burst of mail was committed in another order than it arrived', async () => {
    const page = await newPage();
    await page.routeWebSocket(/\/api\/v1\/events/, (ws) => void ws.close({ code: 1011 }));
    const word = randomBytes(4).toString('hex');
    // Ids are given when DATA begins, the list is in commit order. A big message (slow to
    // receive and parse) that begins first and a small one that begins just after it are
    // committed the other way round; 49 more then fill the first page (50 rows). The small
    // one is then the first row of the second page, with a newer id than the first page's
    // last row, which the viewer took as "covered by the first page, so deleted".
    const big = sendMail(t.smtpPort, { subject: `burst ${word} big`, text: `${'x'.repeat(76)}\n`.repeat(150_000) });
    await new Promise((r) => setTimeout(r, 150));
    const smallId = await sendMail(t.smtpPort, { subject: `burst ${word} small`, text: 's' });
    const bigId = await big;
    expect(smallId > bigId).toBe(true);
    for (let i = 0; i < 49; i += 7) {
      await Promise.all(Array.from({ length: Math.min(7, 49 - i) }, (_, j) => sendMail(t.smtpPort, { subject: `burst ${word} ${i + j}`, text: 'b' })));
    }
    await page.goto(`${t.httpUrl}/?q=${word}`);
    await page.locator('#status[data-mode="polling"]').waitFor({ timeout: 10_000 });
    await page.locator('#more').click();
    await waitFor(async () => (await page.locator('#list li').count()) === 51);
    // Several polls (every 500 ms): nothing may go missing.
    await new Promise((r) => setTimeout(r, 2000));
    await expect(page.locator('#list li').count()).resolves.toBe(51);
    // A real deletion still goes.
    expect((await fetch(`${t.httpUrl}/api/v1/messages/${smallId}`, { method: 'DELETE' })).status).toBe(204);
    await waitFor(async () => (await page.locator('#list li').count()) === 50);
  });

  it('reconnects with since after the socket drops and shows what arrived meanwhile, once', async () => {
    const page = await newPage();
    const urls: string[] = [];
    let release: () => void = () => {};
    let gate: Promise<void> = Promise.resolve();
    let current: { close(): Promise<void> } | null = null;
    await page.routeWebSocket(/\/api\/v1\/events/, async (ws) => {
      urls.push(ws.url());
      current = ws;
      await gate;
      ws.connectToServer();
    });
    await openViewer(page);
    const before = unique('before drop');
    await sendMail(t.smtpPort, { subject: before, text: 'b' });
    await row(page, before).waitFor({ timeout: LIVE_MS });

    // Drop the connection and hold the reconnect until a message was stored meanwhile.
    gate = new Promise((resolve) => (release = resolve));
    await current!.close();
    await page.locator('#status[data-mode="reconnecting"]').waitFor({ timeout: 5000 });
    const during = unique('during drop');
    await sendMail(t.smtpPort, { subject: during, text: 'd' });
    release();

    await row(page, during).waitFor({ timeout: 5000 });
    await page.locator('#status[data-mode="live"]').waitFor({ timeout: 5000 });
    expect(urls.length).toBeGreaterThanOrEqual(2);
    // The reconnect resumed from the last frame's seq.
    expect(new URL(urls[urls.length - 1]!).searchParams.get('since')).toMatch(/^[0-9]+$/);
    await expect(row(page, during).count()).resolves.toBe(1);
    await expect(row(page, before).count()).resolves.toBe(1);
  });
});

describe('a server that does not know the cursor', () => {
  it.each([
    [4404, 'unknown_since', 'since is not in this log'],
    [4410, 'since_expired', 'the event log no longer goes back that far'],
  ])('reloads the list and reconnects without since after close %i', async (closeCode, errorCode, message) => {
    await sendMail(t.smtpPort, { subject: unique('so the list is not empty'), text: 'x' });
    const page = await newPage();
    const urls: string[] = [];
    await page.routeWebSocket(/\/api\/v1\/events/, (ws) => {
      urls.push(ws.url());
      if (urls.length === 1) {
        // What a server with a reset data directory, or a trimmed log, answers (docs/events.md).
        ws.send(JSON.stringify({ type: 'feed.error', seq: null, data: { code: errorCode, message } }));
        void ws.close({ code: closeCode, reason: message });
      } else {
        ws.connectToServer();
      }
    });
    await openViewer(page);
    expect(new URL(urls[0]!).searchParams.get('since')).toMatch(/^[0-9A-Z]{26}$/);
    expect(new URL(urls[1]!).searchParams.has('since')).toBe(false);
    const subject = unique(`after ${closeCode}`);
    await sendMail(t.smtpPort, { subject, text: 'y' });
    await row(page, subject).waitFor({ timeout: LIVE_MS });
  });
});

describe('phone width', () => {
  it('stacks list and message at 390x844 with no horizontal scrolling', async () => {
    const subject = unique('phone');
    await sendMail(t.smtpPort, {
      subject,
      html: '<p>A long line: ' + 'x'.repeat(400) + '</p>',
      text: 'A very long unbroken line ' + 'y'.repeat(400),
    });
    const page = await newPage({ width: 390, height: 844 });
    await openViewer(page);
    const noHorizontalScroll = () => page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth && document.body.scrollWidth <= window.innerWidth);

    await row(page, subject).waitFor();
    expect(await page.locator('#detail').isVisible()).toBe(false);
    expect(await noHorizontalScroll()).toBe(true);
    await expect(page.locator('#new-address').isVisible()).resolves.toBe(true);

    await row(page, subject).click();
    await page.locator('article.message h2.message-subject').waitFor();
    expect(await page.locator('.list-pane').isVisible()).toBe(false);
    expect(await noHorizontalScroll()).toBe(true);
    await page.getByRole('tab', { name: 'Text' }).click();
    expect(await noHorizontalScroll()).toBe(true);

    await page.locator('button.back').click();
    await row(page, subject).waitFor();
    expect(await page.locator('#detail').isVisible()).toBe(false);
  });
});
