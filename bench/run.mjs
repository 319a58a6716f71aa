#!/usr/bin/env node
/**
 * `npm run bench`: inbound throughput and memory of mailwire, against references measured in
 * the same run on the same machine:
 *
 *   - Postfix's smtp-sink: accepts and throws mail away, so it is the cost of the SMTP protocol
 *     (and of the smtp-source client) alone; nothing can be faster.
 *   - MailDev (npm `maildev`): the usual Node mail catcher, same smtp-server library underneath.
 *   - smtp-server alone (bench/bare-smtp-server.mjs): the library mailwire is built on, reading
 *     each message and throwing it away. The ceiling of any one-process server built on it here.
 *
 * Load comes from Postfix's smtp-source, a C client that is not the bottleneck of a Node server.
 * mailwire runs as a real child process (`node <package.json config.node_flags> dist/src/cli.js start`,
 * as `npm start` runs it) with the full pipeline:
 * spool with fsync, mailparser, SQLite commit; only spamd is off.
 *
 * Besides the rate, each run reports the server's CPU time per message (every thread, from
 * /proc, until everything is stored): it moves far less than the rate when other work shares
 * the machine, so it is the figure to compare when trying a change.
 *
 * A benchmark is not a test: this prints figures, ratios and whether each target was met, and
 * exits 0 unless something crashed. Results are also written as JSON to the OS temp directory
 * (not into the repository, so a run leaves the working tree clean).
 *
 * Environment knobs (all optional):
 *   BENCH_MESSAGES=2000   messages per throughput run (times settings.scale for each server)
 *   BENCH_REPEAT=3        runs per server and scenario; the median is reported
 *   BENCH_WARMUP=2000     messages to each server before the timed runs (default: BENCH_MESSAGES)
 *   BENCH_KEEP=1          keep the temp directory (data dirs, logs) for inspection
 *   BENCH_CPU_PROF=1      run the throughput mailwire under `node --cpu-prof` and print where the profile is
 *   BENCH_SKIP=memory,maildev,sink,bare,ws,submit,hooks   leave parts out, to iterate on mailwire alone (ratios then read n/a)
 *   (ws: the WebSocket feed scenario, bench/ws-feed.mjs, which has knobs of its own)
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { accessSync, constants, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { cpus, release, tmpdir, totalmem } from 'node:os';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import nodemailer from 'nodemailer';
import { MAILWIRE_CLI, mailwireStartArgs } from './mailwire-command.mjs';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const MAILDEV_BIN = join(ROOT, 'node_modules/maildev/dist/bin/maildev.js');
const BARE_SERVER = join(ROOT, 'bench/bare-smtp-server.mjs');
const RESULTS_FILE = join(tmpdir(), 'mailwire-bench', 'latest.json');

const FROM = 'sender@bench.test';
const RCPT = 'rcpt@bench.test';
const MiB = 1024 * 1024;

const settings = {
  messages: envInt('BENCH_MESSAGES', 2000),
  repeat: envInt('BENCH_REPEAT', 3),
  sessions: 20,
  messageBytes: 5120,
  // smtp-source -d keeps each session's connection for the next message; with the message count
  // shared by the sessions, each connection carries messages / sessions of them.
  perConnection: 100,
  // The first run against each server is a warm-up and is not counted: JIT, file system caches,
  // and mailwire's early-talker delay (an unknown client waits 100 ms for the greeting until
  // it has once behaved; 127.0.0.1 is remembered after its first clean session). As long as a
  // timed run: V8 optimises hot code only after many calls, and with a 20-message warm-up the
  // first timed run was about 2x slower than the third for both Node servers (CPU per message
  // mailwire 5.7 -> 2.4 ms, MailDev 2.9 -> 1.6 ms). A server that runs for days is warm.
  warmup: envInt('BENCH_WARMUP', envInt('BENCH_MESSAGES', 2000)),
  // Messages per run (and per warm-up) are BENCH_MESSAGES times this, so that every run lasts
  // about 3 s or more, for start-up and stragglers not to count: smtp-sink is about 50x faster
  // than MailDev, smtp-server alone 17x, mailwire 8x. With 2000 messages (1.5 s) mailwire's first
  // timed run still ran at 2/3 of its third (V8 warming up), and 1.1 s runs of smtp-sink moved
  // between 7600 and 9100 msg/s within one bench.
  scale: { sink: 15, bare: 5, mailwire: 3, maildev: 1 },
  big: { count: 20, bytes: 20 * MiB },
  targets: { vsSink: 0.2, vsMailDev: 3, peakRssMB: 300 },
  // Every wait is bounded.
  startTimeoutMs: 30_000,
  runTimeoutMs: 180_000,
  storeTimeoutMs: 60_000,
  stopTimeoutMs: 20_000,
};
const skip = new Set((process.env.BENCH_SKIP ?? '').split(',').map((s) => s.trim()).filter(Boolean));
// Under 20 messages per session the two scenarios would not differ.
settings.messages = Math.max(settings.messages, settings.sessions * 2);

// ---------------------------------------------------------------------------------------------
// Child processes: every one is tracked and killed on exit, on errors and on Ctrl-C.

const children = new Set();
let tempDir = null;

function spawnTracked(name, command, args, options = {}) {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], ...options });
  child.benchName = name;
  child.output = '';
  // Keep the last few KB of output for error messages; the rest is dropped.
  const keep = (chunk) => {
    child.output = (child.output + chunk.toString()).slice(-8192);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  child.exited = new Promise((resolve) => {
    child.once('exit', (code, signal) => {
      children.delete(child);
      child.exitInfo = { code, signal };
      resolve(child.exitInfo);
    });
    child.once('error', (err) => {
      children.delete(child);
      child.exitInfo = { code: null, signal: null, error: err };
      resolve(child.exitInfo);
    });
  });
  children.add(child);
  return child;
}

function killAll() {
  for (const child of children) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
}

function removeTempDir() {
  if (tempDir && process.env.BENCH_KEEP !== '1') rmSync(tempDir, { recursive: true, force: true });
  tempDir = null;
}

process.on('exit', () => {
  killAll();
  removeTempDir();
});
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, () => {
    console.error(`\nbench: ${signal}, stopping every child process`);
    process.exit(130);
  });
}

/** SIGTERM, then SIGKILL if the process is still there after the deadline. */
async function stopChild(child, timeoutMs = settings.stopTimeoutMs) {
  if (child.exitInfo) return { ...child.exitInfo, forced: false };
  child.kill('SIGTERM');
  const info = await withTimeout(child.exited, timeoutMs);
  if (info) return { ...info, forced: false };
  child.kill('SIGKILL');
  return { ...(await child.exited), forced: true };
}

