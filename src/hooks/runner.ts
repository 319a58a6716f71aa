/**
 * Runs the hooks of one phase for one session, in the configured order, and turns what they
 * return into one result. Transport-neutral: the SMTP listener and POST /submit call the same
 * `session.run(phase, input)` and map the result to their own replies.
 *
 * - Each call has a deadline (the module's timeoutMs or hooks.timeout_ms). Passing it aborts the
 *   hook's signal and is a 451 4.3.0, as is a throw, a rejected promise, a verdict the phase does
 *   not allow, or a file that does not load: access control fails closed.
 * - A hook answers once, by its return value. An answer after the deadline is ignored and logged
 *   (the "answered twice" guard of callback-style runners).
 * - Every verdict other than continue is logged once, with the hook's name and time, and recorded
 *   for the MailEvent's `hooks`. A final reject or tempfail publishes `mail.rejected`.
 * - abort and close only observe: their verdicts are ignored and their errors only logged.
 */
import type { HookRecord, MailRejectedEvent } from '../events/types.js';
import { newMessageId } from '../events/id.js';
import type { Logger } from '../log/logger.js';
import type { AddressParams, EnvelopeInfo, HeaderField, HookLogger, Phase, SessionInfo, SpamView, EventView } from './api.js';
import type { EomEdits } from './edits.js';
import type { HookEntry, HookRegistry, HookSet } from './registry.js';

export type PhaseResult =
  | { kind: 'continue' | 'accept' | 'discard'; disconnect: boolean }
  | { kind: 'reject' | 'tempfail'; code: number; enhanced: string; message: string; disconnect: boolean; hook: string };
export type ReplyResult = Extract<PhaseResult, { kind: 'reject' | 'tempfail' }>;

export const CONTINUE: PhaseResult = Object.freeze({ kind: 'continue', disconnect: false });

/** A reject or tempfail: a result the transport answers with a reply of its own. */
export function isReply(r: PhaseResult): r is ReplyResult {
  return r.kind === 'reject' || r.kind === 'tempfail';
}

/** Phase-specific parts of the context. */
export interface PhaseInput {
  address?: AddressParams;
  header?: HeaderField;
  chunk?: Buffer;
  command?: string;
  eom?: { spam: SpamView; event: EventView; edits: EomEdits; headers: HeaderField[] };
}

export interface HookRunnerOptions {
  registry: HookRegistry;
  /** hooks.timeout_ms: the deadline of a hook without its own timeoutMs. */
  timeoutMs: number;
  logger: Logger;
  /** Receives a `mail.rejected` event for every reject or tempfail (the bus, in the app). */
  onRejected?(event: MailRejectedEvent): void;
}

const ALLOWED: Record<Phase, ReadonlySet<string>> = (() => {
  const base = ['continue', 'accept', 'reject', 'tempfail'];
  const all = {} as Record<Phase, ReadonlySet<string>>;
  for (const p of ['connect', 'helo', 'mail', 'rcpt', 'data', 'eoh', 'unknown'] as const) all[p] = new Set(base);
  all.header = new Set([...base, 'skip']);
  all.body = new Set([...base, 'skip']);
  all.eom = new Set([...base, 'discard']);
  all.abort = new Set(['continue']);
  all.close = new Set(['continue']);
  return all;
})();

const STREAM_PHASES = new Set<Phase>(['header', 'eoh', 'body']);
const OBSERVE_ONLY = new Set<Phase>(['abort', 'close']);
const ENHANCED = { reject: /^5\.\d{1,3}\.\d{1,3}$/, tempfail: /^4\.\d{1,3}\.\d{1,3}$/ };
// One reply line: RFC 5321 4.5.3.1.5 allows 512 octets including the code.
const MAX_REPLY_TEXT = 400;
// Records per transaction: enough for every hook at every phase of a normal message; a message
// with 1000 headers and an "accept" per header must not grow the event without limit.
const MAX_RECORDS = 200;

export class HookRunner {
  constructor(readonly options: HookRunnerOptions) {}

  /** No hooks configured in any phase: callers skip hooks entirely (no per-session cost). */
  get empty(): boolean {
    return this.options.registry.empty;
  }

