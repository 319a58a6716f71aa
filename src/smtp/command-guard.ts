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

/** The end of DATA as smtp-server reads it: a line holding one dot. */
const END_OF_DATA = Buffer.from('\r\n.\r\n');
export class CommandGuard {
  #scanner = new LineEndingScanner();
  #dataMode = false;
  /** The last bytes of DATA seen, for an end-of-data line split across chunks. */
  #dataTail = Buffer.alloc(0);
  tainted = false;

  /**
   * `upgrading`: smtp-server has accepted STARTTLS and the plain socket now carries the TLS
   * handshake. Its upgrade() takes the plain socket off this listener in the same tick as the
   * 220, so the handshake never arrives here; this is the fallback should that ever change. It
   * is the server's own state: nothing the client sends can switch the guard off.
   */
  constructor(
    private readonly onViolation: () => void,
    private readonly upgrading: () => boolean = () => false,
  ) {}

  /** Feeds bytes the client sent (plain socket, or the TLS socket after STARTTLS). */
  inspect(chunk: Buffer): void {
    if (this.tainted) return;
    if (this.#dataMode) {
      // DATA content is the spool's to check, but commands pipelined after the final dot in the
      // same chunk (legal with PIPELINING) are commands: they are scanned from there on.
      const end = this.#endOfData(chunk);
      if (end === -1) return;
      this.#leaveDataMode();
      chunk = chunk.subarray(end);
    }
    if (this.upgrading()) return;
    this.#scanner.scan(chunk, false);
    if (this.#scanner.bare) {
      this.tainted = true;
      this.onViolation();
    }
  }

  /**
   * The listener switches data mode on when smtp-server starts a message (after its 354) and
   * off at the message stream's end; the guard itself leaves it at the end-of-data line.
   */
  setDataMode(on: boolean): void {
    if (!on) {
      if (this.#dataMode) this.#leaveDataMode();
      return;
    }
    this.#dataMode = true;
    // The DATA command's own CRLF: a message of no lines ends with ".\r\n" right away.
    this.#dataTail = Buffer.from('\r\n');
  }

  /** After STARTTLS, on the TLS socket: a fresh start (nothing before the handshake counts). */
  resumeOnTls(): void {
    this.#scanner = new LineEndingScanner();
  }

  #leaveDataMode(): void {
    this.#dataMode = false;
    this.#dataTail = Buffer.alloc(0);
    this.#scanner = new LineEndingScanner();
  }

  /** The offset in chunk just past the end-of-data line, or -1 (the chunk is all message data). */
  #endOfData(chunk: Buffer): number {
    const n = END_OF_DATA.length;
    // A terminator split across chunks lies within the last n-1 bytes before and the first n-1 here.
    const seam = Buffer.concat([this.#dataTail, chunk.subarray(0, n - 1)]);
    const inSeam = seam.indexOf(END_OF_DATA);
    if (inSeam !== -1) return inSeam + n - this.#dataTail.length;
    const inChunk = chunk.indexOf(END_OF_DATA);
    if (inChunk !== -1) return inChunk + n;
    this.#dataTail = Buffer.from(chunk.length >= n - 1 ? chunk.subarray(chunk.length - (n - 1)) : Buffer.concat([this.#dataTail, chunk]).subarray(-(n - 1)));
    return -1;
  }
}
