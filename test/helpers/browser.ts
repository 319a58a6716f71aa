/**
 * Browser tests: Debian's chromium (never a downloaded browser) driven by playwright-core,
 * real SMTP with nodemailer, and a local HTTP server that counts what a page fetches.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import nodemailer from 'nodemailer';
import type Mail from 'nodemailer/lib/mailer/index.js';
import { chromium, type Browser } from 'playwright-core';
import { queuedId } from './app.js';

/** Debian's package; the tests never download a browser. test/install-deps.sh installs it. */
export const CHROMIUM = '/usr/bin/chromium';

/** One headless chromium per test file: launching costs about a second. */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // Root in a container: chromium's own sandbox needs user namespaces we may not have.
    // /dev/shm is small in containers; the GPU is absent.
    args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'],
  });
}

/** Sends one message over plain SMTP to the app and returns its mailwire id (from the 250 reply). */
export async function sendMail(smtpPort: number, mail: Mail.Options): Promise<string> {
  const transport = nodemailer.createTransport({ host: '127.0.0.1', port: smtpPort, secure: false, ignoreTLS: true });
  try {
    const info = await transport.sendMail({ from: 'Alice Sender <alice@example.org>', to: 'bob@example.test', ...mail });
    return queuedId(info.response);
  } finally {
    transport.close();
  }
}

export interface CountingServer {
  /** http://127.0.0.1:port */
  url: string;
  /** Requests seen, by path (query included). */
  hits: Map<string, number>;
  count(path: string): number;
  close(): Promise<void>;
}

/** A 1x1 transparent GIF: what a tracking pixel is. */
const PIXEL = Buffer.from('R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7', 'base64');

/**
 * A "remote" web server on loopback that answers every request with a pixel and counts it:
 * remote images, tracking beacons and script payloads in a test mail point here, so a test
 * can tell exactly what the browser fetched.
 */
export async function startCountingServer(): Promise<CountingServer> {
  const hits = new Map<string, number>();
  const server: Server = createServer((req, res) => {
    const path = req.url ?? '/';
    hits.set(path, (hits.get(path) ?? 0) + 1);
    res.writeHead(200, { 'content-type': 'image/gif', 'content-length': PIXEL.length, 'cache-control': 'no-store' });
    res.end(PIXEL);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    hits,
    count: (path) => hits.get(path) ?? 0,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
