/**
 * The public API for hook authors. A hook file only needs `import type` from here (type-only
 * imports are erased when the file is loaded), so hooks in config/hooks/ have no runtime
 * dependency on mailwire: a verdict is a plain object literal.
 *
 *   import type { Hook } from '../../src/hooks/api.js';   // from config/hooks/
 *   export default {
 *     name: 'block-spammer',
 *     mail(ctx) {
 *       if (ctx.address.address === 'spam@bad.test') return { verdict: 'reject', enhanced: '5.7.1', message: 'Go away' };
 *     },
 *   } satisfies Hook;
 *
 * See docs/hooks.md for the catalogue of phases, their context and the verdicts each allows.
 */

/** Every phase, in the order a session meets them. */
export const PHASES = ['connect', 'helo', 'mail', 'rcpt', 'data', 'header', 'eoh', 'body', 'eom', 'abort', 'close', 'unknown'] as const;
export type Phase = (typeof PHASES)[number];

/** Options shared by reject and tempfail. */
interface ReplyVerdict {
  /** 5xx for reject (default 550), 4xx for tempfail (default 451). */
  code?: number;
  /** RFC 3463 enhanced status code, e.g. '5.7.1'; defaults to 5.7.1 / 4.7.1. */
  enhanced?: string;
  /** Reply text (one line; CR and LF are not allowed). */
  message?: string;
  /** Close the connection after the reply. */
  disconnect?: boolean;
}

export type Verdict =
  | { verdict: 'continue' }
  /** Skip the remaining hooks of this phase (this call only). */
  | { verdict: 'accept' }
  | ({ verdict: 'reject' } & ReplyVerdict)
  | ({ verdict: 'tempfail' } & ReplyVerdict)
  /** eom only: answer 250 and drop the message. */
  | { verdict: 'discard'; disconnect?: boolean }
  /** header and body only: stop calling this hook for the rest of this message's stream. */
  | { verdict: 'skip' };

export type VerdictName = Verdict['verdict'];

/** What a hook returns: a verdict, or nothing for continue. May be a promise. */
export type HookResult = Verdict | undefined | void;

export interface AddressParams {
  address: string;
  /** ESMTP parameters as given (SIZE, BODY, NOTIFY, ...), upper-case keys; true for a bare keyword. */
  args: Record<string, string | true>;
}

export interface SessionInfo {
  /** Session id (smtp-server's id, or the /submit request id). */
  id: string;
  /** 'smtp' for the listener, 'http' for POST /submit. */
  transport: 'smtp' | 'http';
  remoteAddress: string;
  remotePort: number;
  /** Reverse DNS name, or '' when unknown. */
  clientHostname: string;
  /** The HELO/EHLO name, '' before it. */
  helo: string;
  tls: { protocol: string; cipher: string; bits: number | null; peerSubject: string | null; peerIssuer: string | null } | null;
  auth: { method: string; user: string } | null;
}

export interface EnvelopeInfo {
  mailFrom: AddressParams | null;
  rcptTo: AddressParams[];
}

export interface HeaderField {
  /** As written by the sender. */
  name: string;
  /** Unfolded, leading and trailing white space trimmed. */
  value: string;
}

export interface HookLogger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

/** What every phase gets. Read-only views: change things only through eom's edit methods. */
export interface HookContext {
  phase: Phase;
  session: Readonly<SessionInfo>;
  envelope: Readonly<EnvelopeInfo>;
  /** Set from DATA on; null before. */
  messageId: string | null;
  receivedAt: Date | null;
  /** Headers of the message so far (header phase: those before the current one). */
  headers: readonly HeaderField[];
  /** Per-session key-value scratchpad: lives from connect to close, across transactions. */
  scratch: Map<string, unknown>;
  log: HookLogger;
  /** Aborted when the hook's deadline passes: pass it to fetch() and friends. */
  signal: AbortSignal;
}

export interface MailContext extends HookContext {
  /** The sender being checked ('' for the null sender). */
  address: AddressParams;
}
export interface RcptContext extends HookContext {
  /** The recipient being checked (not yet in envelope.rcptTo). */
  address: AddressParams;
}
export interface HeaderContext extends HookContext {
  header: HeaderField;
}
export interface BodyContext extends HookContext {
  /** This chunk of the body, as received (transfer-encoded, dot-unstuffed). */
  chunk: Buffer;
}
export interface UnknownContext extends HookContext {
  /** The command line as received (at most smtp.limits.max_command_line). */
  command: string;
}

/** A parsed MailEvent as the hook sees it (see docs/events; JSON-compatible). */
export type EventView = Readonly<Record<string, unknown>> & {
  subject: string | null;
  spam: SpamView;
  tags: readonly string[];
};
export interface SpamView {
  status: 'ham' | 'spam' | 'skipped' | 'error';
  score: number | null;
  threshold: number | null;
}

export interface EomContext extends HookContext {
  spam: Readonly<SpamView>;
  event: EventView;
  /** Appends a header to the header block. */
  addHeader(name: string, value: string): void;
  /** Sets the nth (1-based) occurrence of a header; adds it when absent. */
  changeHeader(name: string, value: string, index?: number): void;
  /** Deletes the nth (1-based) occurrence, or every occurrence when index is omitted. */
  deleteHeader(name: string, index?: number): void;
  setSender(address: string): void;
  addRecipient(address: string): void;
  removeRecipient(address: string): void;
  /** Adds a tag to the MailEvent's `tags`. */
  addTag(tag: string): void;
}

type Handler<C> = (ctx: C) => HookResult | Promise<HookResult>;

/** The shape of a hook module's default export. */
export interface Hook {
  /** Shown in logs and the event's `hooks`; defaults to the file name. */
  name?: string;
  /** Per-call deadline; defaults to hooks.timeout_ms. */
  timeoutMs?: number;
  connect?: Handler<HookContext>;
  helo?: Handler<HookContext>;
  mail?: Handler<MailContext>;
  rcpt?: Handler<RcptContext>;
  data?: Handler<HookContext>;
  header?: Handler<HeaderContext>;
  eoh?: Handler<HookContext>;
  body?: Handler<BodyContext>;
  eom?: Handler<EomContext>;
  abort?: Handler<HookContext>;
  close?: Handler<HookContext>;
  unknown?: Handler<UnknownContext>;
}

/** The context type of each phase. */
export interface PhaseContexts {
  connect: HookContext;
  helo: HookContext;
  mail: MailContext;
  rcpt: RcptContext;
  data: HookContext;
  header: HeaderContext;
  eoh: HookContext;
  body: BodyContext;
  eom: EomContext;
  abort: HookContext;
  close: HookContext;
  unknown: UnknownContext;
}
