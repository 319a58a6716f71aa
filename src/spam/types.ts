export interface SpamdOptions {
  host: string;
  port: number;
  /** Deadline for the whole exchange: connect, send, read the reply. */
  timeoutMs: number;
  /** Messages larger than this are not sent to spamd (status "skipped"). */
  maxSize: number;
}
