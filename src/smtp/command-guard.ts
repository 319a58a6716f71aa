/**
 * RFC 5321 2.3.8 and 4.1.1.4 for commands: a command ends with CRLF, and a lone CR or LF is a
 * protocol violation. smtp-server splits commands on LF alone, so a client (or an attacker
 * probing for smuggling differentials) could send "MAIL FROM:<a>\nRCPT TO:<b>\n". This guard
 * watches the bytes of a connection outside DATA (DATA has its own check in the spool) and
 * marks the session tainted on the first bare CR or LF; the handlers then refuse everything
 * and the connection is closed, as Postfix does with smtpd_forbid_bare_newline = yes.
 */
import { LineEndingScanner } from '../spool/line-endings.js';

export const BARE_NEWLINE_REPLY = '500 5.5.2 Bare CR or LF in a command is not allowed (RFC 5321 2.3.8)';

export class CommandGuard {
  #scanner = new LineEndingScanner();
  #dataMode = false;
  #stopped = false;
  #pending = '';
  tainted = false;

  constructor(private readonly onViolation: () => void) {}

  /** Feeds bytes the client sent (plain socket, or the TLS socket after STARTTLS). */
  inspect(chunk: Buffer): void {
    if (this.#stopped || this.tainted || this.#dataMode) return;
    this.#scanner.scan(chunk, false);
    if (this.#scanner.bare) {
      this.tainted = true;
      this.onViolation();
      return;
    }
    this.#watchForStartTls(chunk);
  }

  /** DATA content is checked by the spool; the listener switches the guard off meanwhile. */
  setDataMode(on: boolean): void {
    this.#dataMode = on;
    this.#scanner = new LineEndingScanner();
  }

  /** After STARTTLS the plain socket carries the handshake: stop reading it until resumed on the TLS socket. */
  resumeOnTls(): void {
    this.#stopped = false;
    this.#pending = '';
    this.#scanner = new LineEndingScanner();
  }

  #watchForStartTls(chunk: Buffer): void {
    // Only the command lines matter, and only whether one of them is STARTTLS; keep at most
    // one partial line (commands are at most a few KiB: smtp-server cuts longer ones).
    const text = this.#pending + chunk.toString('latin1');
    const lines = text.split('\r\n');
    this.#pending = (lines.pop() ?? '').slice(-64);
    if (lines.some((l) => /^\s*STARTTLS\s*$/i.test(l))) this.#stopped = true;
  }
}
