/**
 * The MX mailer: MX lookup through the route's resolver (a minimal DNS responder on loopback,
 * standing in for the Internet's DNS), delivery to the best exchanger that answers, implicit
 * MX, null MX. The exchangers are real SMTP servers on loopback.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from './helpers/app.js';
import { startDnsResponder } from './helpers/dns-responder.js';
import { startSmtpSink, type SmtpSink } from './helpers/smtp-sink.js';
import { mail, postSubmit } from './helpers/submit.js';

describe('MX mailer', () => {
  let sink: SmtpSink;
  let dns: Awaited<ReturnType<typeof startDnsResponder>>;
  let t: TestApp;

  beforeAll(async () => {
    sink = await startSmtpSink();
    dns = await startDnsResponder({
      // The preferred exchanger's address has nothing listening on the sink's port: the next one takes it.
      'cats.test': { mx: [[20, 'mx2.cats.test'], [10, 'mx1.cats.test']] },
      'mx1.cats.test': { a: ['127.0.0.2'] },
      'mx2.cats.test': { a: ['127.0.0.1'] },
      'nomx.test': { a: ['127.0.0.1'] },
      'nullmx.test': { mx: [[0, '']] },
    });
    const route = `{ mailer: MX, port: ${sink.port}, timeout: 3, options: { resolver: "${dns.server}" } }`;
    t = await startTestApp({
      spamd: false,
      files: { mailertable: `cats.test: ${route}\nnomx.test: ${route}\nnullmx.test: ${route}\nnowhere.test: ${route}\n`, recipients: 'open-relay: 1\n' },
    });
  });
  afterAll(async () => {
    await t?.stop();
    await sink?.close();
    await dns?.close();
  });

  it('looks up MX through the configured resolver and delivers to the exchanger that answers', async () => {
    const before = sink.messages.length;
    const r = await postSubmit(t.httpUrl, mail({ rcpt: ['tama@cats.test'] }));
    expect(r.json.response[0]).toMatchObject({ code: 250, error: 0, mailer: 'MX', command: 'DATA', host: 'mx2.cats.test', port: sink.port, rcpt: 'tama@cats.test' });
    const [m] = (await sink.waitFor(before + 1)).slice(before);
    expect(m!.to).toEqual(['tama@cats.test']);
  });

  it('uses the domain itself when it has no MX (implicit MX)', async () => {
    const r = await postSubmit(t.httpUrl, mail({ rcpt: ['tama@nomx.test'] }));
    expect(r.json.response[0]).toMatchObject({ code: 250, mailer: 'MX', host: 'nomx.test' });
  });

  it('refuses a null MX domain and reports an unknown domain as a connection failure', async () => {
    const r = await postSubmit(t.httpUrl, mail({ rcpt: ['tama@nullmx.test', 'tama@nowhere.test'] }));
    expect(r.json.response[0]).toMatchObject({ code: 556, dsn: '5.1.10', error: 1, mailer: 'MX' });
    expect(r.json.response[1]).toMatchObject({ code: 421, error: 1, mailer: 'MX', command: 'CONN' });
  });
});
