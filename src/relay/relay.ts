/**
 * The relay: hands each recipient to the mailer its route names. The only module tree that
 * imports nodemailer. Deliveries of one submission run at most `maxWorkers` at a time, and
 * every recipient is delivered (Haineko dropped those beyond max_workers).
 */
import type { Writable } from 'node:stream';
import type { Logger } from '../log/logger.js';
import { EsmtpMailer } from './esmtp.js';
import { deliverToHaineko } from './haineko.js';
import { deliverToFile, deliverToScreen, discard } from './local.js';
import { deliverToMx } from './mx.js';
import { cannotConnect } from './reply.js';
import type { Delivery, ResponseEntry } from './types.js';

export type { Delivery, OutboundMessage, ResponseEntry } from './types.js';

export interface RelayOptions {
  /** Our name in EHLO and Received. */
  hostname: string;
  /** Parallel deliveries per submission, and connections per upstream pool. */
  maxWorkers: number;
  logger: Logger;
  /** Where the Screen mailer prints (stdout by default). */
  screen?: Writable;
}

export interface Relay {
  deliver(d: Delivery): Promise<ResponseEntry>;
  /** Delivers every delivery, at most maxWorkers at once; results in the input order. */
  deliverAll(ds: readonly Delivery[]): Promise<ResponseEntry[]>;
  close(): void;
}

export function createRelay(opts: RelayOptions): Relay {
  const logger = opts.logger.child({ mod: 'relay' });
  const esmtp = new EsmtpMailer({ hostname: opts.hostname, maxConnections: opts.maxWorkers });
  const screen = opts.screen ?? process.stdout;

  async function deliver(d: Delivery): Promise<ResponseEntry> {
    const started = Date.now();
    let result: ResponseEntry;
    try {
      switch (d.route.mailer) {
        case 'ESMTP':
          result = await esmtp.deliver(d);
          break;
        case 'MX':
          result = await deliverToMx(d, opts.hostname);
          break;
        case 'Haineko':
          result = await deliverToHaineko(d);
          break;
        case 'File':
          result = await deliverToFile(d);
          break;
        case 'Screen':
          result = await deliverToScreen(d, screen);
          break;
        case 'Discard':
          result = await discard(d);
          break;
      }
    } catch (err) {
      // Mailers report outcomes as values; reaching here is a bug, and still one recipient's result.
      logger.error({ err, mailer: d.route.mailer }, 'mailer failed');
      result = { ...cannotConnect({ host: d.route.host, port: d.route.port, mailer: d.route.mailer }, d.rcpt), code: 451, dsn: '4.3.0', command: 'DATA' };
    }
    // debug: the one info line per submission is submit.ts's; this is per recipient.
    logger.debug(
      { queueid: d.message.queueid, rcpt: d.rcpt, mailer: d.route.mailer, route: d.route.source, code: result.code, dsn: result.dsn, ms: Date.now() - started },
      'relayed',
    );
    return result;
  }

  async function deliverAll(ds: readonly Delivery[]): Promise<ResponseEntry[]> {
    const results = new Array<ResponseEntry>(ds.length);
    let next = 0;
    const worker = async () => {
      while (next < ds.length) {
        const i = next++;
        results[i] = await deliver(ds[i]!);
      }
    };
    await Promise.all(Array.from({ length: Math.min(opts.maxWorkers, ds.length) }, worker));
    return results;
  }

  return { deliver, deliverAll, close: () => esmtp.close() };
}
