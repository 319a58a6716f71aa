/**
 * The SMTP side of hooks (src/hooks/): turns smtp-server's session into the transport-neutral
 * SessionInfo, runs the phases smtp-server has no handler for (HELO/EHLO, DATA before its 354,
 * RSET's abort, unrecognised commands) through the connection's command interceptor, and maps
 * a phase result to an SMTP reply.
 */
import type { TLSSocket } from 'node:tls';
import type { SMTPServerAddress, SMTPServerSession } from 'smtp-server';
import type { AddressParams, SessionInfo } from '../hooks/api.js';
import { isReply, type HookSession, type PhaseResult, type ReplyResult } from '../hooks/runner.js';
import { SmtpReplyError, type CommandInfo, type InterceptReply } from './connection-control.js';

export type HookTls = NonNullable<SessionInfo['tls']>;

export function sessionInfo(session: SMTPServerSession, tls: HookTls | null, authMethod: string | null): SessionInfo {
  const user = session.user as unknown;
  return {
    id: session.id,
    transport: 'smtp',
    remoteAddress: session.remoteAddress,
    remotePort: session.remotePort,
    clientHostname: session.clientHostname || '',
    helo: session.hostNameAppearsAs || '',
    tls,
    auth: typeof user === 'string' && user ? { method: authMethod ?? 'unknown', user } : null,
  };
}

/** TLS facts for hooks: protocol, cipher, its strength, and the client certificate if one was presented. */
export function tlsInfo(socket: TLSSocket, protocol: string, cipher: string): HookTls {
  // getCipher() has no key size; the standard names carry it (AES_128, AES_256, CHACHA20 is 256).
  const m = /AES_?(128|256)|CAMELLIA_?(128|256)/i.exec(cipher);
  const bits = m ? Number(m[1] ?? m[2]) : /CHACHA20/i.test(cipher) ? 256 : null;
  let peerSubject: string | null = null;
  let peerIssuer: string | null = null;
  try {
    const cert = socket.getPeerCertificate?.();
    if (cert && Object.keys(cert).length) {
      peerSubject = dn(cert.subject);
      peerIssuer = dn(cert.issuer);
    }
  } catch {
    // No certificate: leave both null.
  }
  return { protocol, cipher, bits, peerSubject, peerIssuer };
}

function dn(name: Record<string, string | string[] | undefined> | undefined): string | null {
  if (!name) return null;
  return Object.entries(name)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}=${Array.isArray(v) ? v.join('+') : v}`)
    .join(', ');
}

export function addressParams(address: SMTPServerAddress): AddressParams {
  const args: Record<string, string | true> = {};
  const raw = address.args as unknown;
  if (raw && typeof raw === 'object') {
    for (const [k, v] of Object.entries(raw as Record<string, unknown>)) args[k.toUpperCase()] = typeof v === 'string' ? v : true;
  }
  return { address: address.address, args };
}

export function replyError(r: ReplyResult): SmtpReplyError {
  return new SmtpReplyError(r.code, r.enhanced, r.message);
}

function interceptReply(r: PhaseResult): InterceptReply | null {
  return isReply(r) ? { code: r.code, text: `${r.enhanced} ${r.message}`, disconnect: r.disconnect } : null;
}

/**
 * Decides, for one command line, whether hooks run before smtp-server handles it. Returns null
 * (synchronously) in the common case, so a command without hooks costs no promise.
 */
export function interceptCommand(hooks: HookSession, cmd: CommandInfo): Promise<InterceptReply | null> | null {
  switch (cmd.name) {
    case 'HELO':
    case 'EHLO': {
      const parts = cmd.line.trim().split(/\s+/);
      // A syntax error gets the library's 501 and changes nothing.
      if (parts.length !== 2) return null;
      const helo = parts[1]!.toLowerCase();
      if (!hooks.has('helo') && !(hooks.inTransaction && hooks.has('abort'))) {
        // HELO/EHLO resets the transaction (RFC 5321 4.1.4).
        hooks.resetTransaction();
        hooks.update({ helo });
        return null;
      }
      return (async () => {
        await endTransaction(hooks);
        const previous = hooks.info.helo;
        hooks.update({ helo });
        const r = await hooks.run('helo');
        if (isReply(r)) hooks.update({ helo: previous });
        return interceptReply(r);
      })();
    }
    case 'RSET':
      // The reply waits for the abort hooks (if any); the session is clean at once either way.
      if (!hooks.inTransaction || !hooks.has('abort')) {
        hooks.resetTransaction();
        return null;
      }
      return endTransaction(hooks).then(() => null);
    case 'DATA':
      // Without a greeting or a recipient the library answers 503; DATA hooks see real DATA only.
      if (!cmd.greeted || cmd.rcptCount === 0 || !hooks.has('data')) return null;
      return hooks.run('data').then(interceptReply);
    default:
      if (cmd.known || !hooks.has('unknown')) return null;
      return hooks.run('unknown', { command: cmd.line }).then(interceptReply);
  }
}

/**
 * An open transaction that ends without a message: the envelope is clean at once (a command
 * sent while the abort hooks run cannot abort the same transaction twice), then the abort phase.
 */
export function endTransaction(hooks: HookSession): Promise<void> {
  return hooks.endTransaction();
}
