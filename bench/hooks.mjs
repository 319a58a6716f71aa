/**
 * Hook overhead (issue 5): the inbound rate of mailwire with 10 trivial hooks spread over the
 * phases, against the same build with no hooks, in the same run, runs interleaved. Target: at
 * least 0.8 of the no-hook rate (pmilter's own figure with ten handlers).
 *
 * Both servers are real child processes (`node dist/src/cli.js start`, spamd off), loaded by
 * Postfix's smtp-source with one message per connection, so every phase runs for every message
 * (connect, helo, mail, rcpt, data, header per header, eoh, body per chunk, eom, close).
 * Besides the rate, the server's CPU time per message (every thread, from /proc) is reported: it
 * is the steadier figure when other work shares the machine.
 *
 *   BENCH_HOOK_MESSAGES=1000  messages per run;  BENCH_REPEAT=3  runs per server (median)
 *   Run alone: npm run build && node bench/hooks.mjs
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MAILWIRE_CLI, mailwireStartArgs } from './mailwire-command.mjs';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

export const hooksBenchSettings = {
  messages: Number(process.env.BENCH_HOOK_MESSAGES ?? 1000),
  repeat: Number(process.env.BENCH_REPEAT ?? 3),
  sessions: 20,
  bytes: 5120,
  // As long as a timed run, as in bench/run.mjs: V8 optimises hot code only after many calls.
  warmup: Number(process.env.BENCH_HOOK_MESSAGES ?? 1000),
  target: 0.8,
  runTimeoutMs: 180_000,
};

// Ten trivial hooks, one per phase where a message passes (abort and unknown do not run here).
const HOOKS = {
  connect: 'export default { connect(ctx) { ctx.scratch.set("t", Date.now()); } };',
  helo: 'export default { helo(ctx) { if (!ctx.session.helo) return { verdict: "reject" }; } };',
  mail: 'export default { mail(ctx) { if (ctx.address.address === "blocked@bench.test") return { verdict: "reject" }; } };',
  rcpt: 'export default { rcpt(ctx) { if (ctx.envelope.rcptTo.length > 50) return { verdict: "tempfail" }; } };',
  data: 'export default { data() {} };',
  header: 'export default { header(ctx) { if (ctx.header.name === "X-Block") return { verdict: "reject" }; } };',
  eoh: 'export default { eoh(ctx) { ctx.scratch.set("headers", ctx.headers.length); } };',
  body: 'export default { body(ctx) { ctx.scratch.set("bytes", ctx.chunk.length); } };',
  eom: 'export default { async eom(ctx) { if (ctx.spam.status === "spam") return { verdict: "reject" }; } };',
  close: 'export default { close() {} };',
};

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function cpuSeconds(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return null;
  }
}

async function startServer(base, name, withHooks) {
  const dir = join(base, name);
  const configDir = join(dir, 'config');
  mkdirSync(join(configDir, 'hooks'), { recursive: true });
  const lines = [
    'log: { level: warn }',
    'smtp: { limits: { max_connections: 1000, max_connections_per_ip: 1000 } }',
    `tls: { cert: ${JSON.stringify(join(dir, 'cert.pem'))}, key: ${JSON.stringify(join(dir, 'key.pem'))} }`,
  ];
  if (withHooks) {
    writeFileSync(join(configDir, 'hooks', 'package.json'), '{ "type": "module" }\n');
    for (const [phase, source] of Object.entries(HOOKS)) writeFileSync(join(configDir, 'hooks', `${phase}.mjs`), source + '\n');
    lines.push(`hooks: { phases: { ${Object.keys(HOOKS).map((p) => `${p}: [${p}.mjs]`).join(', ')} } }`);
  }
  writeFileSync(join(configDir, 'mailwire.yml'), lines.join('\n') + '\n');
  const [smtpPort, httpPort] = [await freePort(), await freePort()];
  const child = spawn(process.execPath, mailwireStartArgs(configDir), {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, MAILWIRE_DATA_DIR: join(dir, 'data'), MAILWIRE_SMTP_HOST: '127.0.0.1', MAILWIRE_SMTP_PORT: String(smtpPort), MAILWIRE_HTTP_HOST: '127.0.0.1', MAILWIRE_HTTP_PORT: String(httpPort), MAILWIRE_SPAMD: 'off' },
  });
  let output = '';
  child.stdout.on('data', (d) => (output += d));
  child.stderr.on('data', (d) => (output += d));
  const exited = new Promise((r) => child.once('exit', r));
  const api = `http://127.0.0.1:${httpPort}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${name} exited at start:\n${output}`);
    const ok = await fetch(`${api}/readyz`).then((r) => r.status === 200, () => false);
    if (ok) break;
    if (Date.now() > deadline) throw new Error(`${name} not ready in 30 s:\n${output}`);
    await sleep(100);
  }
  return {
    name,
    port: smtpPort,
    pid: child.pid,
    /** Messages stored so far (the pipeline's accepted counter). */
    async accepted() {
      const text = await (await fetch(`${api}/metrics`)).text();
      return [...text.matchAll(/^mailwire_messages_total\{[^}]*result="accepted"[^}]*\} (\d+)/gm)].reduce((n, m) => n + Number(m[1]), 0);
    },
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 20_000);
      await exited;
      clearTimeout(t);
    },
  };
}

