#!/usr/bin/env node
/**
 * POST /submit throughput: mailwire (built, `dist/`) relaying to Postfix's smtp-sink through the
 * ESMTP mailer (pooled connections), with 1 and with 4 recipients per request, and the same
 * requests through the File mailer. Load: keep-alive HTTP connections, each a loop of requests
 * (plain node:http, no load-tool dependency). Target: >= 500 requests/s with one recipient.
 *
 * Run alone (`npm run build && node bench/submit.mjs`) or from bench/run.mjs (`npm run bench`).
 * Knobs: BENCH_SUBMIT_REQUESTS=3000 per run, BENCH_SUBMIT_CONCURRENCY=32, BENCH_REPEAT=3.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { mailwireStartArgs } from './mailwire-command.mjs';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const SINK = '/usr/sbin/smtp-sink';

const envInt = (name, fallback) => (/^\d+$/.test(process.env[name] ?? '') && Number(process.env[name]) > 0 ? Number(process.env[name]) : fallback);
const settings = {
  requests: envInt('BENCH_SUBMIT_REQUESTS', 3000),
  concurrency: envInt('BENCH_SUBMIT_CONCURRENCY', 32),
  repeat: envInt('BENCH_REPEAT', 3),
  warmup: 200,
  target: 500,
  startTimeoutMs: 30_000,
  requestTimeoutMs: 30_000,
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

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

function greets(port) {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    const timer = setTimeout(() => done(false), 1000);
    function done(ok) {
      clearTimeout(timer);
      s.destroy();
      resolve(ok);
    }
    s.on('data', (d) => done(/^220/.test(d.toString())));
    s.on('error', () => done(false));
  });
}

async function waitUntil(what, check, child, timeoutMs = settings.startTimeoutMs) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${what}: process exited (${child.exitCode})`);
    if (await check().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

function stop(child) {
  if (child.exitCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const force = setTimeout(() => child.kill('SIGKILL'), 15_000);
    child.once('exit', () => {
      clearTimeout(force);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

function request(agent, port, body) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { agent, host: '127.0.0.1', port, method: 'POST', path: '/submit', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }, timeout: settings.requestTimeoutMs },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString() }));
      },
    );
    req.on('timeout', () => req.destroy(new Error('request timed out')));
    req.on('error', reject);
    req.end(body);
  });
}

/** n requests over `concurrency` keep-alive connections; every answer must be 200 with every recipient delivered. */
async function load(port, body, n, expectedCode) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: settings.concurrency });
  let next = 0;
  let failed = 0;
  let firstFailure = null;
  const started = performance.now();
  const worker = async () => {
    while (next < n) {
      next++;
      try {
        const r = await request(agent, port, body);
        const res = r.status === 200 ? JSON.parse(r.body).response : null;
        if (!res || res.some((e) => e.code !== expectedCode)) throw new Error(`HTTP ${r.status}: ${r.body.slice(0, 300)}`);
      } catch (err) {
        failed++;
        firstFailure ??= err.message;
      }
    }
  };
  await Promise.all(Array.from({ length: settings.concurrency }, worker));
  const seconds = (performance.now() - started) / 1000;
  agent.destroy();
  return { rate: n / seconds, seconds, failed, firstFailure };
}

