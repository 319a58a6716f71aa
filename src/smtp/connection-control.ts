/**
 * The few places where mailwire reaches past smtp-server's documented options, kept in one
 * module. Each is feature-detected; when a library upgrade changes the internals, the start
 * logs a warning and mailwire falls back to what only needs public Node APIs (the raw socket),
 * and the tests that assert exact replies and greeting behaviour fail loudly.
 *
 * 1. Admission at accept time: connect() is the library's (public) entry for a new socket;
 *    wrapping it lets connection limits refuse a socket before any session work starts.
 * 2. Exact enhanced status codes. smtp-server derives the enhanced code from the reply code
 *    (550 is always 5.1.1, 554 is 5.6.0), but mail policy needs 550 5.7.1, 554 5.7.1, 452 4.5.3.
 *    A reply text that already starts with an enhanced code is sent without a derived one. The
 *    library's own 538 (AUTH before STARTTLS) becomes RFC 4954's 538 5.7.11, its 421 once the
 *    stop has begun says 4.3.2 like mailwire's other shutdown replies, its 421 for an over-long
 *    command line is a 500 (retrying cannot help), and with
 *    hideAuthBeforeTls its EHLO lists AUTH only once TLS is on (Postfix's smtpd_tls_auth_only).
 * 3. postscreen-style early-talker test. smtp-server holds every new connection 100 ms before
 *    its greeting to catch clients that talk first. A client that passed once is remembered
 *    (TrustedClients) and greeted at once on later connections.
 * 4. A handle to reply and close from outside a command (deadlines, shutdown, the command guard).
 * 5. Command interception for hooks (HELO/EHLO, DATA before its 354, RSET, unrecognised commands):
 *    smtp-server has no handler option for those, so _onCommand is wrapped per connection. The
 *    parser waits for a command's callback before reading the next line, so an asynchronous
 *    decision keeps pipelined commands in order.
 */
import type { Socket } from 'node:net';
import type { SMTPServer } from 'smtp-server';
import type { Logger } from '../log/logger.js';

const ENHANCED_PREFIX = /^[245]\.\d{1,3}\.\d{1,3} /;
// A refused socket gets its reply and this long to read it before it is destroyed.
const REFUSAL_LINGER_MS = 2000;

/** What mailwire needs from one client connection. */
export interface ConnectionHandle {
  /** smtp-server's session id (session.id in the handlers); '' when the internals are unknown. */
  id: string;
  readonly socket: Socket;
  readonly remoteAddress: string;
  /** Sends a final reply and closes the connection. */
  closeWith(code: number, text: string): void;
  /** Closes the connection without a reply (after a reply that asked for a disconnect). */
  close(): void;
  /** Sees each command line before smtp-server handles it (false: the internals are unknown). */
  interceptCommands(fn: CommandInterceptor): boolean;
  /** smtp-server has accepted STARTTLS and is upgrading the plain socket (false when unknown). */
  upgrading(): boolean;
}

export interface CommandInfo {
  /** Upper-case command name (first word). */
  name: string;
  line: string;
  /** smtp-server has a handler for it (false: it would answer 500 command not recognized). */
  known: boolean;
  /** HELO/EHLO was accepted earlier in the session. */
  greeted: boolean;
  /** Recipients accepted in the open transaction. */
  rcptCount: number;
}

/** A reply to send instead of handling the command ("enhanced text" in text). */
export interface InterceptReply {
  code: number;
  text: string;
  disconnect: boolean;
}

/** null (or a promise of null) lets smtp-server handle the command as usual. */
export type CommandInterceptor = (cmd: CommandInfo) => Promise<InterceptReply | null> | null;

interface InternalConnection {
  id: string;
  send(code: number, data: unknown, context?: unknown): void;
  close(): void;
  connectionReady?: (next?: () => void) => void;
  _onCommand?: (command: Buffer, callback?: () => void) => void;
  _isSupported?: (name: string) => boolean;
  _upgrading?: boolean;
  _ready?: boolean;
  _nextHandler?: unknown;
  secure?: boolean;
  hostNameAppearsAs?: string | false;
  session?: { envelope?: { rcptTo?: unknown[] } };
}

interface InternalServer {
  connect(socket: Socket, options?: unknown): void;
  connections: Set<InternalConnection>;
}

export interface ConnectionControlOptions {
  /** null admits the socket; a reply line refuses it. Called once per accepted socket. */
  admit(socket: Socket): string | null;
  /** Should this admitted connection skip the greeting delay? */
  fastTrack(remoteAddress: string): boolean;
  /** Called for every admitted connection, before the greeting, with the raw socket. */
  onConnection(conn: ConnectionHandle, fastTracked: boolean): void;
  /** AUTH needs TLS here: EHLO does not offer it on a connection without TLS. */
  hideAuthBeforeTls: boolean;
  logger: Logger;
}

