/** The one module that imports pino. Everything else takes a Logger. */
import { pino, type Logger as PinoLogger } from 'pino';

export type Logger = PinoLogger;

export function createLogger(level: string = 'info', destination?: NodeJS.WritableStream): Logger {
  return pino(
    {
      level,
      base: { app: 'mailwire' },
      // Credentials must never reach a log line, whatever object a caller passes in.
      redact: { paths: ['password', '*.password', 'pass', '*.pass', 'authorization', '*.authorization'], censor: '[redacted]' },
    },
    destination ?? process.stdout,
  );
}

/** A logger that writes nothing, for tests that do not look at logs. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
