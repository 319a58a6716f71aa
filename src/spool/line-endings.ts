/**
 * Finds bare CR and bare LF in message data. RFC 5321 2.3.8 and 4.1.1.4 allow CR and LF only
 * as the pair CRLF; a lone one is how SMTP smuggling (CVE-2023-51764 and kin) hides a second
 * "end of data" that a later hop reads differently. The scanner keeps one byte of state so a
 * CRLF split across two chunks is not mistaken for a bare CR.
 */
const CR = 0x0d;
const LF = 0x0a;

export class LineEndingScanner {
  #pendingCR = false;
  bare = false;

  /** Scans a chunk; returns the chunk unchanged, or normalised to CRLF when asked. */
  scan(chunk: Buffer, normalize: boolean): Buffer {
    if (!this.#hasBare(chunk)) {
      this.#pendingCR = chunk.length > 0 && chunk[chunk.length - 1] === CR;
      return chunk;
    }
    this.bare = true;
    return normalize ? this.#normalize(chunk) : chunk;
  }

  /** Call at the end of the data: a trailing lone CR is bare too. Returns bytes to append when normalising. */
  end(normalize: boolean): Buffer {
    if (!this.#pendingCR) return Buffer.alloc(0);
    this.#pendingCR = false;
    this.bare = true;
    return normalize ? Buffer.from([LF]) : Buffer.alloc(0);
  }

  #hasBare(chunk: Buffer): boolean {
    if (chunk.length === 0) return false;
    // A CR left over from the previous chunk must be followed by LF here.
    if (this.#pendingCR && chunk[0] !== LF) return true;
    for (let i = chunk.indexOf(LF); i !== -1; i = chunk.indexOf(LF, i + 1)) {
      if (i === 0 ? !this.#pendingCR : chunk[i - 1] !== CR) return true;
    }
    for (let i = chunk.indexOf(CR); i !== -1; i = chunk.indexOf(CR, i + 1)) {
      // The last byte may be the first half of a CRLF that continues in the next chunk.
      if (i < chunk.length - 1 && chunk[i + 1] !== LF) return true;
    }
    return false;
  }

  #normalize(chunk: Buffer): Buffer {
    const out: number[] = [];
    let i = 0;
    if (this.#pendingCR) {
      out.push(LF);
      if (chunk[0] === LF) i = 1;
      this.#pendingCR = false;
    }
    for (; i < chunk.length; i++) {
      const b = chunk[i]!;
      if (b === CR) {
        if (i === chunk.length - 1) {
          out.push(CR);
          this.#pendingCR = true;
        } else if (chunk[i + 1] === LF) {
          out.push(CR, LF);
          i++;
        } else out.push(CR, LF);
      } else if (b === LF) out.push(CR, LF);
      else out.push(b);
    }
    return Buffer.from(out);
  }
}
