/**
 * A minimal authoritative DNS responder on loopback UDP, answering MX and A questions from a
 * fixed zone. A fake, allowed here because it stands in for the Internet's DNS, which no test
 * may depend on: the MX mailer's own resolver is pointed at it.
 */
import { createSocket } from 'node:dgram';
import type { AddressInfo } from 'node:net';

export interface Zone {
  [name: string]: { mx?: [number, string][]; a?: string[] };
}

function encodeName(name: string): Buffer {
  const labels = name.split('.').filter(Boolean);
  return Buffer.concat([...labels.map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)])), Buffer.from([0])]);
}

function readQuestion(msg: Buffer): { name: string; type: number; end: number } | null {
  let off = 12;
  const labels: string[] = [];
  while (off < msg.length) {
    const len = msg[off]!;
    if (len === 0) break;
    if (len > 63) return null;
    labels.push(msg.subarray(off + 1, off + 1 + len).toString());
    off += len + 1;
  }
  if (off + 5 > msg.length) return null;
  return { name: labels.join('.').toLowerCase(), type: msg.readUInt16BE(off + 1), end: off + 5 };
}

function record(type: number, rdata: Buffer): Buffer {
  const head = Buffer.alloc(12);
  head.writeUInt16BE(0xc00c, 0); // the name: a pointer to the question's
  head.writeUInt16BE(type, 2);
  head.writeUInt16BE(1, 4); // IN
  head.writeUInt32BE(60, 6);
  head.writeUInt16BE(rdata.length, 10);
  return Buffer.concat([head, rdata]);
}

export async function startDnsResponder(zone: Zone): Promise<{ server: string; close(): Promise<void> }> {
  const socket = createSocket('udp4');
  socket.on('message', (msg, rinfo) => {
    if (msg.length < 12) return;
    const q = readQuestion(msg);
    if (!q) return;
    const entry = zone[q.name];
    const answers: Buffer[] = [];
    if (entry && q.type === 15) {
      for (const [prio, exchange] of entry.mx ?? []) {
        const p = Buffer.alloc(2);
        p.writeUInt16BE(prio);
        answers.push(record(15, Buffer.concat([p, encodeName(exchange)])));
      }
    }
    if (entry && q.type === 1) for (const a of entry.a ?? []) answers.push(record(1, Buffer.from(a.split('.').map(Number))));
    const header = Buffer.alloc(12);
    header.writeUInt16BE(msg.readUInt16BE(0), 0);
    header.writeUInt16BE(0x8400 | (msg.readUInt16BE(2) & 0x0100) | (entry ? 0 : 3), 2); // QR AA, RD copied, NXDOMAIN if unknown
    header.writeUInt16BE(1, 4);
    header.writeUInt16BE(answers.length, 6);
    socket.send(Buffer.concat([header, msg.subarray(12, q.end), ...answers]), rinfo.port, rinfo.address);
  });
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', () => resolve()));
  const { port } = socket.address() as AddressInfo;
  return { server: `127.0.0.1:${port}`, close: () => new Promise<void>((resolve) => socket.close(() => resolve())) };
}
