#!/usr/bin/env node
/**
 * A reference for `npm run bench`: smtp-server, the library mailwire is built on, with nothing
 * behind it. It reads every message and throws it away (no spool, no fsync, no parse, no store),
 * and greets at once (like a client mailwire remembers, without smtp-server's 100 ms early-talker
 * wait). Its rate is the ceiling of any server built on smtp-server in one Node process on this
 * machine; mailwire's distance to it is what mailwire itself costs.
 *
 * Usage: node bench/bare-smtp-server.mjs PORT   (prints "ready" once it listens)
 */
import { SMTPServer } from 'smtp-server';

const port = Number(process.argv[2] ?? 0);
const server = new SMTPServer({
  disabledCommands: ['STARTTLS', 'AUTH'],
  logger: false,
  size: 64 * 1024 * 1024,
  onData(stream, _session, callback) {
    stream.on('end', () => callback());
    stream.resume();
  },
});

// Greet without the early-talker wait: smtp-server calls connectionReady after 100 ms; call it
// at once and make the later call a no-op (the same internal hook mailwire uses, see
// src/smtp/connection-control.ts). Without the hook the reference still works, 100 ms slower.
const connect = server.connect.bind(server);
server.connect = (socket, options) => {
  connect(socket, options);
  const conn = [...(server.connections ?? [])].at(-1);
  if (conn && typeof conn.connectionReady === 'function') {
    const ready = conn.connectionReady.bind(conn);
    let done = false;
    conn.connectionReady = (next) => {
      if (done) return;
      done = true;
      ready(next);
    };
    setImmediate(() => conn.connectionReady());
  }
};

server.on('error', (err) => console.error('bare smtp-server:', err.message));
server.listen(port, '127.0.0.1', () => console.log('ready', server.server.address().port));
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => server.close(() => process.exit(0)));
