/**
 * Child process for the durability test: sends COUNT messages with unique Message-Ids over a few
 * parallel connections and prints "OK <message-id>" for every 250, as soon as it arrives.
 * Stops early once the server is clearly gone (consecutive connection failures).
 * Usage: node --import tsx send-many.ts PORT COUNT
 */
import nodemailer from 'nodemailer';

const [port, count] = process.argv.slice(2).map(Number) as [number, number];
const PARALLEL = 8;
const MAX_CONSECUTIVE_FAILURES = 20;

let next = 0;
let failures = 0;

async function worker(w: number): Promise<void> {
  const transport = nodemailer.createTransport({
    host: '127.0.0.1',
    port,
    secure: false,
    ignoreTLS: true,
    pool: true,
    maxConnections: 1,
    maxMessages: Infinity,
    connectionTimeout: 2000,
    greetingTimeout: 2000,
    socketTimeout: 5000,
  });
  while (next < count && failures < MAX_CONSECUTIVE_FAILURES) {
    const n = next++;
    const messageId = `<durability-${n}-${w}@test.mailwire>`;
    try {
      const info = await transport.sendMail({
        from: 'sender@example.org',
        to: 'rcpt@example.test',
        subject: `durability ${n}`,
        messageId,
        text: `message ${n}\n`,
      });
      if (info.response.startsWith('250 ')) {
        failures = 0;
        process.stdout.write(`OK ${messageId}\n`);
      }
    } catch {
      failures++;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  transport.close();
}

await Promise.all(Array.from({ length: PARALLEL }, (_, w) => worker(w)));
process.stdout.write('DONE\n');
