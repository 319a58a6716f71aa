// The live feed: the WebSocket /api/v1/events (protocol in docs/events.md), reconnecting by
// itself with ?since= so nothing is missed, and polling the REST list instead while the
// socket cannot connect (a proxy that does not pass WebSockets).
//
// Modes reported to onMode: 'connecting' (first attempt), 'live' (the server said
// feed.ready), 'reconnecting' (lost it, retrying), 'polling' (fallback after repeated failures;
// the socket is still retried now and then), 'stopped'.

/** Consecutive failed connections (closed before feed.ready) before polling takes over. */
const FAILURES_BEFORE_POLLING = 3;
/** Reconnect delay: doubles from the first to the last, plus up to 30% jitter so a restarted server is not hit by every tab at once. */
const RETRY_FIRST_MS = 500;
const RETRY_MAX_MS = 15_000;
/** Close code: the server's log does not have our since (docs/events.md). */
const CLOSE_UNKNOWN_SINCE = 4404;
// since is from before the server trimmed its event log (storage.event_log_max_age_s).
const CLOSE_SINCE_EXPIRED = 4410;
/**
 * A browser does not see WebSocket pings, and a half-open connection (a laptop that slept, a
 * proxy that dropped it silently) never fires close: the viewer would look live and show
 * nothing. So it sends feed.ping this often and reconnects when no frame at all came back
 * within PONG_TIMEOUT_MS.
 */
const PING_INTERVAL_MS = 25_000;
const PONG_TIMEOUT_MS = 10_000;

export class LiveFeed {
  /**
   * @param {object} o
   * @param {string} o.path            the feed's path, e.g. /api/v1/events
   * @param {number} o.pollIntervalMs  polling interval in fallback mode
   * @param {(frame: {type: string, seq: number|null, data: any}) => void} o.onEvent
   * @param {(mode: string) => void} o.onMode
   * @param {() => Promise<void>} o.refresh   reload the list over REST (polling, and gap filling)
   * @param {() => string|null} o.newestId    the newest message id the page shows (a since for a fresh start)
   */
  constructor(o) {
    this.o = o;
    this.rcpt = '';
    this.cursor = null; // seq of the last frame handled
    this.sinceUnknown = false; // the server refused our since: connect without one
    this.ws = null;
    this.failures = 0;
    this.retryTimer = null;
    this.pollTimer = null;
    this.pingTimer = null;
    this.mode = 'stopped';
    this.generation = 0;
  }

  /** (Re)start with a recipient filter ('' for all mail), after the list was loaded for it. */
  start(rcpt) {
    this.stop();
    this.rcpt = rcpt;
    this.cursor = null;
    this.sinceUnknown = false;
    this.failures = 0;
    this.setMode('connecting');
    this.connect();
  }

  stop() {
    this.generation++;
    clearTimeout(this.retryTimer);
    clearInterval(this.pollTimer);
    this.pollTimer = null;
    this.dropSocket();
    this.setMode('stopped');
  }

  /** Closes the current socket without its handlers running (no reconnect from it). */
  dropSocket() {
    clearInterval(this.pingTimer);
    if (this.ws) {
      this.ws.onclose = this.ws.onmessage = this.ws.onerror = null;
      this.ws.close();
      this.ws = null;
    }
  }

  setMode(mode) {
    if (this.mode === mode) return;
    this.mode = mode;
    this.o.onMode(mode);
  }

  url() {
    const params = new URLSearchParams();
    // Resume after the last frame; on a fresh start, after the newest message already shown.
    const since = this.cursor !== null ? String(this.cursor) : this.sinceUnknown ? null : this.o.newestId();
    if (since) params.set('since', since);
    if (this.rcpt) params.set('rcpt', this.rcpt);
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const query = params.toString();
    return `${scheme}//${location.host}${this.o.path}${query ? `?${query}` : ''}`;
  }

  connect() {
    const generation = this.generation;
    const fresh = this.cursor === null;
    let ready = false;
    let lastFrameAt = Date.now();
    let ws;
    try {
      ws = new WebSocket(this.url());
    } catch {
      this.failed(generation, null);
      return;
    }
    this.ws = ws;
    ws.onmessage = (message) => {
      if (generation !== this.generation) return;
      lastFrameAt = Date.now();
      let frame;
      try {
        frame = JSON.parse(message.data);
      } catch {
        return;
      }
      if (!frame || typeof frame.type !== 'string') return;
      if (frame.type === 'feed.ready') {
        ready = true;
        this.failures = 0;
        this.sinceUnknown = false;
        if (typeof frame.data?.seq === 'number') this.cursor = frame.data.seq;
        clearInterval(this.pollTimer);
        this.pollTimer = null;
        this.setMode('live');
        // Started without a seq (from a message id, or from nothing): mail stored between the
        // REST load and the subscription is not in any replay, so fetch the list once more.
        // After a polling spell, the same fills whatever polling had not caught yet.
        if (fresh) void this.o.refresh();
        clearInterval(this.pingTimer);
        this.pingTimer = setInterval(() => {
          if (Date.now() - lastFrameAt > PING_INTERVAL_MS + PONG_TIMEOUT_MS) {
            // Silent for a whole ping round: the connection is dead even if the browser has not noticed.
            this.dropSocket();
            this.failed(generation, true);
            return;
          }
          try {
            ws.send('{"type":"feed.ping"}');
          } catch {
            // Closing already: onclose handles it.
          }
        }, PING_INTERVAL_MS);
        return;
      }
      if (frame.type === 'feed.error' || frame.type === 'feed.pong') return;
      if (typeof frame.seq === 'number') this.cursor = frame.seq;
      this.o.onEvent(frame);
    };
    ws.onclose = (close) => {
      if (generation !== this.generation) return;
      clearInterval(this.pingTimer);
      this.ws = null;
      if (close.code === CLOSE_UNKNOWN_SINCE || close.code === CLOSE_SINCE_EXPIRED) {
        // Our position is not in the server's log (a reset data directory), or the log no longer
        // reaches back to it: reload the list and connect without since; the refresh after
        // feed.ready closes the gap between the two.
        this.cursor = null;
        this.sinceUnknown = true;
        void this.o.refresh();
      }
      this.failed(generation, ready);
    };
  }

  /** A connection ended: retry soon if it had been live, else count a failure and back off. */
  failed(generation, wasReady) {
    if (generation !== this.generation) return;
    if (!wasReady) this.failures++;
    if (this.failures >= FAILURES_BEFORE_POLLING) this.startPolling();
    else this.setMode('reconnecting');
    const delay = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** Math.max(0, this.failures - 1));
    this.retry(generation, delay * (1 + Math.random() * 0.3));
  }

  retry(generation, delayMs) {
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => {
      if (generation === this.generation) this.connect();
    }, delayMs);
  }

  startPolling() {
    this.setMode('polling');
    if (this.pollTimer !== null) return;
    const generation = this.generation;
    void this.o.refresh();
    this.pollTimer = setInterval(() => {
      if (generation === this.generation) void this.o.refresh();
    }, this.o.pollIntervalMs);
  }
}
