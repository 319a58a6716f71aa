/**
 * The SMTP listeners (smtp-server is imported only in this folder): STARTTLS on the plain port,
 * an optional implicit-TLS port, connection limits, absolute deadlines, recipient and sender
 * policy while the client is connected, and DATA streamed into the durable spool.
 *
 * What happens to a spooled message (scoring, parsing, storing) is the caller's onMessage; this
 * module only turns its outcome into the final reply.
 */
import { hostname as osHostname } from 'node:os';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { SMTPServer, type SMTPServerAddress, type SMTPServerDataStream, type SMTPServerOptions, type SMTPServerSession } from 'smtp-server';
import type { Config } from '../config/schema.js';
import type { Envelope } from '../events/types.js';
import { newMessageId } from '../events/id.js';
import type { Logger } from '../log/logger.js';
import type { DomainPolicy } from '../policy/domains.js';
import type { Spool, SpooledMessage, SpoolWriter } from '../spool/spool.js';
import type { TlsMaterial } from './certs.js';
import { installConnectionControl, SmtpReplyError, type ConnectionHandle } from './connection-control.js';
import { receivedHeader } from './received-header.js';
import { TrustedClients } from './trusted-clients.js';

export type MessageOutcome =
  | { kind: 'accept'; afterReply(): Promise<void> }
  | { kind: 'reject'; code: number; enhanced: string; message: string };

export interface SmtpDeps {
  config: Config;
  tls: TlsMaterial;
  logger: Logger;
  spool: Spool;
  policy(): DomainPolicy;
  /** Decides on a durably spooled message. Must not throw for expected outcomes. */
  onMessage(msg: SpooledMessage): Promise<MessageOutcome>;
  /** Checks AUTH credentials when smtp.auth.enabled (the password table, later issues). */
  authenticate?(user: string, password: string): Promise<boolean>;
}

export interface SmtpAddresses {
  smtp: AddressInfo;
  smtps: AddressInfo | null;
}

interface SessionState {
  conn: ConnectionHandle | undefined;
  deadline: NodeJS.Timeout | null;
  tls: { protocol: string; cipher: string } | null;
  writer: SpoolWriter | null;
}

export class SmtpListener {
  readonly hostname: string;
  #servers: SMTPServer[] = [];
  #sessions = new Map<string, SessionState>();
  #perIp = new Map<string, number>();
  #total = 0;
  #trusted: TrustedClients;
  #connsById = new Map<string, ConnectionHandle>();
  #addresses: SmtpAddresses | null = null;
  // Connections that went through the full early-talker wait; reaching onConnect means they passed.
  #pendingTrust = new Set<string>();
  // Commits of messages already answered 250, awaited by stop().
  #storing = new Set<Promise<void>>();

  constructor(private readonly deps: SmtpDeps) {
    const { smtp } = deps.config;
    this.hostname = smtp.hostname ?? osHostname();
    this.#trusted = new TrustedClients(smtp.early_talker.trust_ttl_s * 1000, smtp.early_talker.max_entries);
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
    if (smtp.tls_port !== null) {
      const implicit = this.#createServer(true);
      smtpsAddr = await listen(implicit, smtp.tls_port, smtp.host);
    }
    this.#addresses = { smtp: smtpAddr, smtps: smtpsAddr };
    return this.#addresses;
  }