// ---------------------------------------------------------------------------------------------
// Small helpers

function envInt(name, fallback) {
  const v = process.env[name];
  return v && /^\d+$/.test(v) && Number(v) > 0 ? Number(v) : fallback;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolves with the promise's value, or undefined once the time is up. */
function withTimeout(promise, ms) {
  let timer;
  return Promise.race([promise, new Promise((resolve) => (timer = setTimeout(resolve, ms)))]).finally(() => clearTimeout(timer));
}

/** Polls check() until it returns a truthy value; throws after timeoutMs or if the child died. */
async function waitUntil(what, check, { timeoutMs, intervalMs = 100, child } = {}) {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    if (child?.exitInfo) throw new Error(`${child.benchName} exited (${fmtExit(child.exitInfo)}) while waiting for ${what}:\n${child.output}`);
    try {
      const value = await check();
      if (value) return value;
    } catch {
      // not yet
    }
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${child ? `:\n${child.output}` : ''}`);
    await sleep(intervalMs);
  }
}

function fmtExit(info) {
  if (info.error) return info.error.message;
  return info.signal ? `signal ${info.signal}` : `exit code ${info.code}`;
}

/** A port the OS says is free right now (a tiny race with other programs is acceptable here). */
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Connects and reads the 220 greeting, then says QUIT: the server really speaks SMTP. */
function smtpGreets(port, timeoutMs = 2000) {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    const timer = setTimeout(() => done(false), timeoutMs);
    let buf = '';
    function done(ok) {
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    }
    socket.on('data', (d) => {
      buf += d.toString();
      if (/^220[ -]/m.test(buf)) {
        socket.write('QUIT\r\n');
        socket.end();
        done(true);
      } else if (/^\d{3} /m.test(buf)) done(false);
    });
    socket.on('error', () => done(false));
  });
}

async function getJson(url) {
  const res = await fetch(url, { signal: AbortSignal.timeout(5000) });
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  return res.json();
}

/** smtp-source and smtp-sink are in /usr/sbin on Debian, often not in a user's PATH. */
function findTool(name) {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/usr/local/sbin', '/usr/lib/postfix/sbin'];
  for (const dir of dirs) {
    if (!dir) continue;
    try {
      accessSync(join(dir, name), constants.X_OK);
      return join(dir, name);
    } catch {
      // next
    }
  }
  return null;
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

// ---------------------------------------------------------------------------------------------
// Servers. Each returns { name, port, pid, child, stored(): Promise<number|null>, stop() }.

/** mailwire as a real child process, configured the way a deployment would be (file + env). */
async function startMailwire(name, { cpuProfDir } = {}) {
  const base = join(tempDir, name);
  const configDir = join(base, 'config');
  mkdirSync(configDir, { recursive: true });
  // JSON strings are valid YAML scalars, so paths with odd characters need no escaping rules.
  writeFileSync(
    join(configDir, 'mailwire.yml'),
    [
      '# written by bench/run.mjs',
      'log: { level: warn }',
      // The defaults (20 per IP) would turn a load generator on 127.0.0.1 away.
      'smtp: { limits: { max_connections: 1000, max_connections_per_ip: 1000, max_message_size: 26214400 } }',
      // mailwire generates a self-signed pair on first start; keep it out of the repository.
      `tls: { cert: ${JSON.stringify(join(base, 'cert.pem'))}, key: ${JSON.stringify(join(base, 'key.pem'))} }`,
      '',
    ].join('\n'),
  );
  const [smtpPort, httpPort] = [await freePort(), await freePort()];
  const nodeArgs = cpuProfDir ? ['--cpu-prof', '--cpu-prof-dir', cpuProfDir] : [];
  const child = spawnTracked(name, process.execPath, mailwireStartArgs(configDir, nodeArgs), {
    cwd: ROOT,
    env: {
      ...process.env,
      MAILWIRE_DATA_DIR: join(base, 'data'),
      MAILWIRE_SMTP_HOST: '127.0.0.1',
      MAILWIRE_SMTP_PORT: String(smtpPort),
      MAILWIRE_HTTP_HOST: '127.0.0.1',
      MAILWIRE_HTTP_PORT: String(httpPort),
      MAILWIRE_SPAMD: 'off',
    },
  });
  const api = `http://127.0.0.1:${httpPort}`;
  await waitUntil(`${name} /readyz`, async () => (await fetch(`${api}/readyz`, { signal: AbortSignal.timeout(2000) })).status === 200, {
    timeoutMs: settings.startTimeoutMs,
    child,
  });
  return {
    name: 'mailwire',
    kind: 'mailwire',
    port: smtpPort,
    api,
    pid: child.pid,
    child,
    stored: countStoredSince(api),
    stop: () => stopChild(child),
  };
}

/**
 * Returns a function counting the messages mailwire holds, through its REST API (newest first,
 * 500 per page). Each call walks only down to the newest message the previous call saw, so a
 * count costs the server little however many messages it already holds.
 */
function countStoredSince(api) {
  let newestSeen = null;
  let total = 0;
  return async () => {
    let before = null;
    let newest = null;
    let count = 0;
    for (;;) {
      const page = await getJson(`${api}/api/v1/messages?limit=500${before ? `&before=${encodeURIComponent(before)}` : ''}`);
      for (const item of page.items) {
        if (item.id === newestSeen) {
          page.next = null;
          break;
        }
        newest ??= item.id;
        count++;
      }
      if (!page.next) break;
      before = page.next;
    }
    if (newest) newestSeen = newest;
    total += count;
    return total;
  };
}

/** Postfix's smtp-sink: the SMTP protocol's own cost, nothing stored. */
async function startSink(sinkPath) {
  const port = await freePort();
  // smtp-sink refuses to run as root without dropping privileges (-u).
  const userArgs = process.getuid?.() === 0 ? ['-u', 'nobody'] : [];
  const child = spawnTracked('smtp-sink', sinkPath, [...userArgs, `127.0.0.1:${port}`, '1000']);
  await waitUntil('smtp-sink greeting', () => smtpGreets(port), { timeoutMs: settings.startTimeoutMs, child });
  return { name: 'smtp-sink', kind: 'sink', port, pid: child.pid, child, stored: async () => null, stop: () => stopChild(child) };
}

/** smtp-server with nothing behind it (bench/bare-smtp-server.mjs): nothing is stored. */
async function startBareSmtpServer() {
  const port = await freePort();
  const child = spawnTracked('smtp-server', process.execPath, [BARE_SERVER, String(port)], { cwd: ROOT });
  await waitUntil('bare smtp-server greeting', () => smtpGreets(port), { timeoutMs: settings.startTimeoutMs, child });
  return { name: 'smtp-server', kind: 'bare', port, pid: child.pid, child, stored: async () => null, stop: () => stopChild(child) };
}

/**
 * MailDev 3 (devDependency), persisting to a temp mail directory (it writes files, no fsync).
 * It greets every connection after smtp-server's 100 ms early-talker delay (it keeps no pass
 * list), so with one message per connection and 20 sessions its ceiling is ~200 msg/s.
 */
async function startMailDev() {
  const [port, webPort] = [await freePort(), await freePort()];
  const mailDir = join(tempDir, 'maildev');
  mkdirSync(mailDir, { recursive: true });
  const child = spawnTracked('maildev', process.execPath, [
    MAILDEV_BIN,
    '--smtp', String(port),
    '--ip', '127.0.0.1',
    '--web', String(webPort),
    '--web-ip', '127.0.0.1',
    '--mail-directory', mailDir,
    '--silent',
  ]);
  const api = `http://127.0.0.1:${webPort}/api`;
  await waitUntil('MailDev /api/healthz', async () => (await fetch(`${api}/healthz`, { signal: AbortSignal.timeout(2000) })).ok, {
    timeoutMs: settings.startTimeoutMs,
    child,
  });
  await waitUntil('MailDev greeting', () => smtpGreets(port), { timeoutMs: settings.startTimeoutMs, child });
  return {
    name: 'MailDev',
    kind: 'maildev',
    port,
    pid: child.pid,
    child,
    stored: async () => (await getJson(`${api}/email/summary?limit=1`)).total,
    stop: () => stopChild(child),
  };
}

// ---------------------------------------------------------------------------------------------
// Load

/**
 * One smtp-source run, timed from spawn to exit. smtp-source aborts (exit 1) on any unexpected
 * reply, so exit 0 means every message got its 250.
 *   -s sessions in parallel, -m messages in total, -l payload bytes (headers come on top),
 *   -d keep the connection for the next message (default: one message per connection).
 */
async function runSmtpSource(sourcePath, { port, messages, sessions, bytes, reuseConnection }) {
  const args = ['-s', String(sessions), '-m', String(messages), '-l', String(bytes), '-f', FROM, '-t', RCPT];
  if (reuseConnection) args.unshift('-d');
  args.push(`127.0.0.1:${port}`);
  const started = performance.now();
  const child = spawnTracked('smtp-source', sourcePath, args);
  const info = await withTimeout(child.exited, settings.runTimeoutMs);
  const seconds = (performance.now() - started) / 1000;
  if (!info) {
    child.kill('SIGKILL');
    await child.exited;
    return { ok: false, seconds, args, error: `smtp-source did not finish within ${settings.runTimeoutMs} ms` };
  }
  if (info.code !== 0) return { ok: false, seconds, args, error: `smtp-source ${fmtExit(info)}: ${child.output.trim().split('\n').slice(-3).join(' | ')}` };
  return { ok: true, seconds, args, rate: messages / seconds };
}

/**
 * Waits until the server holds `expected` messages (mailwire answers 250 before the store commit,
 * so the last few may still be on their way), and says how long after the run that took.
 */
async function verifyStored(server, expected) {
  if (server.kind === 'sink' || server.kind === 'bare') return { stored: null, expected, lagMs: null };
  const started = performance.now();
  let last = 0;
  try {
    await waitUntil(
      `${server.name} to store ${expected} messages`,
      async () => {
        last = await server.stored();
        return last >= expected;
      },
      { timeoutMs: settings.storeTimeoutMs, intervalMs: 50, child: server.child },
    );
  } catch (err) {
    if (server.child.exitInfo) throw err;
    // Not everything arrived: report the shortfall rather than stop the bench.
  }
  return { stored: last, expected, lagMs: performance.now() - started };
}

// ---------------------------------------------------------------------------------------------
// Memory: 20 x 20 MB at once

/** A 20 MiB MIME message: a short text part and a base64 attachment, CRLF line endings throughout. */
function buildBigMessage(totalBytes) {
  const head = [
    `From: Bench <${FROM}>`,
    `To: <${RCPT}>`,
    'Subject: mailwire bench, large message',
    `Date: ${new Date().toUTCString()}`,
    `Message-ID: <${randomBytes(8).toString('hex')}@bench.test>`,
    'MIME-Version: 1.0',
    'Content-Type: multipart/mixed; boundary="bench-boundary"',
    '',
    '--bench-boundary',
    'Content-Type: text/plain; charset=utf-8',
    '',
    'A large attachment follows.',
    '--bench-boundary',
    'Content-Type: application/octet-stream',
    'Content-Disposition: attachment; filename="blob.bin"',
    'Content-Transfer-Encoding: base64',
    '',
    '',
  ].join('\r\n');
  const tail = '\r\n--bench-boundary--\r\n';
  // 57 raw bytes make one 76-character base64 line, 78 bytes with its CRLF.
  const lines = Math.floor((totalBytes - head.length - tail.length) / 78);
  const b64 = randomBytes(lines * 57).toString('base64');
  const out = Buffer.allocUnsafe(head.length + lines * 78 - 2 + tail.length);
  let off = out.write(head, 0, 'latin1');
  for (let i = 0; i < lines; i++) {
    off += out.write(b64.slice(i * 76, i * 76 + 76), off, 'latin1');
    if (i < lines - 1) off += out.write('\r\n', off, 'latin1');
  }
  off += out.write(tail, off, 'latin1');
  return out.subarray(0, off);
}

/** User + system CPU seconds of a process so far (every thread), from /proc; null without /proc. */
function readCpuSeconds(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may contain spaces), counting from field 3.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticksPerSecond = 100; // USER_HZ, 100 on every Linux ABI Node runs on
    return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond;
  } catch {
    return null;
  }
}