  /** A session over the hooks as they are now (later reloads apply to later sessions). */
  session(info: SessionInfo): HookSession {
    return new HookSession(this.options, this.options.registry.current, info);
  }
}

interface MessageState {
  id: string;
  receivedAt: Date;
  headers: HeaderField[];
  /** `${phase}\0${file}` of hooks that answered skip. */
  skipped: Set<string>;
  /** The first reject/tempfail of header, eoh or body: answered at the end of DATA. */
  stream: ReplyResult | null;
}

type Settled = { value: unknown } | { error: unknown } | { timeout: true };

/**
 * What one run of a phase sees: the session, envelope and message as they were when it started.
 * For abort it is the transaction that just ended (the session itself is already reset).
 */
interface RunView {
  info: SessionInfo;
  envelope: EnvelopeInfo;
  message: MessageState | null;
}

export class HookSession {
  readonly scratch = new Map<string, unknown>();
  #info: SessionInfo;
  #envelope: EnvelopeInfo = { mailFrom: null, rcptTo: [] };
  #message: MessageState | null = null;
  #sessionRecords: HookRecord[] = [];
  #records: HookRecord[] = [];

  constructor(
    private readonly o: HookRunnerOptions,
    private readonly set: HookSet,
    info: SessionInfo,
  ) {
    this.#info = { ...info };
  }

  get info(): Readonly<SessionInfo> {
    return this.#info;
  }

  get envelope(): Readonly<EnvelopeInfo> {
    return this.#envelope;
  }

  /** Does this phase have hooks (for this session's snapshot)? */
  has(phase: Phase): boolean {
    return this.set.byPhase.has(phase);
  }

  update(info: Partial<SessionInfo>): void {
    this.#info = { ...this.#info, ...info };
  }

  /** A transaction is open: MAIL was accepted and the message not yet answered. */
  get inTransaction(): boolean {
    return this.#envelope.mailFrom !== null;
  }

  setMailFrom(address: AddressParams): void {
    this.#envelope = { mailFrom: address, rcptTo: [] };
  }

  addRecipient(address: AddressParams): void {
    this.#envelope = { ...this.#envelope, rcptTo: [...this.#envelope.rcptTo, address] };
  }

  beginMessage(id: string, receivedAt: Date): void {
    this.#message = { id, receivedAt, headers: [], skipped: new Set(), stream: null };
  }

