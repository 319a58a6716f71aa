/**
 * TLS material for the SMTP listeners. When the configured key and certificate are missing
 * a self-signed pair is generated once and kept, so STARTTLS works out of the box. We never
 * fall back to smtp-server's bundled certificate: its private key is public.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { generate } from 'selfsigned';
import type { Logger } from '../log/logger.js';

export interface TlsMaterial {
  key: Buffer;
  cert: Buffer;
  generated: boolean;
}

export async function ensureTlsMaterial(certPath: string, keyPath: string, hostname: string, logger: Logger): Promise<TlsMaterial> {
  const certFile = resolve(certPath);
  const keyFile = resolve(keyPath);
  if (existsSync(certFile) && existsSync(keyFile)) {
    return { key: readFileSync(keyFile), cert: readFileSync(certFile), generated: false };
  }
  if (existsSync(certFile) !== existsSync(keyFile)) {
    // Half a pair is an operator mistake; generating over it would hide that.
    throw new Error(`TLS: only one of ${certFile} and ${keyFile} exists; provide both or neither`);
  }
  const pems = await generate([{ name: 'commonName', value: hostname }], {
    keySize: 2048,
    days: 825, // the longest validity clients still accept for a leaf certificate
    algorithm: 'sha256',
    extensions: [
      { name: 'basicConstraints', cA: false },
      { name: 'keyUsage', digitalSignature: true, keyEncipherment: true },
      { name: 'extKeyUsage', serverAuth: true },
      {
        name: 'subjectAltName',
        altNames: [
          { type: 2, value: hostname },
          { type: 2, value: 'localhost' },
          { type: 7, ip: '127.0.0.1' },
          { type: 7, ip: '::1' },
        ],
      },
    ],
  } as Parameters<typeof generate>[1]);
  mkdirSync(dirname(keyFile), { recursive: true });
  mkdirSync(dirname(certFile), { recursive: true });
  // Each file is written under a temporary name and renamed, key first: a crash can leave a
  // key without a certificate (start then refuses with a clear message) but never a torn file.
  writeAtomically(keyFile, pems.private, 0o600);
  writeAtomically(certFile, pems.cert, 0o644);
  logger.warn({ cert: certFile, key: keyFile }, 'generated a self-signed TLS certificate; replace it with a real one for public use');
  return { key: Buffer.from(pems.private), cert: Buffer.from(pems.cert), generated: true };
}

function writeAtomically(file: string, content: string, mode: number): void {
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, content, { mode });
  renameSync(tmp, file);
}
