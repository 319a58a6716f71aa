/**
 * The spamd client against faults a real spamd will not show on demand: nothing listening, a peer
 * that never answers or trickles, garbage, error codes, huge replies. The fakes are plain TCP servers
 * on port 0; where they answer like spamd they replay bytes captured from a real one.
 */
import { describe, it, expect, afterEach } from 'vitest';
import { createServer, type Server, type Socket } from 'node:net';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { pingSpamd, scoreBuffer, scoreFile, MAX_REPLY_BYTES } from '../src/spam/spamd.js';
import type { SpamdOptions } from '../src/spam/types.js';
import { freePort } from './helpers/ports.js';

const captured = (name: string): Buffer => readFileSync(new URL(`./fixtures/spam/replies/${name}`, import.meta.url));
const GTUBE_REPLY = captured('gtube.reply');
const MESSAGE = readFileSync(new URL('./fixtures/spam/attachment-binary.eml', import.meta.url));

interface Fake {
  port: number;
  /** Connections accepted so far. */
  connections: number;
  /** Everything each connection sent, complete once that connection has closed. */
  requests: Buffer[];
  /** Resolves when every accepted connection has closed. The fake keeps its half open after the
   *  client's half-close (as spamd does while it scans), so a connection only closes when the client
   *  destroys it after the fake wrote to it, or when the fake ends it itself. */
  allClosed(): Promise<void>;
  /** Stops listening and drops whatever connections are left. */
  close(): void;
}

const fakes: Fake[] = [];
afterEach(async () => {
  for (const fake of fakes.splice(0)) fake.close();
});

/** A TCP server on 127.0.0.1:0 that hands each connection to `behave`. */
async function fake(behave: (sock: Socket, request: () => Buffer) => void = () => {}): Promise<Fake> {
  const open = new Set<Promise<unknown>>();
  const sockets = new Set<Socket>();
  const server: Server = createServer({ allowHalfOpen: true }, (sock) => {
    state.connections++;
    sockets.add(sock);
    const chunks: Buffer[] = [];
    const index = state.requests.push(Buffer.alloc(0)) - 1;
    sock.on('data', (d: Buffer) => {
      chunks.push(d);
      state.requests[index] = Buffer.concat(chunks);
    });
    sock.on('error', () => {});
    open.add(new Promise((resolve) => sock.on('close', resolve)));
    sock.on('close', () => sockets.delete(sock));
    behave(sock, () => Buffer.concat(chunks));
  });
  const state: Fake = {
    port: 0,
    connections: 0,
    requests: [],
    allClosed: async () => {
      await Promise.all(open);
    },
    close: () => {
      server.close();
      for (const sock of sockets) sock.destroy();
    },
  };
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const addr = server.address();
  state.port = typeof addr === 'object' && addr ? addr.port : 0;
  fakes.push(state);
  return state;
}

const opts = (port: number, more: Partial<SpamdOptions> = {}): SpamdOptions => ({
  host: '127.0.0.1',
  port,
  timeoutMs: 10_000,
  maxSize: 512 * 1024,
  ...more,
});

/** Answers like spamd: once the announced Content-length has arrived, replies with `reply` and closes. */
function repliesWith(reply: Buffer) {
  return (sock: Socket, request: () => Buffer): void => {
    sock.on('data', () => {
      const req = request();
      const headerEnd = req.indexOf('\r\n\r\n');
      const length = /Content-length: (\d+)/.exec(req.toString('latin1'));
      if (headerEnd !== -1 && length && req.length - headerEnd - 4 >= Number(length[1])) sock.end(reply);
    });
  };
}

const ERROR = { status: 'error', score: null, threshold: null, rules: [] };

describe('what the client sends', () => {
  it('REPORT SPAMC/1.5 with Content-length, then the exact message bytes, then a half-close', async () => {
    // This fake answers only once the client has half-closed: without it, the deadline would hit.
    const server = await fake((sock) => sock.on('end', () => sock.end(GTUBE_REPLY)));
    const result = await scoreBuffer(MESSAGE, opts(server.port, { timeoutMs: 2000 }));
    expect(result).toMatchObject({ status: 'spam', score: 1000, threshold: 5 });
    await server.allClosed();
    expect(server.requests).toHaveLength(1);
    const expected = Buffer.concat([Buffer.from(`REPORT SPAMC/1.5\r\nContent-length: ${MESSAGE.length}\r\n\r\n`), MESSAGE]);
    expect(server.requests[0]?.equals(expected)).toBe(true);
  });

  it('scoreFile streams the file byte for byte (NUL, 0xFF, bare CR, 8-bit intact)', async () => {
    const server = await fake(repliesWith(GTUBE_REPLY));
    const path = new URL('./fixtures/spam/attachment-binary.eml', import.meta.url).pathname;
    await scoreFile(path, opts(server.port));
    await server.allClosed();
    expect(server.requests[0]?.subarray(-MESSAGE.length).equals(MESSAGE)).toBe(true);
  });

  it('a reply split into one-byte TCP writes is reassembled before parsing', async () => {
    const server = await fake((sock) => {
      sock.setNoDelay(true);
      sock.once('data', async () => {
        for (const byte of GTUBE_REPLY.subarray(0, 200)) {
          sock.write(Buffer.from([byte]));
          await new Promise((r) => setImmediate(r));
        }
        sock.end(GTUBE_REPLY.subarray(200));
      });
    });
    expect(await scoreBuffer(MESSAGE, opts(server.port))).toMatchObject({ status: 'spam', score: 1000, threshold: 5 });
  });
});

