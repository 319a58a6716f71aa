/**
 * The hooks of src/hooks/ on POST /submit, where Haineko ran its milters (Haineko::Sendmail):
 * `connect` after the relayhosts/auth check, `helo` after the EHLO checks, `mail` after the
 * sender checks, `rcpt` per recipient after the recipients table, then, on the built message,
 * `header` per header, `body` once, and `eom` before relaying. A refusal is a Haineko response
 * entry with the hook's code, dsn and message and the SMTP command of the phase (HTTP 400, as
 * Haineko answered a milter's rejection); a refused recipient is an entry of its own and the
 * others go on, like the recipients table.
 *
 * Only built when a hook is configured: without hooks /submit creates no session at all.
 */
import type { AddressParams, EventView, HeaderField, Phase, SpamView } from '../hooks/api.js';
import { EomEdits } from '../hooks/edits.js';
import { headerFields, splitMessage } from '../hooks/fields.js';
import { editMessage } from '../hooks/rewrite.js';
import { isReply, type HookRunner, type HookSession, type PhaseResult, type ReplyResult } from '../hooks/runner.js';
import type { OutboundMessage, ResponseEntry } from '../relay/types.js';

/** The SMTP command Haineko names in a milter's response, by phase. */
const COMMAND: Partial<Record<Phase, string>> = { connect: 'CONN', helo: 'EHLO', mail: 'MAIL', rcpt: 'RCPT', header: 'DATA', body: 'DATA', eom: 'DATA' };

/** /submit has no spamd step: eom hooks see this result. */
const NO_SPAM: SpamView = Object.freeze({ status: 'skipped', score: null, threshold: null });

const NO_ARGS: AddressParams['args'] = Object.freeze({}) as AddressParams['args'];

export interface SubmitHookClient {
  queueid: string;
  remoteAddress: string;
  remotePort: number;
  user: string | null;
}

/** What the eom phase decided, with the message and envelope to relay. */
export type EomOutcome =
  | { kind: 'refuse'; entry: ResponseEntry }
  | { kind: 'discard'; tags: string[] }
  | { kind: 'send'; sender: string; rcptTo: string[]; message: OutboundMessage; tags: string[] };

function refusal(phase: Phase, r: ReplyResult, rcpt: string | null = null): ResponseEntry {
  return { dsn: r.enhanced, code: r.code, host: null, port: null, rcpt, error: 1, mailer: null, command: COMMAND[phase] ?? 'DATA', message: [r.message] };
}

export class SubmitHooks {
  #done = false;

  private constructor(private readonly session: HookSession) {}

  /** A hook session for one request, or null when no hook is configured (no cost at all). */
  static open(runner: HookRunner | null, c: SubmitHookClient): SubmitHooks | null {
    if (!runner || runner.empty) return null;
    return new SubmitHooks(
      runner.session({
        id: c.queueid,
        transport: 'http',
        remoteAddress: c.remoteAddress,
        remotePort: c.remotePort,
        clientHostname: '',
        helo: '',
        tls: null,
        auth: c.user === null ? null : { method: 'basic', user: c.user },
      }),
    );
  }

  async connect(): Promise<ResponseEntry | null> {
    return this.#gate('connect');
  }

  async helo(ehlo: string): Promise<ResponseEntry | null> {
    this.session.update({ helo: ehlo });
    return this.#gate('helo');
  }

  async mail(address: string): Promise<ResponseEntry | null> {
    const params = { address, args: NO_ARGS };
    const refused = await this.#gate('mail', params);
    if (!refused) this.session.setMailFrom(params);
    return refused;
  }

  async rcpt(address: string): Promise<ResponseEntry | null> {
    const params = { address, args: NO_ARGS };
    const refused = await this.#gate('rcpt', params, address);
    if (!refused) this.session.addRecipient(params);
    return refused;
  }