  /** Stops accepting; sessions get the grace period to finish, then 421. */
  async stop(): Promise<void> {
    await Promise.all(this.#servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
    for (const state of this.#sessions.values()) if (state.deadline) clearTimeout(state.deadline);
    // Messages already answered 250 finish storing before the store closes (the spool would
    // recover them anyway, but a clean stop should leave nothing to recover).
    await Promise.allSettled([...this.#storing]);
  }


  #createServer(implicitTls: boolean): SMTPServer {
    const { config, tls, logger } = this.deps;
    const { smtp } = config;
    const limits = smtp.limits;
    const authEnabled = smtp.auth.enabled;
    const options: SMTPServerOptions = {
      secure: implicitTls,
      name: this.hostname,
      banner: 'mailwire ESMTP',
      key: tls.key,
      cert: tls.cert,
      minVersion: config.tls.min_version,
      hideSTARTTLS: implicitTls || !smtp.starttls,
      // smtp-server hides RFC 2034 enhanced codes by default; clients and tests rely on them.
      hideENHANCEDSTATUSCODES: false,
      disabledCommands: authEnabled ? [] : ['AUTH'],
      allowInsecureAuth: !smtp.auth.require_tls,
      authOptional: true,
      authMethods: ['PLAIN', 'LOGIN'],
      // The library refuses bigger messages at the end of DATA with 552 5.3.4; the spool writer
      // stops writing to disk as soon as the limit is passed.
      size: limits.max_message_size,
      socketTimeout: limits.idle_timeout_ms,
      closeTimeout: smtp.shutdown_grace_ms,
      maxAllowedUnauthenticatedCommands: false,
      logger: false,
      onConnect: (session, cb) => this.#onConnect(session, cb),
      onSecure: (socket, session, cb) => this.#onSecure(socket as TLSSocket, session, cb),
      onAuth: (auth, _session, cb) => {
        const check = this.deps.authenticate;
        const { username, password } = auth;
        if (!check || !username || !password) {
          return cb(new SmtpReplyError(535, '5.7.8', 'Authentication credentials invalid'));
        }
        check(username, password).then(
          (ok) => (ok ? cb(null, { user: username }) : cb(new SmtpReplyError(535, '5.7.8', 'Authentication credentials invalid'))),
          () => cb(new SmtpReplyError(454, '4.7.0', 'Temporary authentication failure')),
        );
      },
      onMailFrom: (address, session, cb) => this.#onMailFrom(address, session, cb),
      onRcptTo: (address, session, cb) => this.#onRcptTo(address, session, cb),
      onData: (stream, session, cb) => this.#onData(stream, session, cb),
      onClose: (session) => this.#onClose(session),
    };
    // Passed through to net/tls: the maximum accepted line length in command mode.
    (options as Record<string, unknown>).maxCommandLength = limits.max_command_line;
    const server = new SMTPServer(options);
    // A TLS or socket error belongs to one client; it must never take the process down.
    server.on('error', (err: Error & { code?: string }) => logger.debug({ err: err.message, code: err.code }, 'smtp connection error'));
    installConnectionControl(server, {
      logger,
      fastTrack: (address) => this.#trusted.has(address),
      onConnection: (conn, fast) => {
        this.#connsById.set(conn.id, conn);
        if (!fast) this.#pendingTrust.add(conn.id);
      },
    });
    this.#servers.push(server);
    return server;
  }


  #onConnect(session: SMTPServerSession, cb: (err?: Error | null) => void): void {
    const { limits } = this.deps.config.smtp;
    const ip = session.remoteAddress;
    const conn = this.#connsById.get(session.id);
    if (this.#pendingTrust.delete(session.id)) this.#trusted.add(ip);
    if (this.#total >= limits.max_connections) {
      return cb(new SmtpReplyError(421, '4.7.0', 'Too many connections, try again later'));
    }
    const fromIp = this.#perIp.get(ip) ?? 0;
    if (fromIp >= limits.max_connections_per_ip) {
      return cb(new SmtpReplyError(421, '4.7.0', 'Too many connections from your address, try again later'));
    }
    this.#total++;
    this.#perIp.set(ip, fromIp + 1);
    const state: SessionState = { conn, deadline: null, tls: null, writer: null };
    // Absolute session deadline: the idle timeout alone lets a trickling client stay forever.
    state.deadline = setTimeout(() => {
      this.deps.logger.info({ session: session.id, ip }, 'session time limit reached');
      conn?.send(421, '4.4.2 Session time limit exceeded, closing connection');
    }, limits.session_timeout_ms);
    state.deadline.unref();
    this.#sessions.set(session.id, state);
    cb();
  }

  #onSecure(socket: TLSSocket, session: SMTPServerSession, cb: (err?: Error | null) => void): void {
    const state = this.#sessions.get(session.id);
    const cipher = socket.getCipher?.();
    const tls = { protocol: socket.getProtocol?.() ?? cipher?.version ?? 'unknown', cipher: cipher?.standardName ?? cipher?.name ?? 'unknown' };
    // onConnect has run already, for STARTTLS and implicit TLS alike.
    if (state) state.tls = tls;
    cb();
  }


  #onMailFrom(address: SMTPServerAddress, _session: SMTPServerSession, cb: (err?: Error | null) => void): void {
    const decision = this.deps.policy().checkSender(address.address);
    if (decision.kind === 'reject') return cb(new SmtpReplyError(decision.code, decision.enhanced, decision.message));
    cb();
  }

  #onRcptTo(address: SMTPServerAddress, session: SMTPServerSession, cb: (err?: Error | null) => void): void {
    if (session.envelope.rcptTo.length >= this.deps.config.smtp.limits.max_recipients) {
      return cb(new SmtpReplyError(452, '4.5.3', 'Too many recipients'));
    }
    let decision;
    try {
      decision = this.deps.policy().checkRecipient(address.address);
    } catch (err) {
      // Policy fails closed.
      this.deps.logger.error({ err }, 'recipient policy failed');
      return cb(new SmtpReplyError(451, '4.3.0', 'Temporary policy failure, try again later'));
    }
    if (decision.kind === 'reject') return cb(new SmtpReplyError(decision.code, decision.enhanced, decision.message));
    cb();
  }

