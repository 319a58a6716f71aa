/**
 * The relay mailers against upstreams that misbehave in ways a well-behaved server never shows:
 * a Haineko upstream streaming an endless answer, an SMTP upstream that answers 4xx a number of
 * times before accepting, and one that trickles its reply to the end of DATA forever. The
 * mailers are driven directly (createRelay), with routes from the real table loader.
 */
import { once } from 'node:events';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer as createTcpServer, type AddressInfo, type Server as TcpServer, type Socket } from 'node:net';
import { SMTPServer } from 'smtp-server';
import { afterAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../src/log/logger.js';
import { MAX_RESPONSE_BYTES } from '../src/relay/haineko.js';
import { createRelay, type Delivery } from '../src/relay/relay.js';
import { routingFromTables, type RoutingTables } from '../src/routing/index.js';
import { waitFor } from './helpers/app.js';

const HOSTNAME = 'mx.mailwire.test';
const SENDER = 'kijitora@example.jp';

function delivery(mailertable: Record<string, unknown>, rcpt: string): Delivery {
  const route = routingFromTables({ mailertable } as Partial<RoutingTables>, { hostname: HOSTNAME }).route(rcpt, SENDER);
  const raw = Buffer.from(`From: ${SENDER}\r\nTo: ${rcpt}\r\nSubject: fault\r\n\r\nbody\r\n`);
  return {
    sender: SENDER,
    rcpt,
    route,
    message: { queueid: '0123456789abcdef', raw: () => raw, json: { ehlo: 'client.example.jp', mail: SENDER, rcpt: [rcpt], header: { from: SENDER, subject: 'fault' }, body: 'body' } },
  };
}

const closers: Array<() => Promise<unknown> | void> = [];
afterAll(async () => {
  for (const c of closers.reverse()) await c();
});

async function listen<S extends HttpServer | TcpServer>(server: S): Promise<number> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  closers.push(() => new Promise((r) => server.close(r)));
  return (server.address() as AddressInfo).port;
}

describe('Haineko mailer and a huge upstream answer', () => {
  it('stops reading past 1 MiB, drops the connection and reports a clear error', async () => {
    const TOTAL = 50 * 1024 * 1024;
    const chunk = Buffer.alloc(64 * 1024, 0x20);
    const seen = { sent: 0, closedEarly: false, finished: false };
    const server = createHttpServer((req, res) => {
      req.resume();
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.write('{"response":[{"rcpt":"a@huge.test","code":250,"message":["');
        res.on('close', () => {
          if (!seen.finished) seen.closedEarly = true;
        });
        // Written as fast as the client reads (backpressure), chunked, no Content-Length.
        const pump = () => {
          while (seen.sent < TOTAL && !res.destroyed) {
            seen.sent += chunk.length;
            if (!res.write(chunk)) return;
          }
          if (!res.destroyed) {
            seen.finished = true;
            res.end('"]}]}');
          }
        };
        res.on('drain', pump);
        pump();
      });
    });
    const port = await listen(server);
    const relay = createRelay({ hostname: HOSTNAME, maxWorkers: 1, logger: silentLogger() });
    const d = delivery({ 'huge.test': { mailer: 'Haineko', host: '127.0.0.1', port, timeout: 20 } }, 'a@huge.test');
    const result = await relay.deliver(d);
    relay.close();
    expect(result).toEqual({
      dsn: null,
      code: 421,
      host: '127.0.0.1',
      port,
      rcpt: 'a@huge.test',
      error: 1,
      mailer: 'Haineko',
      command: 'DATA',
      message: ['Cannot connect SMTP Server', 'HTTP 200: response larger than 1 MiB, dropped'],
    });
    // The server saw its connection closed long before it could send everything.
    await waitFor(async () => seen.closedEarly, 5000);
    expect(seen.finished).toBe(false);
    expect(seen.sent).toBeLessThan(TOTAL / 2);
    expect(MAX_RESPONSE_BYTES).toBe(1024 * 1024);
  });

  it('caps the message lines of the upstream entry as an SMTP reply is capped', async () => {
    const server = createHttpServer((req, res) => {
      req.resume();
      req.on('end', () => {
        const entry = { rcpt: 'a@lines.test', code: 250, dsn: '2.0.0\r\nX-Injected: 1', command: 'DATA', error: 0, message: [...Array.from({ length: 50 }, (_, i) => `line ${i} ${'x'.repeat(2000)}`)] };
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ response: [entry] }));
      });
    });
    const port = await listen(server);
    const relay = createRelay({ hostname: HOSTNAME, maxWorkers: 1, logger: silentLogger() });
    const result = await relay.deliver(delivery({ 'lines.test': { mailer: 'Haineko', host: '127.0.0.1', port } }, 'a@lines.test'));
    relay.close();
    expect(result).toMatchObject({ code: 250, error: 0, dsn: null, command: 'DATA', mailer: 'Haineko' });
    expect(result.message).toHaveLength(10);
    expect(result.message.every((l) => l.length === 512)).toBe(true);
    expect(result.message[9]!.startsWith('line 9 x')).toBe(true);
  });
});