export async function runSubmitBench({ sinkPath = SINK } = {}) {
  const base = mkdtempSync(join(tmpdir(), 'mailwire-bench-submit-'));
  const children = [];
  try {
    const sinkPort = await freePort();
    const user = process.getuid?.() === 0 ? ['-u', 'nobody'] : [];
    const sink = spawn(sinkPath, [...user, `127.0.0.1:${sinkPort}`, '1000'], { stdio: 'ignore' });
    children.push(sink);
    await waitUntil('smtp-sink', () => greets(sinkPort), sink);

    const configDir = join(base, 'config');
    const fileDir = join(base, 'files');
    mkdirSync(configDir, { recursive: true });
    mkdirSync(fileDir);
    writeFileSync(
      join(configDir, 'mailwire.yml'),
      ['log: { level: warn }', 'submit: { max_rcpts_per_message: 4, max_workers: 4 }', `tls: { cert: ${JSON.stringify(join(base, 'cert.pem'))}, key: ${JSON.stringify(join(base, 'key.pem'))} }`, ''].join('\n'),
    );
    writeFileSync(join(configDir, 'mailertable'), [`file.bench: { mailer: File, options: { directory: ${JSON.stringify(fileDir)} } }`, `default: { mailer: ESMTP, host: 127.0.0.1, port: ${sinkPort} }`, ''].join('\n'));
    writeFileSync(join(configDir, 'recipients'), 'open-relay: 1\n');
    const [smtpPort, httpPort] = [await freePort(), await freePort()];
    const mw = spawn(process.execPath, mailwireStartArgs(configDir), {
      cwd: ROOT,
      stdio: ['ignore', 'ignore', 'inherit'],
      env: { ...process.env, MAILWIRE_DATA_DIR: join(base, 'data'), MAILWIRE_SMTP_HOST: '127.0.0.1', MAILWIRE_SMTP_PORT: String(smtpPort), MAILWIRE_HTTP_HOST: '127.0.0.1', MAILWIRE_HTTP_PORT: String(httpPort), MAILWIRE_SPAMD: 'off' },
    });
    children.push(mw);
    await waitUntil('mailwire /readyz', async () => (await fetch(`http://127.0.0.1:${httpPort}/readyz`)).status === 200, mw);

    const body = (domain, count) =>
      JSON.stringify({
        ehlo: 'bench.example',
        mail: 'sender@bench.example',
        rcpt: Array.from({ length: count }, (_, i) => `rcpt${i}@${domain}`),
        header: { from: 'Bench <sender@bench.example>', subject: 'bench' },
        body: 'x'.repeat(2000),
      });
    const scenarios = [
      { key: 'esmtp1', label: 'ESMTP -> smtp-sink, 1 recipient', body: body('sink.bench', 1), code: 250, rcpts: 1 },
      { key: 'esmtp4', label: 'ESMTP -> smtp-sink, 4 recipients', body: body('sink.bench', 4), code: 250, rcpts: 4 },
      { key: 'file1', label: 'File mailer, 1 recipient', body: body('file.bench', 1), code: 200, rcpts: 1 },
      { key: 'file4', label: 'File mailer, 4 recipients', body: body('file.bench', 4), code: 200, rcpts: 4 },
    ];
    const results = {};
    console.log(`\n/submit: ${settings.requests} requests per run, ${settings.concurrency} keep-alive connections, median of ${settings.repeat} runs`);
    for (const s of scenarios) {
      await load(httpPort, s.body, settings.warmup, s.code);
      const runs = [];
      for (let i = 1; i <= settings.repeat; i++) {
        const r = await load(httpPort, s.body, settings.requests, s.code);
        runs.push(r);
        console.log(`  ${s.label.padEnd(34)} run ${i}: ${Math.round(r.rate)} req/s (${Math.round(r.rate * s.rcpts)} deliveries/s)${r.failed ? ` | ${r.failed} FAILED: ${r.firstFailure}` : ''}`);
      }
      results[s.key] = { label: s.label, rate: median(runs.map((r) => r.rate)), recipients: s.rcpts, failed: runs.reduce((n, r) => n + r.failed, 0) };
    }
    const filed = readdirSync(fileDir).length;
    const lines = Object.values(results).map((r) => `${r.label}: ${Math.round(r.rate)} req/s, ${Math.round(r.rate * r.recipients)} deliveries/s${r.failed ? ` (${r.failed} failed)` : ''}`);
    const met = results.esmtp1.rate >= settings.target;
    lines.push(`target >= ${settings.target} req/s with one recipient (ESMTP): ${met ? 'met' : 'NOT met'}; File mailer wrote ${filed} files`);
    return { settings, results, met, lines };
  } finally {
    await Promise.all(children.map(stop));
    rmSync(base, { recursive: true, force: true });
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  runSubmitBench().then(
    (r) => {
      console.log('\n=== /submit results (median) ===');
      for (const l of r.lines) console.log(l);
    },
    (err) => {
      console.error(`bench/submit crashed: ${err?.stack ?? err}`);
      process.exit(1);
    },
  );
}