/** VmRSS and VmHWM (peak RSS since the process started) in MB, from /proc. */
function readMemory(pid) {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (key) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
    return { rssMB: kb('VmRSS') / 1024, hwmMB: kb('VmHWM') / 1024 };
  } catch {
    return null;
  }
}

function smtpTransport(port) {
  return nodemailer.createTransport({
    host: '127.0.0.1',
    port,
    secure: false,
    // Plain SMTP like smtp-source: this measures the pipeline, not TLS.
    ignoreTLS: true,
    connectionTimeout: 10_000,
    greetingTimeout: 10_000,
    socketTimeout: settings.runTimeoutMs,
  });
}

/**
 * Sends `count` large messages at the same moment, each on its own connection, and samples the
 * child's RSS every 50 ms until all of them are stored. VmHWM read at the end is the true peak
 * (the 50 ms samples can miss a short spike, and this process is busy sending 400 MB).
 */
async function measureMemory(server) {
  if (!existsSync(`/proc/${server.pid}/status`)) return { skipped: 'no /proc on this system' };
  // Warm-up: one small message (JIT, store, early-talker pass) before the baseline.
  const warm = smtpTransport(server.port);
  await warm.sendMail({ envelope: { from: FROM, to: [RCPT] }, raw: `From: <${FROM}>\r\nTo: <${RCPT}>\r\nSubject: warm-up\r\n\r\nhello\r\n` });
  warm.close();
  await verifyStored(server, 1);
  await sleep(500);
  const baseline = readMemory(server.pid);

  const { count, bytes } = settings.big;
  const message = buildBigMessage(bytes); // one Buffer shared by every transport
  let peakSampledMB = baseline.rssMB;
  let samples = 0;
  const sampler = setInterval(() => {
    const m = readMemory(server.pid);
    if (m) {
      samples++;
      peakSampledMB = Math.max(peakSampledMB, m.rssMB);
    }
  }, 50);
  try {
    const started = performance.now();
    const results = await Promise.allSettled(
      Array.from({ length: count }, async () => {
        const transport = smtpTransport(server.port);
        try {
          return await transport.sendMail({ envelope: { from: FROM, to: [RCPT] }, raw: message });
        } finally {
          transport.close();
        }
      }),
    );
    const acceptedSeconds = (performance.now() - started) / 1000;
    const accepted = results.filter((r) => r.status === 'fulfilled' && /^250[ -]/.test(r.value.response)).length;
    const errors = results.filter((r) => r.status === 'rejected').map((r) => r.reason?.message ?? String(r.reason));
    const store = await verifyStored(server, 1 + count);
    const storedSeconds = (performance.now() - started) / 1000;
    const end = readMemory(server.pid);
    return {
      count,
      messageBytes: message.length,
      accepted,
      errors: [...new Set(errors)].slice(0, 3),
      stored: store.stored - 1,
      acceptedSeconds,
      storedSeconds,
      baselineRssMB: baseline.rssMB,
      peakSampledRssMB: Math.max(peakSampledMB, end.rssMB),
      peakRssMB: Math.max(end.hwmMB, peakSampledMB),
      endRssMB: end.rssMB,
      samples,
    };
  } finally {
    clearInterval(sampler);
  }
}