  /**
   * Ends an open transaction that produced no message (RSET, HELO/EHLO, STARTTLS, the client
   * leaving). The state is reset at once, so a command that arrives while the abort hooks run
   * sees a clean session and cannot end (and abort) the same transaction again; the abort
   * hooks then see the transaction that ended. Resolves when they are done.
   */
  endTransaction(): Promise<void> {
    if (!this.inTransaction) return Promise.resolve();
    const ended: RunView = { info: this.#info, envelope: this.#envelope, message: this.#message };
    this.resetTransaction();
    if (!this.has('abort')) return Promise.resolve();
    return this.#guarded('abort', {}, ended).then(() => undefined);
  }

  /** The transaction is over (answered, reset or abandoned). */
  resetTransaction(): void {
    this.#envelope = { mailFrom: null, rcptTo: [] };
    this.#message = null;
    this.#records = [];
  }

  pushHeader(header: HeaderField): void {
    this.#message?.headers.push(header);
  }

  /** The reject/tempfail a header, eoh or body hook gave, answered at the end of DATA. */
  get streamResult(): ReplyResult | null {
    return this.#message?.stream ?? null;
  }

  /** Every non-continue verdict of the session's connect/helo and of this transaction. */
  records(): HookRecord[] {
    return [...this.#sessionRecords, ...this.#records];
  }

  /** Runs the phase's hooks. Never rejects: a fault of the runner itself fails closed too. */
  run(phase: Phase, input: PhaseInput = {}): Promise<PhaseResult> {
    return this.#guarded(phase, input, { info: this.#info, envelope: this.#envelope, message: this.#message });
  }

  async #guarded(phase: Phase, input: PhaseInput, view: RunView): Promise<PhaseResult> {
    try {
      return await this.#run(phase, input, view);
    } catch (err) {
      this.o.logger.error({ err, session: this.#info.id, phase }, 'hook runner failed; failing closed');
      return OBSERVE_ONLY.has(phase) ? CONTINUE : { kind: 'tempfail', code: 451, enhanced: '4.3.0', message: 'Temporary policy failure, try again later', disconnect: false, hook: '' };
    }
  }

  async #run(phase: Phase, input: PhaseInput, view: RunView): Promise<PhaseResult> {
    const entries = this.set.byPhase.get(phase);
    if (!entries) return CONTINUE;
    const stream = STREAM_PHASES.has(phase);
    const message = view.message;
    const id = message?.id;
    if (stream && message?.stream) return message.stream;
    const observe = OBSERVE_ONLY.has(phase);
    let result: PhaseResult = CONTINUE;
    for (const entry of entries) {
      if (stream && message?.skipped.has(`${phase}\0${entry.file}`)) continue;
      const name = entry.hook.name;
      if (entry.broken) {
        if (observe) continue;
        result = this.#failClosed(phase, name, 0, 'broken', id);
        break;
      }
      const started = performance.now();
      const settled = await this.#call(entry, phase, input, view);
      const ms = Math.round((performance.now() - started) * 1000) / 1000;
      if ('timeout' in settled) {
        this.o.logger.warn({ session: this.#info.id, id, phase, hook: name, ms }, 'hook deadline passed; failing closed');
        if (observe) continue;
        result = this.#failClosed(phase, name, ms, 'timeout', id);
        break;
      }
      if ('error' in settled) {
        const err = settled.error as Error;
        this.o.logger.error({ session: this.#info.id, id, phase, hook: name, ms, err: err?.message ?? String(err), stack: err?.stack }, 'hook failed; failing closed');
        if (observe) continue;
        result = this.#failClosed(phase, name, ms, 'error', id);
        break;
      }
      const verdict = normalize(phase, settled.value, name);
      if ('invalid' in verdict) {
        this.o.logger.error({ session: this.#info.id, id, phase, hook: name, reason: verdict.invalid }, 'hook returned an invalid verdict; failing closed');
        if (observe) continue;
        result = this.#failClosed(phase, name, ms, 'invalid', id);
        break;
      }
      if ('skip' in verdict) {
        message?.skipped.add(`${phase}\0${entry.file}`);
        this.#record(phase, name, 'skip', ms, null, id);
        continue;
      }
      if (verdict.kind === 'continue') continue;
      this.#record(phase, name, verdict.kind, ms, verdict, id);
      result = verdict;
      break; // accept skips the remaining hooks of this phase; the others end it
    }
    if (result.kind === 'reject' || result.kind === 'tempfail') {
      if (stream && message) message.stream = result;
      this.#publishRejected(phase, result, view, input.address);
    }
    return result;
  }

  /** Calls one hook; a promise gets the deadline, a plain value costs no timer at all. */
  #call(entry: HookEntry, phase: Phase, input: PhaseInput, view: RunView): Promise<Settled> | Settled {
    const ctx = new HookCtx(this, phase, input, entry.hook.name, view);
    let value: unknown;
    try {
      value = (entry.hook.handlers[phase] as (c: unknown) => unknown)(ctx);
    } catch (error) {
      return { error };
    }
    if (!isThenable(value)) return { value };
    const ms = entry.hook.timeoutMs ?? this.o.timeoutMs;
    return new Promise<Settled>((resolve) => {
      let settled = false;
      const timer = setTimeout(() => {
        settled = true;
        ctx[ABORT](new Error(`hook ${entry.hook.name} passed its ${ms} ms deadline`));
        resolve({ timeout: true });
      }, ms);
      const late = (what: string) => this.o.logger.warn({ session: this.#info.id, phase, hook: entry.hook.name }, `hook ${what} after its deadline; ignored`);
      value.then(
        (v) => {
          if (settled) return late('answered');
          settled = true;
          clearTimeout(timer);
          resolve({ value: v });
        },
        (error: unknown) => {
          if (settled) return late('failed');
          settled = true;
          clearTimeout(timer);
          resolve({ error });
        },
      );
    });
  }

  #failClosed(phase: Phase, hook: string, ms: number, why: string, id: string | undefined): ReplyResult {
    this.#record(phase, hook, 'tempfail', ms, { why }, id);
    return { kind: 'tempfail', code: 451, enhanced: '4.3.0', message: 'Temporary policy failure, try again later', disconnect: false, hook };
  }

  #record(phase: Phase, name: string, verdict: string, ms: number, detail: object | null, id: string | undefined): void {
    const list = phase === 'connect' || phase === 'helo' ? this.#sessionRecords : this.#records;
    if (list.length < MAX_RECORDS) list.push({ phase, name, verdict, ms });
    if (verdict === 'tempfail' && detail && 'why' in detail) return; // already logged with its reason
    const reply = detail && 'code' in detail ? { code: (detail as ReplyResult).code, enhanced: (detail as ReplyResult).enhanced } : {};
    this.o.logger.info({ session: this.#info.id, id, phase, hook: name, verdict, ms, ...reply }, 'hook verdict');
  }

  /**
   * `address` is the one a mail or rcpt hook refused: it never enters the session's envelope, but
   * the event names it (the sender, or the recipient after those accepted), so that rcpt and
   * domain filters of the feed and of webhooks match the refusal.
   */
  #publishRejected(phase: Phase, r: ReplyResult, view: RunView, address: AddressParams | undefined): void {
    if (!this.o.onRejected) return;
    const i = view.info;
    const env = view.envelope;
    const refused = address?.address;
    const mailFrom = phase === 'mail' && refused !== undefined ? refused : (env.mailFrom?.address ?? '');
    const rcptTo = env.rcptTo.map((a) => a.address);
    if (phase === 'rcpt' && refused !== undefined) rcptTo.push(refused);
    const event: MailRejectedEvent = {
      type: 'mail.rejected',
      version: 1,
      id: view.message?.id ?? newMessageId(),
      at: new Date().toISOString(),
      phase,
      code: r.code,
      enhancedCode: r.enhanced,
      reason: r.message,
      hook: r.hook,
      envelope: {
        mailFrom,
        rcptTo,
        remoteAddress: i.remoteAddress,
        remotePort: i.remotePort,
        clientHostname: i.clientHostname,
        helo: i.helo,
        tls: i.tls ? { protocol: i.tls.protocol, cipher: i.tls.cipher } : null,
        auth: i.auth ? { user: i.auth.user } : null,
      },
    };
    try {
      this.o.onRejected(event);
    } catch (err) {
      this.o.logger.warn({ err }, 'publishing mail.rejected failed');
    }
  }

  hookLogger(hook: string, phase: Phase, id: string | undefined): HookLogger {
    const fields = { session: this.#info.id, id, hook, phase };
    const l = this.o.logger;
    return {
      debug: (msg, f) => l.debug({ ...fields, ...f }, msg),
      info: (msg, f) => l.info({ ...fields, ...f }, msg),
      warn: (msg, f) => l.warn({ ...fields, ...f }, msg),
      error: (msg, f) => l.error({ ...fields, ...f }, msg),
    };
  }
}

const ABORT = Symbol('abort');

/** The context one hook call sees. The signal and the logger are made only if the hook asks. */
class HookCtx {
  readonly phase: Phase;
  readonly session: Readonly<SessionInfo>;
  readonly envelope: Readonly<EnvelopeInfo>;
  readonly messageId: string | null;
  readonly receivedAt: Date | null;
  readonly headers: readonly HeaderField[];
  readonly scratch: Map<string, unknown>;
  #controller: AbortController | null = null;
  #log: HookLogger | null = null;
  #owner: HookSession;
  #hook: string;

  constructor(owner: HookSession, phase: Phase, input: PhaseInput, hook: string, view: RunView) {
    this.#owner = owner;
    this.#hook = hook;
    this.phase = phase;
    this.session = view.info;
    this.envelope = view.envelope;
    const m = view.message;
    this.messageId = m?.id ?? null;
    this.receivedAt = m?.receivedAt ?? null;
    this.headers = input.eom?.headers ?? m?.headers.slice() ?? [];
    this.scratch = owner.scratch;
    if (input.address) Object.assign(this, { address: input.address });
    if (input.header) Object.assign(this, { header: input.header });
    if (input.chunk) Object.assign(this, { chunk: input.chunk });
    if (input.command !== undefined) Object.assign(this, { command: input.command });
    if (input.eom) {
      const e = input.eom.edits;
      Object.assign(this, {
        spam: input.eom.spam,
        event: input.eom.event,
        addHeader: (n: string, v: string) => e.addHeader(n, v),
        changeHeader: (n: string, v: string, i?: number) => e.changeHeader(n, v, i),
        deleteHeader: (n: string, i?: number) => e.deleteHeader(n, i),
        setSender: (a: string) => e.setSender(a),
        addRecipient: (a: string) => e.addRecipient(a),
        removeRecipient: (a: string) => e.removeRecipient(a),
        addTag: (t: string) => e.addTag(t),
      });
    }
  }

  get signal(): AbortSignal {
    this.#controller ??= new AbortController();
    return this.#controller.signal;
  }

  get log(): HookLogger {
    this.#log ??= this.#owner.hookLogger(this.#hook, this.phase, this.messageId ?? undefined);
    return this.#log;
  }

  [ABORT](reason: Error): void {
    this.#controller?.abort(reason);
  }
}

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return !!v && (typeof v === 'object' || typeof v === 'function') && typeof (v as { then?: unknown }).then === 'function';
}

/** A hook's return value as a result, a skip, or why it is not valid here. */
function normalize(phase: Phase, value: unknown, hook: string): PhaseResult | { skip: true } | { invalid: string } {
  if (value === undefined || value === null) return CONTINUE;
  if (typeof value !== 'object' || typeof (value as { verdict?: unknown }).verdict !== 'string') {
    return { invalid: `expected { verdict: ... } or nothing, got ${describe(value)}` };
  }
  const v = value as { verdict: string; code?: unknown; enhanced?: unknown; message?: unknown; disconnect?: unknown };
  if (!ALLOWED[phase].has(v.verdict)) return { invalid: `verdict ${JSON.stringify(v.verdict)} is not allowed at ${phase} (allowed: ${[...ALLOWED[phase]].join(', ')})` };
  if (v.disconnect !== undefined && typeof v.disconnect !== 'boolean') return { invalid: 'disconnect must be a boolean' };
  const disconnect = v.disconnect === true;
  switch (v.verdict) {
    case 'continue':
      return CONTINUE;
    case 'skip':
      return { skip: true };
    case 'accept':
      return { kind: 'accept', disconnect: false };
    case 'discard':
      return { kind: 'discard', disconnect };
    default: {
      const kind = v.verdict as 'reject' | 'tempfail';
      const reject = kind === 'reject';
      const code = v.code ?? (reject ? 550 : 451);
      const [lo, hi] = reject ? [500, 599] : [400, 499];
      if (!Number.isInteger(code) || (code as number) < lo || (code as number) > hi) return { invalid: `${kind} needs a ${lo / 100}xx code, got ${describe(v.code)}` };
      const enhanced = v.enhanced ?? (reject ? '5.7.1' : '4.7.1');
      if (typeof enhanced !== 'string' || !ENHANCED[kind].test(enhanced)) return { invalid: `${kind} needs an enhanced code like ${reject ? '5.7.1' : '4.7.1'}, got ${describe(v.enhanced)}` };
      const message = v.message ?? (reject ? 'Rejected by policy' : 'Temporary failure, try again later');
      if (typeof message !== 'string' || !message || message.length > MAX_REPLY_TEXT || /[\r\n\0]/.test(message)) {
        return { invalid: `message must be one line of 1-${MAX_REPLY_TEXT} characters` };
      }
      // 421 means "closing the channel" (RFC 5321 4.2.3): it always disconnects.
      return { kind, code: code as number, enhanced, message, disconnect: disconnect || code === 421, hook };
    }
  }
}

function describe(v: unknown): string {
  try {
    return JSON.stringify(v)?.slice(0, 100) ?? String(v);
  } catch {
    return typeof v;
  }
}