async function smtpSource(sourcePath, port, messages) {
  const s = hooksBenchSettings;
  const args = ['-s', String(s.sessions), '-m', String(messages), '-l', String(s.bytes), '-f', 'sender@bench.test', '-t', 'rcpt@bench.test', `127.0.0.1:${port}`];
  const started = performance.now();
  const child = spawn(sourcePath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), s.runTimeoutMs);
  const code = await new Promise((r) => child.once('exit', r));
  clearTimeout(timer);
  const seconds = (performance.now() - started) / 1000;
  if (code !== 0) throw new Error(`smtp-source exited ${code}: ${out.trim().split('\n').slice(-3).join(' | ')}`);
  return messages / seconds;
}

/** Waits until the server stored what it accepted, so one run's store work never lands in the next. */
async function settle(server, expected) {
  const deadline = Date.now() + 60_000;
  while ((await server.accepted()) < expected && Date.now() < deadline) await sleep(50);
}

export async function runHooksBench({ sourcePath }) {
  const s = hooksBenchSettings;
  if (!existsSync(MAILWIRE_CLI)) throw new Error(`${MAILWIRE_CLI} is missing: run npm run build`);
  const base = mkdtempSync(join(tmpdir(), 'mailwire-bench-hooks-'));
  const servers = [];
  try {
    servers.push(await startServer(base, 'no-hooks', false), await startServer(base, '10-hooks', true));
    const sent = new Map(servers.map((x) => [x, 0]));
    for (const server of servers) {
      await smtpSource(sourcePath, server.port, s.warmup);
      sent.set(server, s.warmup);
      await settle(server, s.warmup);
    }
    const runs = new Map(servers.map((x) => [x, { rates: [], cpu: [] }]));
    for (let rep = 1; rep <= s.repeat; rep++) {
      for (const server of servers) {
        const before = cpuSeconds(server.pid);
        const rate = await smtpSource(sourcePath, server.port, s.messages);
        sent.set(server, sent.get(server) + s.messages);
        await settle(server, sent.get(server));
        const after = cpuSeconds(server.pid);
        const cpu = before === null || after === null ? null : ((after - before) * 1000) / s.messages;
        runs.get(server).rates.push(rate);
        if (cpu !== null) runs.get(server).cpu.push(cpu);
        console.log(`  run ${rep}/${s.repeat} ${server.name.padEnd(9)} ${Math.round(rate)} msg/s${cpu === null ? '' : ` | CPU ${cpu.toFixed(2)} ms/msg`}`);
      }
    }
    const [plain, hooked] = servers.map((x) => ({ rate: median(runs.get(x).rates), cpuMsPerMessage: runs.get(x).cpu.length ? median(runs.get(x).cpu) : null }));
    const ratio = plain.rate ? hooked.rate / plain.rate : null;
    const result = { settings: s, noHooks: plain, tenHooks: hooked, ratio, met: ratio !== null && ratio >= s.target };
    const cpuNote = plain.cpuMsPerMessage && hooked.cpuMsPerMessage ? ` | CPU ${plain.cpuMsPerMessage.toFixed(2)} -> ${hooked.cpuMsPerMessage.toFixed(2)} ms/msg` : '';
    result.lines = [
      `hooks, 10 trivial hooks over the phases vs none (1 msg/connection, ${s.sessions} sessions): ${Math.round(hooked.rate)} vs ${Math.round(plain.rate)} msg/s = ` +
        `${ratio === null ? 'n/a' : ratio.toFixed(2)} (target >= ${s.target}: ${result.met ? 'met' : 'NOT met'})${cpuNote}`,
    ];
    return result;
  } finally {
    await Promise.all(servers.map((x) => x.stop()));
    if (process.env.BENCH_KEEP !== '1') rmSync(base, { recursive: true, force: true });
  }
}

// Run alone: node bench/hooks.mjs
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const sourcePath = ['/usr/sbin/smtp-source', '/usr/bin/smtp-source'].find((p) => existsSync(p));
  if (!sourcePath) {
    console.log('smtp-source not found (it comes with Postfix): hook bench skipped');
    process.exit(0);
  }
  runHooksBench({ sourcePath }).then(
    (r) => {
      for (const l of r.lines) console.log(l);
      process.exit(0);
    },
    (err) => {
      console.error(err);
      process.exit(1);
    },
  );
}
