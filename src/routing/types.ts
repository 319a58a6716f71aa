/**
 * The contract between the Haineko tables (routing/, built from config/mailertable, sendermt,
 * authinfo, relayhosts, recipients, password) and their users: POST /submit (submit/), the
 * relay mailers (relay/) and the SMTP relay path (smtp/).
 */

/** The mailers a route may name (Haineko's names). */
export type MailerName = 'ESMTP' | 'File' | 'Screen' | 'Discard' | 'Haineko' | 'MX';

/** One entry of mailertable or sendermt, after defaults. */
export interface Route {
  mailer: MailerName;
  /** Upstream host (ESMTP, Haineko); unused by File/Screen/Discard/MX. */
  host: string;
  port: number;
  /** Key into authinfo, or null for no AUTH. */
  auth: string | null;
  /** Credentials resolved from authinfo at lookup time (null when `auth` is null or unknown). */
  credentials: { username: string; password: string } | null;
  starttls: boolean;
  /** Extra attempts after the first one, and the pause between them. */
  retry: number;
  sleepMs: number;
  /** Deadline for one delivery attempt. */
  timeoutMs: number;
  /** Mailer-specific settings (File: directory; Haineko: url; MX: resolver), kept as given. */
  options: Record<string, unknown>;
  /** Which table and key chose this route, for logs and the response (`mailertable:example.org`). */
  source: string;
}

/** What the routing tables answer; each method reads the current (reloaded) tables. */
export interface Routing {
  /** mailertable by recipient domain, then sendermt by sender domain, then mailertable `default`. */
  route(rcpt: string, sender: string): Route;
  /** relayhosts: may this client address relay without authentication? */
  relayAllowed(remoteAddress: string): boolean;
  /** recipients: may mail be relayed to this address (case-insensitive)? */
  recipientAllowed(rcpt: string): boolean;
  /** password: checks a user's password against its {SSHA}/{SSHA256}/{SSHA512} hash. */
  verifyPassword(user: string, password: string): boolean;
  /** Stops watching the table files. */
  close(): void;
}
