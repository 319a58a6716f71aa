/**
 * The few places where mailwire reaches past smtp-server's documented options. Kept in one
 * module, each feature-detected, so an upgrade that changes the internals degrades to the
 * library's own behaviour (with a warning) instead of breaking, and the tests that assert
 * exact replies and greeting behaviour catch it.
 *
 * 1. Exact enhanced status codes. smtp-server derives the enhanced code from the reply code
 *    (550 is always 5.1.1, 554 is 5.6.0), but mail policy needs 550 5.7.1, 554 5.7.1, 452 4.5.3.
 *    A reply text that already starts with an enhanced code is sent without a derived one.
 * 2. postscreen-style early-talker test. smtp-server holds every new connection 100 ms before
 *    its greeting to catch clients that talk first. A client that passed once is remembered
 *    (see TrustedClients) and greeted at once on later connections.
 * 3. A handle to close a session from outside a command (absolute session and DATA deadlines).
 */
import type { Socket } from 'node:net';
import type { SMTPServer } from 'smtp-server';
import type { Logger } from '../log/logger.js';

const ENHANCED_PREFIX = /^[245]\.\d{1,3}\.\d{1,3} /;

/** The parts of smtp-server's SMTPConnection that mailwire uses. */
export interface ConnectionHandle {
  /** smtp-server's session id, also session.id in the handlers. */
  readonly id: string;
  readonly remoteAddress: string;
  /** Sends a final reply (421 closes the connection). */
  send(code: number, text: string): void;
  close(): void;
}

interface InternalConnection {
  id: string;
  remoteAddress: string;
  send(code: number, data: unknown, context?: unknown): void;
  close(): void;
  connectionReady?: (next?: () => void) => void;
}

interface InternalServer {
  connect(socket: Socket, options?: unknown): void;
  connections: Set<InternalConnection>;
}

export interface ConnectionControlOptions {
  /** Should this new connection skip the greeting delay? */
  fastTrack(remoteAddress: string): boolean;
  /** Called for every new connection (before the greeting). */
  onConnection(conn: ConnectionHandle, fastTracked: boolean): void;
  logger: Logger;
}

export function installConnectionControl(server: SMTPServer, options: ConnectionControlOptions): void {
  const internal = server as unknown as InternalServer;
  if (typeof internal.connect !== 'function' || !(internal.connections instanceof Set)) {
    options.logger.warn('smtp-server internals changed: exact enhanced codes and early-talker fast track are off');
    return;
  }
  const connect = internal.connect.bind(internal);
  let warned = false;
  internal.connect = (socket: Socket, socketOptions?: unknown) => {
    connect(socket, socketOptions);
    // connect() adds the new connection last to the Set and calls init(), which arms the greeting timer.
    let conn: InternalConnection | undefined;
    for (const c of internal.connections) conn = c;
    if (!conn || typeof conn.send !== 'function') return;
    patchSend(conn);
    let fast = false;
    if (typeof conn.connectionReady === 'function') {
      const ready = conn.connectionReady.bind(conn);
      let called = false;
      // init()'s timer will still call connectionReady after 100 ms: make the second call a no-op.
      conn.connectionReady = (next?: () => void) => {
        if (called) return;
        called = true;
        ready(next);
      };
      if (options.fastTrack(conn.remoteAddress)) {
        fast = true;
        const c = conn;
        setImmediate(() => c.connectionReady?.());
      }
    } else if (!warned) {
      warned = true;
      options.logger.warn('smtp-server internals changed: early-talker fast track is off');
    }
    const c = conn;
    options.onConnection(
      {
        id: c.id,
        remoteAddress: c.remoteAddress,
        send: (code, text) => c.send(code, text),
        close: () => c.close(),
      },
      fast,
    );
  };
}

function patchSend(conn: InternalConnection): void {
  const send = conn.send.bind(conn);
  conn.send = (code: number, data: unknown, context?: unknown) => {
    if (typeof data === 'string' && ENHANCED_PREFIX.test(data)) return send(code, data, false);
    return send(code, data, context);
  };
}

/** An error that becomes an SMTP reply with an exact enhanced status code. */
export class SmtpReplyError extends Error {
  readonly responseCode: number;
  constructor(code: number, enhanced: string, text: string) {
    super(`${enhanced} ${text}`);
    this.responseCode = code;
  }
}
