/**
 * The Received: trace header every SMTP server must add (RFC 5321 4.4). Its parts come from
 * the client (HELO name, reverse DNS), so each is reduced to characters that cannot break the
 * header or forge another one.
 */
import type { Envelope } from '../events/types.js';

function clean(value: string, max = 255): string {
  return value.replace(/[^A-Za-z0-9.\-:_[\]@]/g, '?').slice(0, max) || 'unknown';
}

export function receivedHeader(opts: {
  id: string;
  hostname: string;
  envelope: Envelope;
  protocol: string; // ESMTP, ESMTPS, ESMTPA, ESMTPSA, SMTP
  date: Date;
}): Buffer {
  const { envelope: env } = opts;
  const from = `from ${clean(env.helo)} (${clean(env.clientHostname || env.remoteAddress)} [${clean(env.remoteAddress)}])`;
  const tls = env.tls ? `\r\n\t(using ${clean(env.tls.protocol, 20)} with cipher ${clean(env.tls.cipher, 80)})` : '';
  // Name the recipient only when there is one: listing all of them leaks Bcc recipients.
  const rcpt = env.rcptTo.length === 1 ? `\r\n\tfor <${clean(env.rcptTo[0]!)}>` : '';
  const line = `Received: ${from}\r\n\tby ${clean(opts.hostname)} (mailwire) with ${clean(opts.protocol, 10)} id ${opts.id}${tls}${rcpt};\r\n\t${opts.date.toUTCString().replace('GMT', '+0000')}\r\n`;
  return Buffer.from(line, 'latin1');
}