describe('fails open', () => {
  it('spamd down (connection refused) → error, promptly', async () => {
    const port = await freePort();
    const started = Date.now();
    expect(await scoreBuffer(MESSAGE, opts(port))).toEqual({
      ...ERROR,
      reason: `cannot talk to spamd at 127.0.0.1:${port}: connect ECONNREFUSED 127.0.0.1:${port}`,
    });
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('spamd that accepts and never answers → error at the deadline', async () => {
    const server = await fake();
    const started = Date.now();
    const result = await scoreBuffer(MESSAGE, opts(server.port, { timeoutMs: 300 }));
    const elapsed = Date.now() - started;
    expect(result).toEqual({
      ...ERROR,
      reason: `no complete reply from spamd at 127.0.0.1:${server.port} within the 300 ms deadline`,
    });
    expect(elapsed).toBeGreaterThanOrEqual(290);
    expect(elapsed).toBeLessThan(5000);
    expect(server.connections).toBe(1);
  });

  it('the deadline covers the whole exchange, not idle time: a spamd trickling a byte every 50 ms', async () => {
    const server = await fake((sock) => {
      sock.write('SPAMD/1.1 0 EX_OK\r\n');
      const tick = setInterval(() => sock.write('X'), 50);
      sock.on('close', () => clearInterval(tick));
    });
    const started = Date.now();
    const result = await scoreBuffer(MESSAGE, opts(server.port, { timeoutMs: 300 }));
    expect(result.reason).toBe(`no complete reply from spamd at 127.0.0.1:${server.port} within the 300 ms deadline`);
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('a port out of range → error, not an exception', async () => {
    expect(await scoreBuffer(MESSAGE, opts(70000))).toEqual({
      ...ERROR,
      reason: expect.stringMatching(/^cannot talk to spamd at 127\.0\.0\.1:70000: .*Port should be >= 0 and < 65536/),
    });
  });

  it('garbage reply → error naming what came back', async () => {
    const server = await fake(repliesWith(Buffer.from('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n')));
    expect(await scoreBuffer(MESSAGE, opts(server.port))).toEqual({
      ...ERROR,
      reason: 'malformed spamd reply: not a SPAMD status line: "HTTP/1.1 400 Bad Request"',
    });
  });

  it('a non-zero spamd code (captured 76 EX_PROTOCOL reply) → error with spamd\'s message', async () => {
    const server = await fake(repliesWith(captured('length-mismatch.reply')));
    expect(await scoreBuffer(MESSAGE, opts(server.port))).toEqual({
      ...ERROR,
      reason: 'spamd error 76 (EX_PROTOCOL): "Bad header line: (Content-Length mismatch: Expected 100 bytes, got 22 bytes)"',
    });
  });

  it('spamd answering an error and resetting while we still send: its answer wins over the reset', async () => {
    const server = await fake((sock) => {
      sock.once('data', () => {
        sock.write('SPAMD/1.0 75 Service Unavailable: busy\r\n', () => sock.resetAndDestroy());
      });
    });
    const big = Buffer.alloc(4 * 1024 * 1024, 'a');
    expect(await scoreBuffer(big, opts(server.port, { maxSize: big.length }))).toEqual({
      ...ERROR,
      reason: 'spamd error 75 (EX_TEMPFAIL): "Service Unavailable: busy"',
    });
  });

  it('connection closed without a reply → error', async () => {
    const server = await fake((sock) => sock.once('data', () => sock.end()));
    expect(await scoreBuffer(MESSAGE, opts(server.port))).toEqual({
      ...ERROR,
      reason: `spamd at 127.0.0.1:${server.port} closed the connection without a reply`,
    });
  });

  it(`a reply over ${MAX_REPLY_BYTES} bytes (a wrong port streaming data) → error, connection dropped`, async () => {
    const server = await fake((sock) => {
      const chunk = Buffer.alloc(64 * 1024, 'z');
      const pump = (): void => {
        while (!sock.destroyed && sock.write(chunk));
        if (!sock.destroyed) sock.once('drain', pump);
      };
      pump();
    });
    expect(await scoreBuffer(MESSAGE, opts(server.port))).toEqual({
      ...ERROR,
      reason: `reply from spamd at 127.0.0.1:${server.port} exceeds ${MAX_REPLY_BYTES} bytes`,
    });
    await server.allClosed();
  });

  it('a missing spool file → error, no connection', async () => {
    const server = await fake();
    const path = join(mkdtempSync(join(tmpdir(), 'mailwire-spam-')), 'gone.eml');
    const result = await scoreFile(path, opts(server.port));
    expect(result).toEqual({ ...ERROR, reason: `cannot read the message: ENOENT: no such file or directory, stat '${path}'` });
    expect(server.connections).toBe(0);
  });

  it('pingSpamd is false when nothing listens, when the peer is silent, and for a non-PONG reply', async () => {
    expect(await pingSpamd({ host: '127.0.0.1', port: await freePort(), timeoutMs: 1000 })).toBe(false);
    const silent = await fake();
    expect(await pingSpamd({ host: '127.0.0.1', port: silent.port, timeoutMs: 300 })).toBe(false);
    const wrong = await fake((sock) => sock.end('SPAMD/1.5 76 Bad header line\r\n'));
    expect(await pingSpamd({ host: '127.0.0.1', port: wrong.port, timeoutMs: 1000 })).toBe(false);
    const right = await fake((sock) => sock.once('data', () => sock.end(captured('ping.reply'))));
    expect(await pingSpamd({ host: '127.0.0.1', port: right.port, timeoutMs: 1000 })).toBe(true);
    expect(right.requests[0]?.toString()).toBe('PING SPAMC/1.5\r\n\r\n');
  });
});

describe('oversize', () => {
  it('scoreBuffer: one byte over maxSize → skipped, without connecting', async () => {
    const server = await fake(repliesWith(GTUBE_REPLY));
    expect(await scoreBuffer(MESSAGE, opts(server.port, { maxSize: MESSAGE.length - 1 }))).toEqual({
      status: 'skipped',
      score: null,
      threshold: null,
      rules: [],
      reason: `size ${MESSAGE.length} exceeds spamd max_size ${MESSAGE.length - 1}`,
    });
    expect(server.connections).toBe(0);
  });

  it('scoreFile: size from the file system → skipped, without connecting; at maxSize it is sent', async () => {
    const server = await fake(repliesWith(GTUBE_REPLY));
    const path = join(mkdtempSync(join(tmpdir(), 'mailwire-spam-')), 'big.eml');
    writeFileSync(path, Buffer.alloc(1000, 'a'));
    expect(await scoreFile(path, opts(server.port, { maxSize: 999 }))).toMatchObject({
      status: 'skipped',
      reason: 'size 1000 exceeds spamd max_size 999',
    });
    expect(server.connections).toBe(0);
    expect(await scoreFile(path, opts(server.port, { maxSize: 1000 }))).toMatchObject({ status: 'spam' });
    expect(server.connections).toBe(1);
  });
});

describe('abort', () => {
  it('an already aborted signal → error "aborted", without connecting', async () => {
    const server = await fake(repliesWith(GTUBE_REPLY));
    expect(await scoreBuffer(MESSAGE, opts(server.port), AbortSignal.abort())).toEqual({ ...ERROR, reason: 'aborted' });
    expect(server.connections).toBe(0);
  });

  it('aborting mid-exchange → error "aborted" at once', async () => {
    const server = await fake();
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 100);
    const started = Date.now();
    expect(await scoreBuffer(MESSAGE, opts(server.port, { timeoutMs: 20_000 }), controller.signal)).toEqual({
      ...ERROR,
      reason: 'aborted',
    });
    expect(Date.now() - started).toBeLessThan(5000);
    expect(server.connections).toBe(1);
  });
});

describe('no leaks', () => {
  // In a child process: the test runner keeps timers of its own that would blur the count here.
  it('leaves no timer or socket behind on any path, and lets the process exit', async () => {
    const script = fileURLToPath(new URL('./fixtures/spam/leak-check.ts', import.meta.url));
    const child = spawn(process.execPath, ['--import', 'tsx', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const started = Date.now();
    const [code] = (await once(child, 'exit')) as [number | null];
    expect(err).toBe('');
    expect(code).toBe(0);
    // A leaked deadline timer (60 s) or socket would have kept it running.
    expect(Date.now() - started).toBeLessThan(5000);
    const report = JSON.parse(out) as { results: unknown[]; timers: number; clientSockets: number };
    expect(report.results).toEqual([
      expect.stringMatching(/^no complete reply from spamd at 127\.0\.0\.1:\d+ within the 200 ms deadline$/),
      'aborted',
      'spam',
      'spam',
      expect.stringMatching(/^cannot talk to spamd at 127\.0\.0\.1:\d+: connect ECONNREFUSED/),
      false,
      false,
    ]);
    expect(report.timers).toBe(0);
    expect(report.clientSockets).toBe(0);
  });
});