describe('ESMTP retry bounds: one set, in the table schema', () => {
  it('the table loader refuses retry and sleep above the bounds, naming the key', () => {
    expect(() => routingFromTables({ mailertable: { 'x.test': { retry: 11 } } } as Partial<RoutingTables>, { hostname: HOSTNAME })).toThrow(/x\.test\.retry: at most 10 \(retries after the first attempt\)/);
    expect(() => routingFromTables({ mailertable: { 'x.test': { sleep: 301 } } } as Partial<RoutingTables>, { hostname: HOSTNAME })).toThrow(/x\.test\.sleep: at most 300 s/);
  });

  it('honours a retry count the loader accepts (7 answers 451, the 8th attempt delivers)', async () => {
    let attempts = 0;
    const delivered: string[] = [];
    const server = new SMTPServer({
      logger: false,
      disabledCommands: ['AUTH', 'STARTTLS'],
      onRcptTo(address, _session, cb) {
        attempts++;
        if (attempts <= 7) return cb(Object.assign(new Error('4.3.0 Try again later'), { responseCode: 451 }));
        return cb();
      },
      onData(stream, session, cb) {
        stream.resume();
        stream.on('end', () => {
          delivered.push(session.envelope.rcptTo[0]!.address);
          cb(null, '2.0.0 Ok: queued');
        });
      },
    });
    server.listen(0, '127.0.0.1');
    await once(server.server, 'listening');
    closers.push(() => new Promise<void>((r) => server.close(() => r())));
    const port = (server.server.address() as AddressInfo).port;
    const relay = createRelay({ hostname: HOSTNAME, maxWorkers: 1, logger: silentLogger() });
    const result = await relay.deliver(delivery({ 'retry.test': { mailer: 'ESMTP', host: '127.0.0.1', port, retry: 7, sleep: 0.01, timeout: 5 } }, 'a@retry.test'));
    relay.close();
    expect(result).toMatchObject({ code: 250, error: 0, command: 'DATA', rcpt: 'a@retry.test' });
    expect(attempts).toBe(8);
    expect(delivered).toEqual(['a@retry.test']);
  });
});