  #onData(stream: SMTPServerDataStream, session: SMTPServerSession, cb: (err?: Error | null, message?: string) => void): void {
    const { config, spool, logger } = this.deps;
    const { smtp } = config;
    const state = this.#sessions.get(session.id);
    const id = newMessageId();
    const receivedAt = new Date();
    const envelope = this.#envelope(session, state);
    const writer = spool.writer(id, {
      maxSize: smtp.limits.max_message_size,
      bareNewline: smtp.bare_newline,
      prefix: receivedHeader({ id, hostname: this.hostname, envelope, protocol: session.transmissionType ?? 'ESMTP', date: receivedAt }),
    });
    if (state) state.writer = writer;
    let answered = false;
    const reply = (err: Error | null, message?: string) => {
      if (answered) return;
      answered = true;
      clearTimeout(dataDeadline);
      if (state) state.writer = null;
      cb(err, message);
    };
    // Absolute DATA deadline: a client sending one byte a minute would otherwise hold the slot.
    const dataDeadline = setTimeout(() => {
      logger.info({ session: session.id, id }, 'DATA time limit reached');
      writer.destroy();
      void spool.discard(id);
      answered = true;
      state?.conn?.send(421, '4.4.2 DATA time limit exceeded, closing connection');
    }, smtp.limits.data_timeout_ms);
    dataDeadline.unref();

    const fail = (err: Error) => {
      logger.error({ err, id }, 'spooling failed');
      writer.destroy();
      void spool.discard(id);
      reply(new SmtpReplyError(451, '4.3.0', 'Local error in processing, try again later'));
    };
    stream.on('error', fail);
    writer.on('error', fail);
    writer.on('finish', () => {
      const outcome = writer.outcome();
      if (outcome.kind !== 'ok') {
        const err =
          outcome.kind === 'too-big'
            ? new SmtpReplyError(552, '5.3.4', `Message size exceeds fixed maximum message size ${smtp.limits.max_message_size}`)
            : new SmtpReplyError(550, '5.5.2', 'Message contains bare CR or LF (RFC 5321 2.3.8), not accepted');
        // One line per message outcome, refused ones included.
        logger.info({ id, session: session.id, ip: envelope.remoteAddress, from: envelope.mailFrom, rcpts: envelope.rcptTo.length, result: `rejected-${outcome.kind}` }, 'message');
        // Discard before replying, so nothing of a refused message outlives the reply.
        return void spool.discard(id).finally(() => reply(err));
      }
      spool
        .commit(writer, outcome.size, outcome.sha256, envelope, receivedAt.toISOString())
        .then((msg) => this.#decide(msg, reply))
        .catch(fail);
    });
    stream.pipe(writer);
  }

  async #decide(msg: SpooledMessage, reply: (err: Error | null, message?: string) => void): Promise<void> {
    const { spool, logger } = this.deps;
    let outcome: MessageOutcome;
    try {
      outcome = await this.deps.onMessage(msg);
    } catch (err) {
      // Broken infrastructure (spool unreadable, disk full): nothing was answered yet, so drop
      // the spool entry and have the client retry later.
      logger.error({ err, id: msg.id }, 'message processing failed');
      await spool.release(msg).catch(() => {});
      return reply(new SmtpReplyError(451, '4.3.0', 'Local error in processing, try again later'));
    }
    if (outcome.kind === 'reject') {
      await spool.release(msg).catch(() => {});
      return reply(new SmtpReplyError(outcome.code, outcome.enhanced, outcome.message));
    }
    reply(null, `2.0.0 Ok: queued as ${msg.id}`);
    const storing = outcome
      .afterReply()
      .catch((err) => logger.error({ err, id: msg.id }, 'storing an accepted message failed; it stays in the spool'))
      .finally(() => this.#storing.delete(storing));
    this.#storing.add(storing);
  }

  #envelope(session: SMTPServerSession, state: SessionState | undefined): Envelope {
    const user = session.user as unknown;
    return {
      mailFrom: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
      rcptTo: session.envelope.rcptTo.map((r) => r.address),
      remoteAddress: session.remoteAddress,
      remotePort: session.remotePort,
      clientHostname: session.clientHostname || '',
      helo: session.hostNameAppearsAs || '',
      tls: state?.tls ?? null,
      auth: typeof user === 'string' && user ? { user } : null,
    };
  }

  #onClose(session: SMTPServerSession): void {
    this.#connsById.delete(session.id);
    this.#pendingTrust.delete(session.id);
    const state = this.#sessions.get(session.id);
    if (!state) return;
    this.#sessions.delete(session.id);
    if (state.deadline) clearTimeout(state.deadline);
    if (state.writer && !state.writer.writableFinished) {
      // The client went away mid-DATA: nothing was answered, nothing is kept.
      const id = state.writer.id;
      state.writer.destroy();
      void this.deps.spool.discard(id);
    }
    // A session has state only once onConnect counted it.
    this.#total--;
    const n = (this.#perIp.get(session.remoteAddress) ?? 1) - 1;
    if (n <= 0) this.#perIp.delete(session.remoteAddress);
    else this.#perIp.set(session.remoteAddress, n);
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
