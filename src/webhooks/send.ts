/**
 * One webhook attempt: a POST with node:http(s), one deadline for the whole exchange, and a
 * bounded read of the response. node:http rather than fetch: each webhook gets its own Agent
 * (sockets bounded by its concurrency, destroyed at stop), and redirects are never followed
 * (a 3xx would send a signed event to wherever the Location points).
 */
import http from 'node:http';
import https from 'node:https';

/**
 * Response bytes kept for the delivery record. Enough for an error message from the receiver;
 * the rest is discarded unread (a receiver answering with a large page must not cost memory).
 */
export const RESPONSE_EXCERPT_BYTES = 512;

export type SendOutcome =
  | { kind: 'response'; status: number; excerpt: string | null; ms: number }
  | { kind: 'error'; error: string; timeout: boolean; ms: number }
  /** The dispatcher is stopping: not an attempt, nothing is recorded. */
  | { kind: 'aborted'; ms: number };

export interface SendRequest {
  url: URL;
  agent: http.Agent;
  headers: Record<string, string>;
  body: Buffer;
  timeoutMs: number;
  /** Aborted when the dispatcher stops. */
  stop: AbortSignal;
}

export function createAgent(url: URL, maxSockets: number): http.Agent {
  const options = { keepAlive: true, maxSockets, maxFreeSockets: maxSockets, scheduling: 'lifo' as const };
  return url.protocol === 'https:' ? new https.Agent(options) : new http.Agent(options);
}

export function send(req: SendRequest): Promise<SendOutcome> {
  const started = performance.now();
  const ms = (): number => Math.round(performance.now() - started);
  return new Promise((resolve) => {
    let settled = false;
    let request: http.ClientRequest | null = null;
    const timer = setTimeout(() => fail({ kind: 'error', error: `timeout after ${req.timeoutMs} ms`, timeout: true, ms: ms() }), req.timeoutMs);
    const onStop = (): void => fail({ kind: 'aborted', ms: ms() });
    const finish = (outcome: SendOutcome): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      req.stop.removeEventListener('abort', onStop);
      resolve(outcome);
    };
    // Ends the exchange early: the socket is destroyed, so nothing more is read or sent.
    function fail(outcome: SendOutcome): void {
      finish(outcome);
      request?.destroy();
    }
    if (req.stop.aborted) return fail({ kind: 'aborted', ms: 0 });
    req.stop.addEventListener('abort', onStop, { once: true });

    const mod = req.url.protocol === 'https:' ? https : http;
    request = mod.request(req.url, {
      method: 'POST',
      agent: req.agent,
      headers: { ...req.headers, 'content-length': String(req.body.length) },
    });
    request.on('error', (err) => fail({ kind: 'error', error: describeError(err), timeout: false, ms: ms() }));
    request.on('response', (res) => {
      const status = res.statusCode ?? 0;
      const chunks: Buffer[] = [];
      let kept = 0;
      res.on('data', (chunk: Buffer) => {
        if (kept < RESPONSE_EXCERPT_BYTES) {
          chunks.push(chunk.subarray(0, RESPONSE_EXCERPT_BYTES - kept));
          kept += Math.min(chunk.length, RESPONSE_EXCERPT_BYTES - kept);
        }
        // A body beyond the excerpt is not worth reading: the status says what happened.
        if (kept >= RESPONSE_EXCERPT_BYTES) fail({ kind: 'response', status, excerpt: excerpt(chunks), ms: ms() });
      });
      // Read to the end otherwise, so the socket can be reused for the next delivery.
      res.on('end', () => finish({ kind: 'response', status, excerpt: excerpt(chunks), ms: ms() }));
      res.on('error', () => finish({ kind: 'response', status, excerpt: excerpt(chunks), ms: ms() }));
    });
    request.end(req.body);
  });
}

function excerpt(chunks: Buffer[]): string | null {
  if (chunks.length === 0) return null;
  // A cut in the middle of a UTF-8 sequence becomes U+FFFD, never an exception.
  return Buffer.concat(chunks).toString('utf8');
}

/** "ECONNREFUSED 127.0.0.1:9", "ENOTFOUND hooks.example", ...: short and without a stack. */
function describeError(err: Error): string {
  const e = err as NodeJS.ErrnoException & { address?: string; port?: number; hostname?: string };
  const where = e.address ? ` ${e.address}${e.port ? `:${e.port}` : ''}` : e.hostname ? ` ${e.hostname}` : '';
  const text = e.code ? `${e.code}${where}` : err.message;
  return text.slice(0, 200);
}