// ---------------------------------------------------------------------------------------------
// Throughput scenarios

const SCENARIOS = [
  { key: 'oneMessagePerConnection', label: (s) => `inbound, 5 KB, 1 msg/connection, ${s.sessions} sessions`, reuseConnection: false },
  {
    key: 'manyMessagesPerConnection',
    label: (s) => `inbound, 5 KB, ${Math.round(s.messages / s.sessions)} msgs/connection, ${s.sessions} sessions`,
    reuseConnection: true,
  },
];

/** Warm-up, then `repeat` timed runs per server for each scenario, servers interleaved. */
async function runThroughput(sourcePath, servers) {
  const sent = new Map(servers.map((s) => [s, 0]));
  for (const server of servers) {
    const warmup = settings.warmup * settings.scale[server.kind];
    const r = await runSmtpSource(sourcePath, { port: server.port, messages: warmup, sessions: settings.sessions, bytes: settings.messageBytes, reuseConnection: false });
    if (!r.ok) throw new Error(`warm-up against ${server.name} failed: ${r.error}`);
    sent.set(server, warmup);
    await verifyStored(server, warmup);
    console.log(`  warm-up: ${warmup} messages to ${server.name} (not counted)`);
  }

  const results = {};
  for (const scenario of SCENARIOS) {
    console.log(`\n${scenario.label(settings)}`);
    const perServer = Object.fromEntries(servers.map((s) => [s.name, { runs: [] }]));
    for (let rep = 1; rep <= settings.repeat; rep++) {
      for (const server of servers) {
        const messages = settings.messages * settings.scale[server.kind];
        const cpuBefore = readCpuSeconds(server.pid);
        const r = await runSmtpSource(sourcePath, { port: server.port, messages, sessions: settings.sessions, bytes: settings.messageBytes, reuseConnection: scenario.reuseConnection });
        if (r.ok) sent.set(server, sent.get(server) + messages);
        const store = r.ok ? await verifyStored(server, sent.get(server)) : { stored: null, expected: null, lagMs: null };
        // CPU time of the server process (all its threads) per message, until everything was
        // stored: steadier than the rate when other work shares the machine.
        const cpuAfter = readCpuSeconds(server.pid);
        const cpuMsPerMessage = cpuBefore === null || cpuAfter === null ? null : ((cpuAfter - cpuBefore) * 1000) / messages;
        const storedNote =
          store.stored === null ? '' : ` | stored ${store.stored}/${store.expected}${store.stored >= store.expected ? '' : ' (MISSING)'}, last one ${Math.round(store.lagMs)} ms after the run`;
        const cpuNote = cpuMsPerMessage === null ? '' : ` | CPU ${cpuMsPerMessage.toFixed(2)} ms/msg`;
        console.log(
          `  run ${rep}/${settings.repeat} ${server.name.padEnd(11)} ${r.ok ? `${fmtRate(r.rate)} (${messages} msgs in ${r.seconds.toFixed(2)} s)${storedNote}${cpuNote}` : `FAILED: ${r.error}`}`,
        );
        perServer[server.name].runs.push({ ...r, messages, ...store, cpuMsPerMessage });
        perServer[server.name].command = `smtp-source ${r.args.join(' ').replace(/127\.0\.0\.1:\d+$/, '127.0.0.1:PORT')}`;
      }
    }
    for (const entry of Object.values(perServer)) {
      const rates = entry.runs.filter((r) => r.ok).map((r) => r.rate);
      entry.rate = rates.length ? median(rates) : null;
      const cpu = entry.runs.filter((r) => r.ok && r.cpuMsPerMessage !== null).map((r) => r.cpuMsPerMessage);
      entry.cpuMsPerMessage = cpu.length ? median(cpu) : null;
      const last = entry.runs.at(-1);
      entry.stored = last?.stored ?? null;
      entry.expectedStored = last?.expected ?? null;
    }
    results[scenario.key] = { label: scenario.label(settings), servers: perServer };
  }
  return results;
}

