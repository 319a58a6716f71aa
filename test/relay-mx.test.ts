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
  let tlsSink: SmtpSink;
  let dns: Awaited<ReturnType<typeof startDnsResponder>>;
  let t: TestApp;

  beforeAll(async () => {
    sink = await startSmtpSink();
    // STARTTLS with a self-signed certificate, as many real exchangers have.
    tlsSink = await startSmtpSink({ starttls: true });
    dns = await startDnsResponder({
      // The preferred exchanger's address has nothing listening on the sink's port: the next one takes it.
      'cats.test': { mx: [[20, 'mx2.cats.test'], [10, 'mx1.cats.test']] },
      'mx1.cats.test': { a: ['127.0.0.2'] },
      'mx2.cats.test': { a: ['127.0.0.1'] },
      'nomx.test': { a: ['127.0.0.1'] },
      'nullmx.test': { mx: [[0, '']] },
      'verify.test': { mx: [[10, 'mx.tls.test']] },
      'noverify.test': { mx: [[10, 'mx.tls.test']] },
      'opportunistic.test': { mx: [[10, 'mx.tls.test']] },
      'mx.tls.test': { a: ['127.0.0.1'] },
    });
    const route = `{ mailer: MX, port: ${sink.port}, timeout: 3, options: { resolver: "${dns.server}" } }`;
    const tls = (extra: string, options = '') => `{ mailer: MX, port: ${tlsSink.port}, timeout: 3${extra}, options: { resolver: "${dns.server}"${options} } }`;
    t = await startTestApp({
      spamd: false,
      files: {
        mailertable: [
          `cats.test: ${route}`,
          `nomx.test: ${route}`,
          `nullmx.test: ${route}`,
          `nowhere.test: ${route}`,
          `verify.test: ${tls(', starttls: 1')}`,
          `noverify.test: ${tls(', starttls: 1', ', tls_verify: false')}`,
          `opportunistic.test: ${tls('')}`,
          '',
        ].join('\n'),
        recipients: 'open-relay: 1\n',
      },
    });
  });
  afterAll(async () => {
    await t?.stop();
    await sink?.close();
    await tlsSink?.close();
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

  it('without starttls: 1 uses STARTTLS when offered and does not check the certificate (opportunistic, RFC 7435)', async () => {
    const before = tlsSink.messages.length;
    const r = await postSubmit(t.httpUrl, mail({ rcpt: ['tama@opportunistic.test'] }));
    expect(r.json.response[0]).toMatchObject({ code: 250, error: 0, mailer: 'MX', host: 'mx.tls.test', port: tlsSink.port });
    const [m] = (await tlsSink.waitFor(before + 1)).slice(before);
    expect(m).toMatchObject({ secure: true, to: ['tama@opportunistic.test'] });
  });

  it('with starttls: 1 verifies the exchanger certificate: a self-signed one is a connection failure', async () => {
    const before = tlsSink.messages.length;
    const r = await postSubmit(t.httpUrl, mail({ rcpt: ['tama@verify.test'] }));
    expect(r.json.response[0]).toMatchObject({ code: 421, dsn: null, error: 1, mailer: 'MX', command: 'CONN', host: 'mx.tls.test', rcpt: 'tama@verify.test' });
    expect(r.json.response[0]!.message[0]).toBe('Cannot connect SMTP Server');
    expect(r.json.response[0]!.message[1]).toMatch(/certificate/);
    expect(tlsSink.messages.length).toBe(before);
  });

  it('with starttls: 1 and options.tls_verify: false requires TLS but accepts the self-signed certificate', async () => {
    const before = tlsSink.messages.length;
    const r = await postSubmit(t.httpUrl, mail({ rcpt: ['tama@noverify.test'] }));
    expect(r.json.response[0]).toMatchObject({ code: 250, error: 0, mailer: 'MX', command: 'DATA', host: 'mx.tls.test' });
    const [m] = (await tlsSink.waitFor(before + 1)).slice(before);
    expect(m).toMatchObject({ secure: true, to: ['tama@noverify.test'] });
  });
});