  /**
   * header (per header), body (once, the whole body) and eom on the built message. The header
   * phases see the headers shared by every recipient's copy (the per-recipient `To:` is added at
   * delivery, as Haineko did); eom's header edits apply to every copy, `To:` included.
   */
  async message(message: OutboundMessage, sender: string, rcptTo: string[], started: Date): Promise<EomOutcome> {
    if (!this.session.has('header') && !this.session.has('body') && !this.session.has('eom')) {
      this.#done = true;
      return { kind: 'send', sender, rcptTo, message, tags: [] };
    }
    const first = rcptTo[0] ?? '';
    const raw = message.raw(first);
    const { block, body } = splitMessage(raw);
    // The To: built for the first recipient is the one field that differs per copy.
    const all = headerFields(block);
    const to = all.findIndex((h) => h.name === 'To' && h.value === first);
    const headers = to === -1 ? all : [...all.slice(0, to), ...all.slice(to + 1)];
    this.session.beginMessage(message.queueid, started);
    for (const header of headers) {
      if (this.session.has('header')) {
        const r = await this.session.run('header', { header });
        if (isReply(r)) return { kind: 'refuse', entry: refusal('header', r) };
      }
      this.session.pushHeader(header);
    }
    if (this.session.has('body')) {
      const r = await this.session.run('body', { chunk: body });
      if (isReply(r)) return { kind: 'refuse', entry: refusal('body', r) };
    }
    const edits = new EomEdits();
    let r: PhaseResult = { kind: 'continue', disconnect: false };
    if (this.session.has('eom')) {
      r = await this.session.run('eom', { eom: { spam: NO_SPAM, event: this.#eventView(message, headers, sender, rcptTo, raw.length, started), edits, headers } });
    }
    this.#done = true;
    if (isReply(r)) return { kind: 'refuse', entry: refusal('eom', r) };
    const finalRcpts = edits.applyRecipients(rcptTo);
    if (r.kind === 'discard' || finalRcpts.length === 0) return { kind: 'discard', tags: edits.tags };
    const edited: OutboundMessage = edits.changesRaw
      ? {
          ...message,
          raw: (rcpt) => {
            return editMessage(splitMessage(message.raw(rcpt)), edits.headers);
          },
        }
      : message;
    return { kind: 'send', sender: edits.sender ?? sender, rcptTo: finalRcpts, message: edited, tags: edits.tags };
  }

  /**
   * The end of the request: abort when a transaction was open and no message reached eom (a
   * later check or hook refused it), then close. Observe-only phases, run after the answer is
   * sent (fire and forget: the runner never rejects and bounds every call by its deadline).
   */
  finish(): void {
    const session = this.session;
    void (async () => {
      // endTransaction runs abort (on the ended transaction) only when one was open.
      if (this.#done) session.resetTransaction();
      else await session.endTransaction();
      await session.run('close');
    })();
  }

  async #gate(phase: Phase, address?: AddressParams, rcpt: string | null = null): Promise<ResponseEntry | null> {
    if (!this.session.has(phase)) return null;
    const r = await this.session.run(phase, address ? { address } : {});
    return isReply(r) ? refusal(phase, r, rcpt) : null;
  }

  /** A MailEvent-like view for eom: what /submit knows without parsing its own message. */
  #eventView(message: OutboundMessage, headers: HeaderField[], sender: string, rcptTo: string[], size: number, started: Date): EventView {
    const info = this.session.info;
    const subject = headers.find((h) => h.name.toLowerCase() === 'subject')?.value ?? null;
    return {
      type: 'mail.submitted',
      id: message.queueid,
      receivedAt: started.toISOString(),
      envelope: { mailFrom: sender, rcptTo: [...rcptTo], remoteAddress: info.remoteAddress, remotePort: info.remotePort, clientHostname: '', helo: info.helo, tls: null, auth: info.auth ? { user: info.auth.user } : null },
      size,
      subject,
      headers: headers.map((h) => ({ ...h })),
      spam: { ...NO_SPAM },
      tags: [],
    };
  }
}
