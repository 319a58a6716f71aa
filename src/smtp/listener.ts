/**
 * The SMTP listeners (smtp-server is imported only in this folder): STARTTLS on the plain port,
 * an optional implicit-TLS port, connection limits, absolute deadlines, recipient and sender
 * policy while the client is connected, and DATA streamed into the durable spool.
 *
 * What happens to a spooled message (scoring, parsing, storing) is the caller's onMessage; this
 * module only turns its outcome into the final reply (see transaction.ts).
 */
import { hostname as osHostname } from 'node:os';
import type { AddressInfo, Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { SMTPServer, type SMTPServerAddress, type SMTPServerDataStream, type SMTPServerOptions, type SMTPServerSession } from 'smtp-server';
import type { Config } from '../config/schema.js';
import type { Envelope } from '../events/types.js';
import { isReply, type HookRunner, type HookSession } from '../hooks/runner.js';
import { newMessageId } from '../events/id.js';
import type { Logger } from '../log/logger.js';
import type { DomainPolicy, RcptDecision } from '../policy/domains.js';
import type { Spool, SpooledMessage } from '../spool/spool.js';
import { ConnectionAdmission } from './admission.js';
import type { TlsMaterial } from './certs.js';
import { BARE_NEWLINE_REPLY, CommandGuard } from './command-guard.js';
import { installConnectionControl, SmtpReplyError, type ConnectionHandle } from './connection-control.js';
import { receivedHeader } from './received-header.js';
import { CachingReverseResolver } from './reverse-dns.js';
import { runTransaction, type MessageOutcome, type Transaction, type TransactionPhase } from './transaction.js';
import { TrustedClients } from './trusted-clients.js';
import { addressParams, endTransaction, interceptCommand, replyError, sessionInfo, tlsInfo, type HookTls } from './session-hooks.js';

export type { MessageOutcome } from './transaction.js';

// Wrong AUTH attempts per SMTP session before 421: a person mistypes once or twice; a guesser
// must reconnect (and pass admission) every three tries. Keyed by smtp-server's session object.
const AUTH_FAILURES_PER_SESSION = 3;
const authFailures = new WeakMap<object, number>();

export interface SmtpDeps {
  config: Config;
  tls: TlsMaterial;
  logger: Logger;
  spool: Spool;
  policy(): DomainPolicy;
  /** Decides on a durably spooled message (eom hooks run there). Must not throw for expected outcomes. */
  onMessage(msg: SpooledMessage, hooks: HookSession | null): Promise<MessageOutcome>;
  /** Hook scripts per phase (src/hooks/); absent or empty: no hook work at all. */
  hooks?: HookRunner | null;
  /**
   * Checks AUTH credentials when smtp.auth.enabled (the password table, through the brute-force
   * brake shared with HTTP: 'throttled' refuses unchecked, docs/security.md).
   */
  authenticate?(user: string, password: string, remoteAddress: string): Promise<'ok' | 'invalid' | 'throttled'>;
  /** Outbound relaying (pipeline/outbound.ts); absent: every non-local recipient gets 554 5.7.1. */
  relay?: SmtpRelay | null;
}

/**
 * Relaying over SMTP: a client allowed to relay may send to one recipient that is not local per
 * transaction, never mixed with local recipients, so that its DATA reply can be exactly the
 * upstream's reply for that recipient.
 */
export interface SmtpRelay {
  /** The client's address is in relayhosts, or the session authenticated (user not null). */
  mayRelay(client: { remoteAddress: string; user: string | null }): boolean;
  /** The recipients table allows relaying to this address. */
  recipientAllowed(rcpt: string): boolean;
  /** Delivers a spooled relayed message; the outcome carries the upstream's reply. */
  deliver(msg: SpooledMessage, rcpt: string, hooks: HookSession | null): Promise<MessageOutcome>;
}

export interface SmtpAddresses {
  smtp: AddressInfo;
  smtps: AddressInfo | null;
}

/** Per connection: created at accept time, gone when the socket closes. */
interface ConnectionState {
  handle: ConnectionHandle;
  guard: CommandGuard;
  fastTracked: boolean;
  deadline: NodeJS.Timeout | null;
  /** The session deadline passed while a message was being processed: close after its reply. */
  expired: boolean;
  tls: { protocol: string; cipher: string } | null;
  transaction: { phase: TransactionPhase; run: Transaction } | null;
  /** Hooks of this session (a snapshot taken at connect), null when no hooks are configured. */
  hooks: HookSession | null;
  hookTls: HookTls | null;
  authMethod: string | null;
  /**
   * The relayed recipient of the open transaction. smtp-server makes a new envelope object at every
   * reset (MAIL after DATA, RSET, EHLO, STARTTLS), so the mark is valid only for the envelope it names.
   */
  relay: { envelope: object; rcpt: string } | null;
}

// RFC 5321 4.5.3.1.10: the client sends the recipients refused with 452 in a later transaction
// (Postfix does the same with its recipient limit). Used to keep a relayed recipient alone.
const TOO_MANY_RECIPIENTS: RcptDecision = { kind: 'reject', code: 452, enhanced: '4.5.3', message: 'Too many recipients' };

const POLL_MS = 50;
// The header block header/eoh/body hooks see (the DATA stream is parsed for them). Real header
// blocks are a few KiB; 1 MiB covers long Received chains and bounds the parsing work; a bigger
// block is refused (552 5.3.4) rather than passed with hooks unseen (fail closed).
const HOOK_MAX_HEADER_BYTES = 1024 * 1024;

export class SmtpListener {
  readonly hostname: string;
  #servers: SMTPServer[] = [];
  #connections = new Map<string, ConnectionState>(); // by session id
  #admission: ConnectionAdmission;
  /** Each admitted raw socket's admission slot release (see #admit). */
  readonly #slotReleases = new WeakMap<Socket, () => void>();
  #trusted: TrustedClients;
  #resolver: CachingReverseResolver;
  #addresses: SmtpAddresses | null = null;
  #stopping = false;

  constructor(private readonly deps: SmtpDeps) {
    const { smtp } = deps.config;
    this.hostname = smtp.hostname ?? osHostname();
    this.#admission = new ConnectionAdmission(smtp.limits);
    this.#trusted = new TrustedClients(smtp.early_talker.trust_ttl_s * 1000, smtp.early_talker.max_entries);
    this.#resolver = new CachingReverseResolver();
  }

  get addresses(): SmtpAddresses {
    if (!this.#addresses) throw new Error('SMTP listener not started');
    return this.#addresses;
  }

  async start(): Promise<SmtpAddresses> {
    const { smtp } = this.deps.config;
    const plain = this.#createServer(false);
    const smtpAddr = await listen(plain, smtp.port, smtp.host);
    let smtpsAddr: AddressInfo | null = null;
    if (smtp.tls_port !== null) smtpsAddr = await listen(this.#createServer(true), smtp.tls_port, smtp.host);
    this.#addresses = { smtp: smtpAddr, smtps: smtpsAddr };
    return this.#addresses;
  }

  /**
   * Graceful stop: no new connections; transactions in flight get the grace period to finish;
   * a client still sending DATA after it gets 421 (nothing was answered, nothing is lost);
   * messages already being processed get their reply and are stored; then everyone gets 421.
   */
  async stop(): Promise<void> {
    this.#stopping = true;
    const grace = this.deps.config.smtp.shutdown_grace_ms;
    const closed = this.#servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve())));
    await this.#waitUntil(() => !this.#hasTransaction(['receiving', 'processing', 'storing']), grace);
    for (const c of this.#connections.values()) {
      if (c.transaction?.phase === 'receiving') c.handle.closeWith(421, '4.3.2 Service shutting down, try again later');
    }
    await Promise.allSettled([...this.#connections.values()].map((c) => c.transaction?.run.done));
    for (const c of this.#connections.values()) c.handle.closeWith(421, '4.3.2 Service shutting down');
    for (const c of this.#connections.values()) if (c.deadline) clearTimeout(c.deadline);
    await Promise.race([Promise.all(closed), sleep(grace)]);
  }

  #hasTransaction(phases: TransactionPhase[]): boolean {
    for (const c of this.#connections.values()) if (c.transaction && phases.includes(c.transaction.phase)) return true;
    return false;
  }

  async #waitUntil(condition: () => boolean, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!condition() && Date.now() < deadline) await sleep(POLL_MS);
  }

  #createServer(implicitTls: boolean): SMTPServer {
    const { config, tls, logger } = this.deps;
    const { smtp } = config;
    const limits = smtp.limits;
    const options: SMTPServerOptions = {
      secure: implicitTls,
      name: this.hostname,
      banner: 'mailwire', // smtp-server writes "220 <name> ESMTP <banner>"
      key: tls.key,
      cert: tls.cert,
      minVersion: config.tls.min_version,
      hideSTARTTLS: implicitTls || !smtp.starttls,
      // smtp-server hides RFC 2034 enhanced codes by default; clients and tests rely on them.
      hideENHANCEDSTATUSCODES: false,
      // Off means off: hidden from EHLO is not enough, a client could still send STARTTLS.
      disabledCommands: [...(smtp.auth.enabled ? [] : ['AUTH']), ...(!implicitTls && !smtp.starttls ? ['STARTTLS'] : [])],
      allowInsecureAuth: !smtp.auth.require_tls,
      authOptional: true,
      authMethods: ['PLAIN', 'LOGIN'],
      // The library refuses bigger messages at the end of DATA with 552 5.3.4; the spool writer
      // stops writing to disk as soon as the limit is passed.
      size: limits.max_message_size,
      socketTimeout: limits.idle_timeout_ms,
      // A backstop only: stop() runs the shutdown itself and closes every session before this.
      closeTimeout: smtp.shutdown_grace_ms + config.spamd.timeout_ms + config.parse.parse_timeout_ms + 5000,
      maxAllowedUnauthenticatedCommands: false,
      // A backstop for admission (which refuses with a reply): sockets past this are dropped by
      // the kernel-facing server at once, so a flood cannot exhaust file descriptors.
      maxClients: limits.max_connections,
      disableReverseLookup: !smtp.reverse_lookup,
      resolver: this.#resolver,
      logger: false,
      onConnect: (session, cb) => this.#onConnect(session, cb),
      onSecure: (socket, session, cb) => this.#onSecure(socket as TLSSocket, session, cb),
      onAuth: (auth, session, cb) => {
        const check = this.deps.authenticate;
        const { username, password } = auth;
        if (smtp.auth.require_tls && !session.secure) {
          return cb(new SmtpReplyError(538, '5.7.11', 'Encryption required for requested authentication mechanism'));
        }
        // A session gets AUTH_FAILURES_PER_SESSION wrong tries, then 421 and the connection closes
        // (maxAllowedUnauthenticatedCommands is off, so nothing else would end a guessing loop).
        // A throttled attempt counts too: it is answered 454 4.7.0 (RFC 4954 6, try again later).
        const failed = (throttled: boolean): void => {
          const n = (authFailures.get(session) ?? 0) + 1;
          authFailures.set(session, n);
          if (n >= AUTH_FAILURES_PER_SESSION) return cb(new SmtpReplyError(421, '4.7.0', 'Too many failed authentication attempts, closing connection'));
          if (throttled) return cb(new SmtpReplyError(454, '4.7.0', 'Temporary authentication failure'));
          cb(new SmtpReplyError(535, '5.7.8', 'Authentication credentials invalid'));
        };
        if (!check || !username || !password) return failed(false);
        check(username, password, session.remoteAddress).then(
          (result) => {
            if (result !== 'ok') return failed(result === 'throttled');
            const state = this.#connections.get(session.id);
            if (state) state.authMethod = auth.method;
            state?.hooks?.update({ auth: { method: auth.method, user: username } });
            cb(null, { user: username });
          },
          () => cb(new SmtpReplyError(454, '4.7.0', 'Temporary authentication failure')),
        );
      },
      onMailFrom: (address, session, cb) => this.#onMailFrom(address, session, cb),
      onRcptTo: (address, session, cb) => this.#onRcptTo(address, session, cb),
      onData: (stream, session, cb) => this.#onData(stream, session, cb),
      onClose: (session) => this.#onClose(session),
    };
    // Passed through to the command parser: the longest accepted command line.
    (options as Record<string, unknown>).maxCommandLength = limits.max_command_line;
    const server = new SMTPServer(options);
    server.server.maxConnections = limits.max_connections + Math.max(10, Math.ceil(limits.max_connections / 10));
    // A TLS or socket error belongs to one client and must never take the process down; an
    // error of the listening socket itself (EMFILE on accept) is worth a warning.
    server.on('error', (err: Error & { code?: string; remote?: string }) => {
      if (err.remote) logger.debug({ err: err.message, code: err.code }, 'smtp connection error');
      else logger.warn({ err: err.message, code: err.code }, 'smtp server error');
    });
    installConnectionControl(server, {
      logger,
      hideAuthBeforeTls: smtp.auth.enabled && smtp.auth.require_tls,
      admit: (socket) => this.#admit(socket),
      fastTrack: (address) => this.#trusted.has(address),
      onConnection: (handle, fast) => this.#onConnection(handle, fast, implicitTls),
    });
    this.#servers.push(server);
    return server;
  }

  #admit(socket: Socket): string | null {
    if (this.#stopping) return '421 4.3.2 Service shutting down, try again later';
    const admission = this.#admission.admit(socket.remoteAddress ?? '');
    if (admission.kind === 'refuse') return admission.reply;
    // Released once, by whichever comes first: smtp-server's onClose for the session, which
    // follows the connection through STARTTLS, or the raw socket's 'close'. The latter alone is
    // not enough: STARTTLS removes every listener from the raw socket (smtp-server's upgrade()),
    // so each STARTTLS session used to keep its slot until the restart.
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      this.#admission.release(admission.key);
    };
    socket.once('close', release);
    this.#slotReleases.set(socket, release);
    return null;
  }

  #onConnection(handle: ConnectionHandle, fastTracked: boolean, implicitTls: boolean): void {
    const guard = new CommandGuard(
      () => {
        this.deps.logger.info({ session: handle.id, ip: handle.remoteAddress }, 'bare CR or LF in a command; closing');
        handle.closeWith(500, BARE_NEWLINE_REPLY.slice(4));
      },
      () => handle.upgrading(),
    );
    // Listening before smtp-server's own reader sees the bytes: the guard taints the session
    // before any command of the offending chunk reaches a handler.
    handle.socket.prependListener('data', (chunk: Buffer) => guard.inspect(chunk));
    const state: ConnectionState = { handle, guard, fastTracked, deadline: null, expired: false, tls: null, transaction: null, hooks: null, hookTls: null, authMethod: null, relay: null };
    if (handle.id) this.#connections.set(handle.id, state);
    if (this.deps.hooks && !this.deps.hooks.empty) {
      const intercepted = handle.interceptCommands((cmd) => (state.hooks && !state.guard.tainted ? interceptCommand(state.hooks, cmd) : null));
      if (!intercepted) this.deps.logger.warn('smtp-server internals changed: helo, data, abort-on-RSET and unknown hooks cannot run');
    }
    if (implicitTls) guard.resumeOnTls();
  }

  #onConnect(session: SMTPServerSession, cb: (err?: Error | null) => void): void {
    const state = this.#connections.get(session.id);
    // Idempotent, whatever path the library takes to the greeting.
    if (!state || state.deadline) return cb();
    // Reaching the greeting without talking first passes the early-talker test.
    if (!state.fastTracked) this.#trusted.add(session.remoteAddress);
    // Absolute session deadline: the idle timeout alone lets a trickling client stay forever.
    state.deadline = setTimeout(() => {
      this.deps.logger.info({ session: session.id, ip: session.remoteAddress }, 'session time limit reached');
      // A message being processed gets its reply first (a 421 now would make the client send it again).
      if (state.transaction && state.transaction.phase !== 'receiving') state.expired = true;
      else state.handle.closeWith(421, '4.4.2 Session time limit exceeded, closing connection');
    }, this.deps.config.smtp.limits.session_timeout_ms);
    state.deadline.unref();
    const runner = this.deps.hooks;
    if (!runner || runner.empty) return cb();
    const hooks = (state.hooks = runner.session(sessionInfo(session, state.hookTls, state.authMethod)));
    if (!hooks.has('connect')) return cb();
    // A refused greeting closes the connection (smtp-server sends the error instead of 220).
    void hooks.run('connect').then((r) => cb(isReply(r) ? replyError(r) : null));
  }

  #onSecure(socket: TLSSocket, session: SMTPServerSession, cb: (err?: Error | null) => void): void {
    const state = this.#connections.get(session.id);
    const cipher = socket.getCipher?.();
    if (state) {
      state.tls = { protocol: socket.getProtocol?.() ?? cipher?.version ?? 'unknown', cipher: cipher?.standardName ?? cipher?.name ?? 'unknown' };
      state.hookTls = tlsInfo(socket, state.tls.protocol, state.tls.cipher);
      // STARTTLS resets the session (RFC 3207 4.2): an open transaction is aborted. Both happen
      // now, before the next command (abort hooks run on the ended transaction meanwhile).
      if (state.hooks) {
        void endTransaction(state.hooks);
        state.hooks.update({ tls: state.hookTls, helo: '' });
      }
      if (socket !== state.handle.socket) {
        socket.prependListener('data', (chunk: Buffer) => state.guard.inspect(chunk));
        state.guard.resumeOnTls();
      }
    }
    cb();
  }

  #onMailFrom(address: SMTPServerAddress, session: SMTPServerSession, cb: (err?: Error | null) => void): void {
    this.#policyStep(session, cb, () => this.deps.policy().checkSender(address.address), (hooks) => {
      const params = addressParams(address);
      if (!hooks.has('mail')) {
        hooks.setMailFrom(params);
        return cb();
      }
      void hooks.run('mail', { address: params }).then((r) => {
        if (isReply(r)) return this.#refuse(session, cb, r);
        hooks.setMailFrom(params);
        cb();
      });
    });
  }

  /** A hook's reject or tempfail as the command's reply, then the disconnect it asked for. */
  #refuse(session: SMTPServerSession, cb: (err?: Error | null) => void, r: Parameters<typeof replyError>[0]): void {
    cb(replyError(r));
    if (r.disconnect) this.#connections.get(session.id)?.handle.close();
  }

  /**
   * Runs a policy decision for MAIL or RCPT: tainted sessions are refused, errors fail closed.
   * When the policy accepts, `hooks` (if given and the session has hooks) decides and answers.
   */
  #policyStep(session: SMTPServerSession, cb: (err?: Error | null) => void, decide: () => RcptDecision, hooks?: (h: HookSession) => void): void {
    if (this.#connections.get(session.id)?.guard.tainted) return cb(new SmtpReplyError(500, '5.5.2', 'Bare CR or LF in a command is not allowed'));
    let decision: RcptDecision;
    try {
      decision = decide();
    } catch (err) {
      this.deps.logger.error({ err }, 'policy check failed');
      return cb(new SmtpReplyError(451, '4.3.0', 'Temporary policy failure, try again later'));
    }
    if (decision.kind === 'reject') return cb(new SmtpReplyError(decision.code, decision.enhanced, decision.message));
    const sessionHooks = this.#connections.get(session.id)?.hooks;
    if (hooks && sessionHooks) return hooks(sessionHooks);
    cb();
  }

  #onRcptTo(address: SMTPServerAddress, session: SMTPServerSession, cb: (err?: Error | null) => void): void {
    if (session.envelope.rcptTo.length >= this.deps.config.smtp.limits.max_recipients) {
      return cb(new SmtpReplyError(452, '4.5.3', 'Too many recipients'));
    }
    const state = this.#connections.get(session.id);
    let relayed = false;
    const decide = (): RcptDecision => {
      const decision = this.#rcptDecision(address.address, session, state);
      relayed = decision.relayed;
      return decision.decision;
    };
    // The relay mark is set only once the recipient is accepted (after its rcpt hooks).
    const done = (err?: Error | null) => {
      if (!err && relayed && state) state.relay = { envelope: session.envelope, rcpt: address.address };
      cb(err);
    };
    this.#policyStep(session, done, decide, (hooks) => {
      const params = addressParams(address);
      if (!hooks.has('rcpt')) {
        hooks.addRecipient(params);
        return done();
      }
      void hooks.run('rcpt', { address: params }).then((r) => {
        if (isReply(r)) return this.#refuse(session, done, r);
        hooks.addRecipient(params);
        done();
      });
    });
  }

  /**
   * The local policy decides first. A recipient it refuses as not ours (554 5.7.1) may be relayed
   * when the session may relay and the recipients table allows the address; a relayed recipient
   * stays alone in its transaction (452 4.5.3 for anything added next to it).
   */
  #rcptDecision(rcpt: string, session: SMTPServerSession, state: ConnectionState | undefined): { decision: RcptDecision; relayed: boolean } {
    const local = this.deps.policy().checkRecipient(rcpt);
    const current = state?.relay && state.relay.envelope === session.envelope ? state.relay : null;
    if (local.kind === 'accept') return { decision: current ? TOO_MANY_RECIPIENTS : local, relayed: false };
    const relay = this.deps.relay;
    if (!local.nonLocal || !relay || !state) return { decision: local, relayed: false };
    const user = typeof session.user === 'string' && session.user ? session.user : null;
    if (!relay.mayRelay({ remoteAddress: session.remoteAddress, user })) return { decision: local, relayed: false };
    // The recipients table refuses the address: the local refusal stands (554 5.7.1 Relay access
    // denied, as Postfix answers for a destination it does not relay to). The same answer as for
    // a client that may not relay: by default every loopback client is in relayhosts, and which
    // table refused is the operator's business (the recipients table), not the client's.
    if (!relay.recipientAllowed(rcpt)) return { decision: local, relayed: false };
    // The same address again replaces the earlier RCPT (smtp-server): still one recipient.
    const again = current !== null && current.rcpt.toLowerCase() === rcpt.toLowerCase();
    if (session.envelope.rcptTo.length > 0 && !again) return { decision: TOO_MANY_RECIPIENTS, relayed: false };
    return { decision: { kind: 'accept' }, relayed: true };
  }

  #onData(stream: SMTPServerDataStream, session: SMTPServerSession, cb: (err?: Error | null, message?: string) => void): void {
    const { config, spool, logger } = this.deps;
    const { smtp } = config;
    const state = this.#connections.get(session.id);
    if (!state || state.guard.tainted) {
      // No state means the connection control could not follow this session: fail closed.
      stream.resume();
      return cb(new SmtpReplyError(451, '4.3.0', 'Local error in processing, try again later'));
    }
    const id = newMessageId();
    const receivedAt = new Date();
    const envelope = this.#envelope(session, state);
    const relay = this.deps.relay;
    const relayRcpt = relay && state.relay?.envelope === session.envelope ? state.relay.rcpt : null;
    state.hooks?.beginMessage(id, receivedAt);
    state.guard.setDataMode(true);
    stream.once('end', () => state.guard.setDataMode(false));
    const run = runTransaction(stream, cb, {
      id,
      sessionId: session.id,
      envelope,
      receivedAt,
      traceHeader: receivedHeader({ id, hostname: this.hostname, envelope, protocol: session.transmissionType ?? 'ESMTP', date: receivedAt }),
      maxSize: smtp.limits.max_message_size,
      dataTimeoutMs: smtp.limits.data_timeout_ms,
      bareNewline: smtp.bare_newline,
      spool,
      logger,
      // A relayed message goes to the upstream (its reply is the client's); local mail to the pipeline.
      onMessage: relay && relayRcpt ? (msg) => relay.deliver(msg, relayRcpt, state.hooks) : (msg) => this.deps.onMessage(msg, state.hooks),
      ...(relayRcpt ? { relay: { rcpt: relayRcpt } } : {}),
      hooks: state.hooks,
      hookLimits: { maxHeaderBytes: HOOK_MAX_HEADER_BYTES, maxHeaders: config.parse.max_headers },
      closeWith: (code, text) => state.handle.closeWith(code, text),
      close: () => state.handle.close(),
      onPhase: (phase) => {
        if (state.transaction) state.transaction.phase = phase;
        if (phase !== 'storing' && phase !== 'done') return;
        // The reply is out: a session deadline that passed meanwhile takes effect now.
        if (state.expired) state.handle.closeWith(421, '4.4.2 Session time limit exceeded, closing connection');
      },
    });
    state.transaction = { phase: 'receiving', run };
    void run.done.then(() => {
      if (state.transaction?.run === run) state.transaction = null;
    });
  }

  #envelope(session: SMTPServerSession, state: ConnectionState): Envelope {
    const user = session.user as unknown;
    return {
      mailFrom: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
      rcptTo: session.envelope.rcptTo.map((r) => r.address),
      remoteAddress: session.remoteAddress,
      remotePort: session.remotePort,
      clientHostname: session.clientHostname || '',
      helo: session.hostNameAppearsAs || '',
      tls: state.tls,
      auth: typeof user === 'string' && user ? { user } : null,
    };
  }

  #onClose(session: SMTPServerSession): void {
    const state = this.#connections.get(session.id);
    if (!state) return;
    this.#slotReleases.get(state.handle.socket)?.();
    if (state.deadline) clearTimeout(state.deadline);
    // The client went away mid-DATA: nothing was answered, nothing is kept. A message already
    // being processed or stored carries on (it may have been answered 250).
    const midMessage = state.transaction?.phase === 'receiving';
    state.transaction?.run.abandon();
    const hooks = state.hooks;
    if (hooks) {
      // abort for an open transaction the client left (not for a message already complete), then close.
      const aborted = hooks.inTransaction && (!state.transaction || midMessage);
      void (aborted ? endTransaction(hooks) : Promise.resolve()).then(() => hooks.run('close'));
    }
    const forget = () => this.#connections.delete(session.id);
    if (state.transaction) void state.transaction.run.done.then(forget);
    else forget();
  }
}

function listen(server: SMTPServer, port: number, host: string): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    server.server.once('error', onError);
    server.listen(port, host, () => {
      server.server.off('error', onError);
      resolve(server.server.address() as AddressInfo);
    });
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