// ---------------------------------------------------------------------------------------------
// Report

const fmtRate = (r) => (r === null || r === undefined ? 'n/a' : `${r >= 100 ? Math.round(r) : r.toFixed(1)} msg/s`);

/** a / b, and whether it reaches the target (target null: a figure for scale, no target). */
function ratio(a, b, target) {
  if (!a || !b) return { value: null, target, met: null };
  return { value: a / b, target, met: target === null ? null : a / b >= target };
}

function fmtRatio(name, r) {
  if (r.value === null) return `${name} n/a`;
  if (r.target === null) return `${name} ${r.value.toFixed(2)}`;
  return `${name} ${r.value.toFixed(2)} (target ≥ ${r.target}: ${r.met ? 'met' : 'NOT met'})`;
}

function report(throughput, memory) {
  const lines = [];
  for (const [key, scenario] of Object.entries(throughput ?? {})) {
    // The issue's targets are for one message per connection, as most MX traffic arrives; the
    // other scenario's ratios are figures for scale.
    const targeted = key === SCENARIOS[0].key;
    const mw = scenario.servers.mailwire?.rate;
    const sink = scenario.servers['smtp-sink']?.rate;
    const md = scenario.servers.MailDev?.rate;
    const bare = scenario.servers['smtp-server']?.rate;
    scenario.ratios = {
      mailwireToSink: ratio(mw, sink, targeted ? settings.targets.vsSink : null),
      mailwireToMailDev: ratio(mw, md, targeted ? settings.targets.vsMailDev : null),
      // No targets: how far the library alone gets towards smtp-sink, and how much of that mailwire keeps.
      bareToSink: ratio(bare, sink, null),
      mailwireToBare: ratio(mw, bare, null),
    };
    lines.push(
      `${scenario.label}: mailwire ${fmtRate(mw)} | smtp-sink ${fmtRate(sink)} | MailDev ${fmtRate(md)} | ` +
        `${fmtRatio('mailwire/sink', scenario.ratios.mailwireToSink)} | ${fmtRatio('mailwire/MailDev', scenario.ratios.mailwireToMailDev)}`,
    );
    if (bare) {
      lines.push(
        `    smtp-server alone (reads and discards, no fsync, no parse, no store) ${fmtRate(bare)} | ` +
          `${fmtRatio('smtp-server/sink', scenario.ratios.bareToSink)} | ${fmtRatio('mailwire/smtp-server', scenario.ratios.mailwireToBare)}`,
      );
    }
    const s = scenario.servers.mailwire;
    if (s) {
      const cpu = (name) => scenario.servers[name]?.cpuMsPerMessage;
      const cpuText = ['mailwire', 'smtp-sink', 'MailDev', 'smtp-server'].filter((n) => typeof cpu(n) === 'number').map((n) => `${n} ${cpu(n).toFixed(2)}`).join(', ');
      lines.push(`    mailwire stored ${s.stored}/${s.expectedStored} messages sent so far (API count)${cpuText ? ` | server CPU ms/msg: ${cpuText}` : ''}`);
    }
  }
  if (memory?.skipped) lines.push(`memory, ${settings.big.count} x 20 MB at once: skipped (${memory.skipped})`);
  else if (memory) {
    memory.target = { peakRssMB: settings.targets.peakRssMB, met: memory.peakRssMB < settings.targets.peakRssMB };
    lines.push(
      `memory, ${memory.count} x ${(memory.messageBytes / MiB).toFixed(1)} MiB at once: peak RSS ${memory.peakRssMB.toFixed(0)} MB ` +
        `(target < ${settings.targets.peakRssMB} MB: ${memory.target.met ? 'met' : 'NOT met'}) | baseline ${memory.baselineRssMB.toFixed(0)} MB | ` +
        `all 250 after ${memory.acceptedSeconds.toFixed(1)} s, all stored after ${memory.storedSeconds.toFixed(1)} s | ` +
        `accepted ${memory.accepted}/${memory.count}, stored ${memory.stored}/${memory.count}` +
        (memory.errors.length ? ` | errors: ${memory.errors.join('; ')}` : ''),
    );
  }
  return lines;
}

