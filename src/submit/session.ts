/** The Haineko session object /submit answers with, and its queue id. */
import { randomInt } from 'node:crypto';
import type { ResponseEntry } from '../relay/types.js';

export interface SessionInfo {
  queueid: string;
  referer: string;
  useragent: string | null;
  remoteaddr: string;
  remoteport: number;
  started: Date;
}

export interface SessionBody {
  queueid: string;
  referer: string;
  useragent: string | null;
  remoteaddr: string;
  remoteport: number;
  addresser: string | null;
  recipient: string[];
  timestamp: { datetime: string; unixtime: number };
  response: ResponseEntry[];
}

// Haineko's queue id alphabet: 60 characters, so each time field fits in one.
const CHARS = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwx';

/**
 * A 16-character queue id like Haineko's: year, month, day, hour, minute and second as one
 * character each, then 10 random ones (60^10, about 6e17, per second: no collisions in practice).
 */
export function makeQueueId(now = new Date()): string {
  let id = '';
  for (const n of [now.getUTCFullYear() % 60, now.getUTCMonth(), now.getUTCDate(), now.getUTCHours(), now.getUTCMinutes(), now.getUTCSeconds()]) id += CHARS[n];
  while (id.length < 16) id += CHARS[randomInt(CHARS.length)];
  return id;
}

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** Perl's Time::Piece cdate, which Haineko sends: `Thu Jul  4 18:00:00 2013` (local time). */
export function cdate(d: Date): string {
  const two = (n: number) => String(n).padStart(2, '0');
  return `${DAYS[d.getDay()]} ${MONTHS[d.getMonth()]} ${String(d.getDate()).padStart(2, ' ')} ${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())} ${d.getFullYear()}`;
}

export function sessionBody(s: SessionInfo, addresser: string | null, recipient: string[], response: ResponseEntry[]): SessionBody {
  return {
    queueid: s.queueid,
    referer: s.referer,
    useragent: s.useragent,
    remoteaddr: s.remoteaddr,
    remoteport: s.remoteport,
    addresser,
    recipient,
    timestamp: { datetime: cdate(s.started), unixtime: Math.floor(s.started.getTime() / 1000) },
    response,
  };
}