export function installConnectionControl(server: SMTPServer, options: ConnectionControlOptions): void {
  const internal = server as unknown as InternalServer;
  if (typeof internal.connect !== 'function') {
    // Without the entry point nothing below can work; refuse to run without connection limits.
    throw new Error('smtp-server has no connect(): this version is not supported by mailwire');
  }
  const connect = internal.connect.bind(internal);
  let warned = false;
  const warnOnce = (what: string) => {
    if (warned) return;
    warned = true;
    options.logger.warn(`smtp-server internals changed (${what}): exact enhanced codes and the early-talker fast track are off`);
  };

  internal.connect = (socket: Socket, socketOptions?: unknown) => {
    const refusal = options.admit(socket);
    if (refusal) {
      socket.on('error', () => {});
      socket.end(`${refusal}\r\n`);
      setTimeout(() => socket.destroy(), REFUSAL_LINGER_MS).unref();
      return;
    }
    const before = internal.connections instanceof Set ? new Set(internal.connections) : null;
    connect(socket, socketOptions);
    // The new connection is the one that was not there before (by identity, not position).
    let conn: InternalConnection | undefined;
    if (before) for (const c of internal.connections) if (!before.has(c)) conn = c;
    if (!conn || typeof conn.send !== 'function' || typeof conn.close !== 'function') warnOnce('connections');
    else patchSend(conn, options.hideAuthBeforeTls);

    let fast = false;
    if (conn && typeof conn.connectionReady === 'function') {
      const ready = conn.connectionReady.bind(conn);
      let called = false;
      // init()'s timer will still call connectionReady after 100 ms: make the second call a no-op.
      conn.connectionReady = (next?: () => void) => {
        if (called) return;
        called = true;
        ready(next);
      };
      if (options.fastTrack(socket.remoteAddress ?? '')) {
        fast = true;
        const c = conn;
        setImmediate(() => c.connectionReady?.());
      }
    } else if (conn) warnOnce('connectionReady');

    options.onConnection(handleFor(socket, conn), fast);
  };
}

function handleFor(socket: Socket, conn: InternalConnection | undefined): ConnectionHandle {
  return {
    id: conn?.id ?? '',
    socket,
    remoteAddress: socket.remoteAddress ?? '',
    closeWith(code: number, text: string) {
      if (conn) {
        conn.send(code, text);
        conn.close();
      } else {
        // Public-API fallback: after STARTTLS the raw socket carries TLS records, so only
        // destroying it is safe there.
        socket.destroy();
      }
    },
    close() {
      if (conn) conn.close();
      else socket.end();
    },
    upgrading() {
      return conn?._upgrading === true;
    },
    interceptCommands(fn: CommandInterceptor): boolean {
      if (!conn || typeof conn._onCommand !== 'function' || typeof conn._isSupported !== 'function') return false;
      const c = conn;
      const handle = conn._onCommand.bind(conn);
      const isSupported = conn._isSupported.bind(conn);
      c._onCommand = (command: Buffer, callback?: () => void) => {
        // The library's own early exits (TLS handshake, greeting not sent, AUTH continuation) first.
        if (c._upgrading || !c._ready || c._nextHandler) return handle(command, callback);
        const line = (command || '').toString();
        const name = (line.split(' ')[0] ?? '').toUpperCase();
        const pending = fn({ name, line, known: isSupported(name), greeted: !!c.hostNameAppearsAs, rcptCount: c.session?.envelope?.rcptTo?.length ?? 0 });
        if (!pending) return handle(command, callback);
        pending.then(
          (reply) => {
            if (!reply) return handle(command, callback);
            c.send(reply.code, reply.text);
            if (reply.disconnect) c.close();
            else callback?.();
          },
          () => {
            c.send(451, '4.3.0 Temporary policy failure, try again later');
            callback?.();
          },
        );
      };
      return true;
    },
  };
}

function patchSend(conn: InternalConnection, hideAuthBeforeTls: boolean): void {
  const send = conn.send.bind(conn);
  conn.send = (code: number, data: unknown, context?: unknown) => {
    if (typeof data === 'string' && ENHANCED_PREFIX.test(data)) return send(code, data, false);
    if (code === 538) return send(538, '5.7.11 Encryption required for requested authentication mechanism', false);
    // The library's reply to every command once the stop has begun: the same words as
    // mailwire's own shutdown replies (smtp-server would derive 4.4.2 from the command).
    if (code === 421 && data === 'Server shutting down') return send(421, '4.3.2 Service shutting down, try again later', false);
    // A command line past smtp.limits.max_command_line ends the session (the library's parser
    // stops): a 421 would have the client send the same line again and again until its queue
    // gives up, so it is a permanent 500 (RFC 5321 4.5.3.1.4), as Postfix and Exim answer.
    if (code === 421 && data === 'Error: Command line too long') {
      send(500, '5.5.2 Error: command line too long', false);
      return conn.close(); // the library closes after a 421 only
    }
    // The EHLO reply: its greeting line, then one line per extension.
    if (hideAuthBeforeTls && code === 250 && Array.isArray(data) && !conn.secure) {
      return send(code, [data[0], ...data.slice(1).filter((line) => !/^AUTH\b/i.test(String(line)))], context);
    }
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