describe('ESMTP overall deadline per attempt', () => {
  it('an upstream trickling its reply to the end of DATA is cut at the route timeout: 421 CONN, connection closed, not retried', async () => {
    // Each line comes well within nodemailer's per-step socket timeout, so only an overall
    // deadline ends this; the server gives up by itself after 15 s so the test stays bounded.
    const sockets: Socket[] = [];
    const state = { closed: 0, trickled: 0, finished: false, data: 0 };
    const server = createTcpServer((socket) => {
      sockets.push(socket);
      socket.on('close', () => state.closed++);
      socket.on('error', () => undefined);
      socket.write('220 fault.test ESMTP\r\n');
      let buf = '';
      let inData = false;
      socket.on('data', (c: Buffer) => {
        buf += c.toString('latin1');
        if (inData) {
          if (!buf.includes('\r\n.\r\n')) return;
          inData = false;
          buf = '';
          const timer = setInterval(() => {
            if (socket.destroyed) return clearInterval(timer);
            if (++state.trickled >= 150) {
              clearInterval(timer);
              state.finished = true;
              socket.write('250 2.0.0 finally\r\n');
            } else socket.write('250-still thinking\r\n');
          }, 100);
          return;
        }
        let nl: number;
        while ((nl = buf.indexOf('\r\n')) >= 0) {
          const line = buf.slice(0, nl).toUpperCase();
          buf = buf.slice(nl + 2);
          if (line.startsWith('EHLO') || line.startsWith('HELO')) socket.write('250 fault.test\r\n');
          else if (line.startsWith('MAIL') || line.startsWith('RCPT') || line.startsWith('RSET') || line.startsWith('NOOP')) socket.write('250 2.0.0 Ok\r\n');
          else if (line === 'DATA') {
            state.data++;
            inData = true;
            socket.write('354 go ahead\r\n');
            return;
          } else if (line === 'QUIT') socket.end('221 2.0.0 Bye\r\n');
          else socket.write('502 5.5.1 Not implemented\r\n');
        }
      });
    });
    const port = await listen(server);
    closers.push(() => sockets.forEach((s) => s.destroy()));
    const relay = createRelay({ hostname: HOSTNAME, maxWorkers: 1, logger: silentLogger() });
    // retry: 2 must not send it again: the upstream may have the message (a duplicate otherwise).
    const result = await relay.deliver(delivery({ 'slow.test': { mailer: 'ESMTP', host: '127.0.0.1', port, timeout: 1, retry: 2, sleep: 0.01 } }, 'a@slow.test'));
    expect(result).toEqual({
      dsn: null,
      code: 421,
      host: '127.0.0.1',
      port,
      rcpt: 'a@slow.test',
      error: 1,
      mailer: 'ESMTP',
      command: 'CONN',
      message: ['Cannot connect SMTP Server', "ETIMEDOUT: no final reply within the route's timeout (1 s)"],
    });
    // The stuck connection is closed, not left in the pool.
    await waitFor(async () => state.closed === 1, 5000);
    expect(state.finished).toBe(false);
    expect(state.data).toBe(1);
    relay.close();
  });

  it('time spent waiting for a pooled connection does not count against the deadline', async () => {
    // One connection (max_workers 1), 600 ms per message, a 1 s deadline: the third message
    // waits 1.2 s for the connection, and must still be delivered.
    const delivered: string[] = [];
    const server = new SMTPServer({
      logger: false,
      disabledCommands: ['AUTH', 'STARTTLS'],
      onData(stream, session, cb) {
        stream.resume();
        stream.on('end', () =>
          setTimeout(() => {
            delivered.push(session.envelope.rcptTo[0]!.address);
            cb(null, '2.0.0 Ok: queued');
          }, 600),
        );
      },
    });
    server.listen(0, '127.0.0.1');
    await once(server.server, 'listening');
    closers.push(() => new Promise<void>((r) => server.close(() => r())));
    const port = (server.server.address() as AddressInfo).port;
    const relay = createRelay({ hostname: HOSTNAME, maxWorkers: 1, logger: silentLogger() });
    const table = { 'busy.test': { mailer: 'ESMTP', host: '127.0.0.1', port, timeout: 1 } };
    const results = await Promise.all(['a', 'b', 'c'].map((u) => relay.deliver(delivery(table, `${u}@busy.test`))));
    relay.close();
    expect(results.map((r) => [r.rcpt, r.code])).toEqual([
      ['a@busy.test', 250],
      ['b@busy.test', 250],
      ['c@busy.test', 250],
    ]);
    expect(delivered.sort()).toEqual(['a@busy.test', 'b@busy.test', 'c@busy.test']);
  });
});