// ---------------------------------------------------------------------------------------------

async function main() {
  if (!existsSync(MAILWIRE_CLI)) throw new Error(`${MAILWIRE_CLI} is missing: run \`npm run build\` (npm run bench does it first)`);
  const sourcePath = findTool('smtp-source');
  const sinkPath = findTool('smtp-sink');
  const notes = [];
  if (!sourcePath || !sinkPath) {
    notes.push(
      'smtp-source/smtp-sink not found: they come with Postfix. Install them with `sudo apt-get install postfix` ' +
        '(choose "No configuration"; the bench never starts the Postfix daemon). Throughput runs skipped.',
    );
  }
  const haveMailDev = existsSync(MAILDEV_BIN) && !skip.has('maildev');
  if (!haveMailDev && !skip.has('maildev')) notes.push(`MailDev not found at ${MAILDEV_BIN}: run \`npm ci\` (it is a devDependency). MailDev runs skipped.`);
  for (const n of notes) console.log(`NOTE: ${n}`);

  tempDir = mkdtempSync(join(tmpdir(), 'mailwire-bench-'));
  const cpuProfDir = process.env.BENCH_CPU_PROF === '1' ? join(tmpdir(), 'mailwire-bench', `cpu-prof-${Date.now()}`) : undefined;
  const environment = { node: process.version, cpus: cpus().length, cpuModel: cpus()[0]?.model, memoryGB: +(totalmem() / 2 ** 30).toFixed(1), kernel: release() };
  console.log(`mailwire bench: node ${environment.node}, ${environment.cpus} CPUs (${environment.cpuModel}), kernel ${environment.kernel}`);
  console.log(
    `throughput: ${settings.messages} messages of ${settings.messageBytes} B payload per run and warm-up, times ${Object.entries(settings.scale).map(([k, v]) => `${v} for ${k}`).join(', ')}; ` +
      `${settings.sessions} sessions, median of ${settings.repeat} runs; mailwire with spool fsync + mailparser + SQLite, spamd off`,
  );

  let throughput = null;
  let memory = null;
  let shutdown = null;
  let wsFeed = null;

  if (sourcePath && sinkPath) {
    console.log('\nstarting smtp-sink, MailDev, smtp-server alone and mailwire; a warm-up run goes to each first');
    const servers = [];
    try {
      if (!skip.has('sink')) servers.push(await startSink(sinkPath));
      if (haveMailDev) servers.push(await startMailDev());
      if (!skip.has('bare')) servers.push(await startBareSmtpServer());
      const mailwire = await startMailwire('mailwire', { cpuProfDir });
      servers.push(mailwire);
      throughput = await runThroughput(sourcePath, servers);
      // A graceful stop is part of the job: it must finish within the grace period, exit code 0.
      const stopped = await mailwire.stop();
      shutdown = { ...stopped, ok: !stopped.forced && stopped.code === 0 };
      if (!shutdown.ok) console.log(`WARNING: mailwire did not stop cleanly on SIGTERM (${fmtExit(stopped)}${stopped.forced ? ', killed' : ''}):\n${mailwire.child.output}`);
      if (cpuProfDir) console.log(`CPU profile of the throughput mailwire: ${cpuProfDir} (open in Chrome DevTools > Performance)`);
    } finally {
      await Promise.all(servers.map((s) => s.stop()));
    }
  }

  if (!skip.has('memory')) {
    console.log(`\nmemory: a fresh mailwire gets ${settings.big.count} messages of 20 MiB (base64 attachment) on ${settings.big.count} connections at once`);
    const mem = await startMailwire('mailwire-memory');
    try {
      memory = await measureMemory(mem);
    } finally {
      await mem.stop();
    }
  }

  if (!skip.has('ws')) {
    const { runWsFeedBench, wsFeedSettings: ws } = await import('./ws-feed.mjs');
    console.log(`\nws feed: ${ws.clients} WebSocket clients on /api/v1/events while ${ws.rate} msg/s arrive for ${ws.seconds} s`);
    wsFeed = await runWsFeedBench();
  }

  // POST /submit throughput (bench/submit.mjs): relaying to smtp-sink and through the File mailer.
  let submit = null;
  if (sinkPath && !skip.has('submit')) submit = await (await import('./submit.mjs')).runSubmitBench({ sinkPath });

  // Hook overhead (bench/hooks.mjs): 10 trivial hooks over the phases against none, same run.
  let hooks = null;
  if (sourcePath && !skip.has('hooks')) {
    console.log('\nhooks: 10 trivial hooks over the SMTP phases against none');
    hooks = await (await import('./hooks.mjs')).runHooksBench({ sourcePath });
  }

  const lines = [...report(throughput, memory), ...(submit?.lines ?? []), ...(hooks?.lines ?? [])];
  if (wsFeed) {
    const f = (v) => (v === null ? 'n/a' : `${v.toFixed(1)} ms`);
    lines.push(
      `ws feed, ${wsFeed.clients} clients at ${wsFeed.achievedRate} msg/s: 250 -> frame p50 ${f(wsFeed.p50Ms)} | p99 ${f(wsFeed.p99Ms)} | max ${f(wsFeed.maxMs)} ` +
        `(target p99 < ${wsFeed.target.p99Ms} ms: ${wsFeed.target.met ? 'met' : 'NOT met'}) | ${wsFeed.missingFrames} frames missing | ` +
        `median of ${wsFeed.runs.length} runs, p99 of each: ${wsFeed.runs.map((r) => f(r.p99Ms)).join(', ')}`,
    );
  }
  console.log('\n=== results (median of runs; ratios against references measured in this run) ===');
  for (const l of lines) console.log(l);
  if (throughput) {
    console.log('\nsmtp-source commands:');
    for (const scenario of Object.values(throughput)) console.log(`  ${scenario.label}: ${scenario.servers.mailwire?.command}`);
  }
  for (const n of notes) console.log(`NOTE: ${n}`);

  mkdirSync(join(tmpdir(), 'mailwire-bench'), { recursive: true });
  writeFileSync(RESULTS_FILE, JSON.stringify({ at: new Date().toISOString(), environment, settings, throughput, memory, wsFeed, submit, hooks, shutdown, notes }, null, 2) + '\n');
  console.log(`\nJSON: ${RESULTS_FILE}`);
}

main().then(
  () => {
    killAll();
    removeTempDir();
    process.exit(0);
  },
  (err) => {
    console.error(`\nbench crashed: ${err?.stack ?? err}`);
    killAll();
    removeTempDir();
    process.exit(1);
  },
);
