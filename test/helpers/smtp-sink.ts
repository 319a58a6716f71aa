/**
 * A real SMTP server on loopback (smtp-server) as a relay target for /submit tests: STARTTLS
 * and AUTH PLAIN/LOGIN when asked, chosen replies per recipient, and a record of what arrived
 * on the wire (envelope, bytes, whether TLS was up, who authenticated).
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SMTPServer, type SMTPServerOptions } from 'smtp-server';
import { ensureTlsMaterial } from '../../src/smtp/certs.js';
import { silentLogger } from '../../src/log/logger.js';

export interface SinkMessage {
  from: string;
  to: string[];
  data: Buffer;
  user: string | null;
  secure: boolean;
}

export interface SinkOptions {
  /** Offer STARTTLS (self-signed certificate). */
  starttls?: boolean;
  /** Require AUTH with these credentials (only after STARTTLS when starttls is on). */
  auth?: { user: string; pass: string };
  /** RCPT TO replies by address (lower case), e.g. { 'nobody@x.test': [550, '5.1.1 User unknown'] }. */
  rcptReplies?: Record<string, [number, string]>;
  /** Replies to the end of DATA by (the transaction's first) recipient. */
  dataReplies?: Record<string, [number, string]>;
}

export interface SmtpSink {
  port: number;
  messages: SinkMessage[];
  /** Waits (bounded) until n messages arrived. */
  waitFor(n: number, timeoutMs?: number): Promise<SinkMessage[]>;
  close(): Promise<void>;
}

let certs: { key: Buffer; cert: Buffer } | null = null;

async function tlsMaterial(): Promise<{ key: Buffer; cert: Buffer }> {
  if (certs) return certs;
  const dir = mkdtempSync(join(tmpdir(), 'mailwire-sink-'));
  await ensureTlsMaterial(join(dir, 'cert.pem'), join(dir, 'key.pem'), 'sink.mailwire.test', silentLogger());
  certs = { key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) };
  return certs;
}

function smtpError(code: number, text: string): Error {
  return Object.assign(new Error(text), { responseCode: code });
}

export async function startSmtpSink(opts: SinkOptions = {}): Promise<SmtpSink> {
  const messages: SinkMessage[] = [];
  const tls = opts.starttls ? await tlsMaterial() : null;
  const options: SMTPServerOptions = {
    secure: false,
    logger: false,
    name: 'sink.mailwire.test',
    ...(tls ? { key: tls.key, cert: tls.cert } : { hideSTARTTLS: true }),
    authMethods: ['PLAIN', 'LOGIN'],
    authOptional: !opts.auth,
    allowInsecureAuth: !opts.starttls,
    disabledCommands: opts.auth ? [] : ['AUTH'],
    onAuth(auth, _session, cb) {
      if (opts.auth && auth.username === opts.auth.user && auth.password === opts.auth.pass) return cb(null, { user: auth.username });
      return cb(smtpError(535, '5.7.8 Authentication credentials invalid'));
    },
    onRcptTo(address, _session, cb) {
      const reply = opts.rcptReplies?.[address.address.toLowerCase()];
      if (reply) return cb(smtpError(reply[0], reply[1]));
      return cb();
    },
    onData(stream, session, cb) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        const to = session.envelope.rcptTo.map((r) => r.address);
        const from = session.envelope.mailFrom ? session.envelope.mailFrom.address : '';
        const reply = opts.dataReplies?.[(to[0] ?? '').toLowerCase()];
        if (reply) return cb(smtpError(reply[0], reply[1]));
        messages.push({ from, to, data: Buffer.concat(chunks), user: typeof session.user === 'string' ? session.user : null, secure: Boolean(session.secure) });
        cb(null, `2.0.0 Ok: queued as SINK${messages.length}`);
      });
    },
  };
  const server = new SMTPServer(options);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.server.address() as AddressInfo).port;
  return {
    port,
    messages,
    async waitFor(n, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      while (messages.length < n) {
        if (Date.now() > deadline) throw new Error(`sink: ${messages.length} of ${n} messages arrived in time`);
        await new Promise((r) => setTimeout(r, 20));
      }
      return messages;
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
