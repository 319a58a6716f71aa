/**
 * The header, eoh and body phases over the DATA stream. Sits between smtp-server's data stream and
 * the spool writer only when one of those phases has hooks, passes every byte through unchanged
 * (the spool still counts, hashes and checks line endings), and calls the hooks as the header
 * block and the body go by. Hooks run one call at a time in stream order; the stream waits for
 * them (backpressure), so a slow hook slows the client, never memory.
 *
 * A verdict here cannot be a reply yet (the client is still sending): the session keeps the first
 * reject/tempfail, stops calling hooks, and the transaction answers it after the final dot.
 */
import { Transform, type TransformCallback } from 'node:stream';
import { headerField } from './fields.js';
import type { HookSession } from './runner.js';

export interface StreamLimits {
  /** Bytes of header block the hooks get to see; past it the message is refused (552 5.3.4). */
  maxHeaderBytes: number;
  /** Header fields the hooks get to see (parse.max_headers). */
  maxHeaders: number;
}

export class HookStreamTap extends Transform {
  #inHeaders = true;
  /** The header block so far that is not yet a complete field (bounded by maxHeaderBytes). */
  #pending = Buffer.alloc(0);
  #headerBytes = 0;
  #headerCount = 0;
  /** Set when the header block is too large: answered 552 at the end of DATA. */
  tooLarge = false;

  constructor(
    private readonly hooks: HookSession,
    private readonly limits: StreamLimits,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.push(chunk);
    if (this.tooLarge || this.hooks.streamResult) return cb();
    this.#feed(chunk).then(() => cb(), cb);
  }

  override _flush(cb: TransformCallback): void {
    if (!this.#inHeaders || this.tooLarge || this.hooks.streamResult) return cb();
    // A message without a body: the last field ends with the data.
    this.#endHeaders(this.#pending.length ? [this.#pending] : [], Buffer.alloc(0)).then(() => cb(), cb);
  }

  async #feed(chunk: Buffer): Promise<void> {
    if (!this.#inHeaders) {
      if (this.hooks.has('body')) await this.hooks.run('body', { chunk });
      return;
    }
    this.#headerBytes += chunk.length;
    let data = this.#pending.length ? Buffer.concat([this.#pending, chunk]) : chunk;
    // Split off complete fields: a field ends at a line break not followed by folding white space.
    const fields: Buffer[] = [];
    let start = 0;
    for (;;) {
      const nl = data.indexOf(10, start);
      if (nl === -1) break;
      const line = data.subarray(start, nl + 1);
      const blank = line.length === 1 || (line.length === 2 && line[0] === 13);
      if (blank) {
        const pending = data.subarray(0, start);
        if (pending.length) fields.push(pending);
        return this.#endHeaders(fields, data.subarray(nl + 1), true);
      }
      if (nl + 1 >= data.length) break; // cannot tell yet whether the next line is folding
      const next = data[nl + 1];
      if (next !== 32 && next !== 9) {
        fields.push(data.subarray(0, nl + 1));
        data = data.subarray(nl + 1);
        start = 0;
      } else start = nl + 1;
    }
    this.#pending = Buffer.from(data);
    for (const f of fields) await this.#header(f);
    if (this.#headerBytes > this.limits.maxHeaderBytes) this.tooLarge = true;
  }

  async #endHeaders(fields: Buffer[], rest: Buffer, sawBlank = false): Promise<void> {
    this.#inHeaders = false;
    this.#pending = Buffer.alloc(0);
    for (const f of fields) await this.#header(f);
    if (this.hooks.has('eoh')) await this.hooks.run('eoh');
    if (sawBlank && rest.length && this.hooks.has('body')) await this.hooks.run('body', { chunk: rest });
  }

  async #header(raw: Buffer): Promise<void> {
    if (this.tooLarge || this.hooks.streamResult) return;
    if (++this.#headerCount > this.limits.maxHeaders) {
      this.tooLarge = true;
      return;
    }
    const header = headerField(raw.toString('utf8'));
    if (this.hooks.has('header')) await this.hooks.run('header', { header });
    this.hooks.pushHeader(header);
  }
}
