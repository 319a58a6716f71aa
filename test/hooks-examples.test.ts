/** The example hooks shipped in config/hooks/, tested as shipped (copied byte for byte). */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { queuedId, storedEvent } from './helpers/app.js';
import { line, openSession, sendData, startHookApp, type HookApp } from './helpers/hooks.js';

const EXAMPLES = fileURLToPath(new URL('../config/hooks/', import.meta.url));
const shipped = (...names: string[]) => Object.fromEntries(names.map((n) => [n, readFileSync(join(EXAMPLES, n), 'utf8')]));

async function mailFrom(h: HookApp, sender: string): Promise<string> {
  const c = await openSession(h.t.smtpPort);
  const r = line(await c.command(`MAIL FROM:<${sender}>`));
  c.close();
  return r;
}

async function deliver(h: HookApp, rcpts: string[], message: string): Promise<string> {
  const c = await openSession(h.t.smtpPort);
  expect((await c.command('MAIL FROM:<sender@example.org>')).code).toBe(250);
  for (const r of rcpts) expect((await c.command(`RCPT TO:<${r}>`)).code).toBe(250);
  const reply = line(await sendData(c, message));
  c.close();
  return reply;
}

describe('config/hooks/block-spammer.ts', () => {
  let h: HookApp;
  beforeAll(async () => {
    h = await startHookApp(shipped('block-spammer.ts'), { mail: ['block-spammer.ts'] });
  });
  afterAll(async () => h.stop());

  it('rejects listed addresses, domains and subdomains with 550 5.7.1, and no one else', async () => {
    const refused = '550 5.7.1 Sender address rejected: listed as a spammer';
    expect(await mailFrom(h, 'spammer@bad.example')).toBe(refused);
    expect(await mailFrom(h, 'SPAMMER@Bad.Example')).toBe(refused);
    expect(await mailFrom(h, 'anyone@spam.example')).toBe(refused);
    expect(await mailFrom(h, 'anyone@sub.spam.example')).toBe('250 2.1.0 Accepted');
    expect(await mailFrom(h, 'x@junk.example')).toBe(refused);
    expect(await mailFrom(h, 'x@a.b.junk.example')).toBe(refused);
    expect(await mailFrom(h, 'friend@bad.example')).toBe('250 2.1.0 Accepted');
  });
});

describe('config/hooks/rate-limit.ts', () => {
  let h: HookApp;
  beforeAll(async () => {
    h = await startHookApp(shipped('rate-limit.ts'), { mail: ['rate-limit.ts'] });
  });
  afterAll(async () => h.stop());

  it('a burst from 8 parallel clients: 5 pass, exactly 3 get 421 4.7.0 and are disconnected', async () => {
    const sessions = await Promise.all(Array.from({ length: 8 }, () => openSession(h.t.smtpPort)));
    const replies = await Promise.all(sessions.map((c, i) => c.command(`MAIL FROM:<client${i}@example.org>`)));
    const lines = replies.map(line);
    expect(lines.filter((l) => l === '250 2.1.0 Accepted')).toHaveLength(5);
    expect(lines.filter((l) => l === '421 4.7.0 Too many messages from 127.0.0.1, slow down')).toHaveLength(3);
    const limited = sessions.filter((_c, i) => replies[i]!.code === 421);
    expect(await Promise.all(limited.map((c) => c.waitClosed(5000)))).toEqual([true, true, true]);
    for (const c of sessions) c.close();
    // Still within the window: the next attempt is refused too.
    expect(await mailFrom(h, 'again@example.org')).toBe('421 4.7.0 Too many messages from 127.0.0.1, slow down');
  });
});

describe('config/hooks/add-header.ts and tag-subject.ts', () => {
  let h: HookApp;
  beforeAll(async () => {
    h = await startHookApp(shipped('add-header.ts', 'tag-subject.ts'), { eom: ['add-header.ts', 'tag-subject.ts'] });
  });
  afterAll(async () => h.stop());

  it('adds the X- headers to the stored raw message and the event, and tags from the subject', async () => {
    const id = queuedId(await deliver(h, ['rcpt@example.test'], 'From: a@example.org\nSubject: [Urgent] Invoice for March\n\nPay up.\n'));
    const event = await storedEvent(h.t, id);
    expect(event.tags).toEqual(['urgent', 'finance']);
    expect(event.headers.filter((x) => x.name.toLowerCase().startsWith('x-mailwire'))).toEqual([
      { name: 'X-Mailwire-Spam', value: 'skipped' },
      { name: 'X-Mailwire-Client', value: expect.stringMatching(/ \[127\.0\.0\.1\]$/) },
    ]);
    const raw = await (await fetch(`${h.t.httpUrl}/api/v1/messages/${id}/raw`)).text();
    expect(raw).toMatch(/\r\nSubject: \[Urgent\] Invoice for March\r\nX-Mailwire-Spam: skipped\r\nX-Mailwire-Client: .* \[127\.0\.0\.1\]\r\n\r\nPay up\.\r\n$/);
  });
});

describe('config/hooks/spam-threshold.ts (with spamd)', () => {
  let h: HookApp;
  beforeAll(async () => {
    h = await startHookApp(shipped('spam-threshold.ts'), { eom: ['spam-threshold.ts'] }, { spamd: true });
  });
  afterAll(async () => h.stop());

  const GTUBE = 'Subject: test\n\nXJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\n';

  it('rejects with 550 5.7.1 when the score passes every recipient threshold', async () => {
    expect(await deliver(h, ['someone@example.test', 'strict@example.test'], GTUBE)).toMatch(/^550 5\.7\.1 Message refused as spam \(score \d+(\.\d+)?\)$/);
  });

  it('removes only the recipients whose threshold the score passes', async () => {
    // Scored about 10 by the test spamd: above @careful.example.test's 3, under @lenient.example.test's 20.
    const lottery = readFileSync(fileURLToPath(new URL('./fixtures/spam/lottery.eml', import.meta.url)), 'utf8');
    const id = queuedId(await deliver(h, ['me@careful.example.test', 'me@lenient.example.test'], lottery));
    const event = await storedEvent(h.t, id);
    expect(event.spam.score).toBeGreaterThan(3);
    expect(event.spam.score).toBeLessThan(20);
    expect(event.envelope.rcptTo).toEqual(['me@lenient.example.test']);
    expect(event.tags).toEqual(['spam-filtered']);
  });
});
