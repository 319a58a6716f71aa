/**
 * Reads a password for `mailwire pw`: from a terminal twice, without echo, and the two must
 * match; from a pipe once (the first line, without its line ending).
 */
import { MAX_PASSWORD_BYTES } from './ssha.js';

export class PasswordInputError extends Error {
  override name = 'PasswordInputError';
}

export async function readPassword(stdin: NodeJS.ReadStream = process.stdin, stderr: NodeJS.WriteStream = process.stderr): Promise<string> {
  let password: string;
  if (stdin.isTTY) {
    password = await readHidden(stdin, stderr, 'Password: ');
    const again = await readHidden(stdin, stderr, 'Again: ');
    if (password !== again) throw new PasswordInputError('the passwords do not match');
  } else {
    password = await readFirstLine(stdin);
  }
  if (password === '') throw new PasswordInputError('the password is empty');
  if (Buffer.byteLength(password, 'utf8') > MAX_PASSWORD_BYTES) throw new PasswordInputError(`the password is longer than ${MAX_PASSWORD_BYTES} bytes`);
  return password;
}

async function readFirstLine(stdin: NodeJS.ReadStream): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of stdin) {
    chunks.push(chunk as Buffer);
    size += (chunk as Buffer).length;
    // Enough for the longest accepted password; the rest of a huge pipe is not read.
    if (size > MAX_PASSWORD_BYTES + 2 || (chunk as Buffer).includes(0x0a)) break;
  }
  const text = Buffer.concat(chunks).toString('utf8');
  const nl = text.indexOf('\n');
  return (nl === -1 ? text : text.slice(0, nl)).replace(/\r$/, '');
}

function readHidden(stdin: NodeJS.ReadStream, stderr: NodeJS.WriteStream, prompt: string): Promise<string> {
  return new Promise((resolve, reject) => {
    stderr.write(prompt);
    let value = '';
    stdin.setRawMode(true);
    stdin.resume();
    stdin.setEncoding('utf8');
    const done = (err: Error | null) => {
      stdin.off('data', onData);
      stdin.setRawMode(false);
      stdin.pause();
      stderr.write('\n');
      if (err) reject(err);
      else resolve(value);
    };
    const onData = (input: string) => {
      for (const ch of input) {
        if (ch === '\r' || ch === '\n') return done(null);
        if (ch === '\u0003' || ch === '\u0004') return done(new PasswordInputError('cancelled'));
        if (ch === '\u007f' || ch === '\b') value = value.slice(0, -1);
        else value += ch;
      }
    };
    stdin.on('data', onData);
  });
}
