/** Runs the server: load config, start the app, stop gracefully on SIGTERM/SIGINT. */
import { createApp } from './app.js';
import { loadConfig } from './config/load.js';
import { createLogger } from './log/logger.js';

/** Resolves with the exit code once the server has stopped. Config errors throw ConfigError. */
export async function runServer(configDir: string): Promise<number> {
  const config = loadConfig(configDir);
  const logger = createLogger(config.log.level);
  const app = createApp(config, { logger });
  try {
    await app.start();
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    // One line, naming what failed: a port in use is the usual cause.
    console.error(`mailwire: cannot start: ${e.message}`);
    await app.stop().catch(() => {});
    return 1;
  }
  // A promise that rejects with nobody waiting for it (a hook's `fetch(a); await fetch(b)`)
  // would end the process, Node's default, taking every session with it. mailwire's own code
  // handles its rejections; such a one is logged and the server goes on, as an MTA outlives a
  // broken milter.
  process.on('unhandledRejection', (reason) => {
    logger.error({ err: reason }, 'a promise rejected with nobody waiting for it (a hook that does not await one?); the server goes on');
  });
  return new Promise((resolve) => {
    let stopping = false;
    const shutdown = (signal: string) => {
      if (stopping) return;
      stopping = true;
      logger.info({ signal }, 'stopping: finishing sessions in flight');
      app.stop().then(
        () => resolve(0),
        (err) => {
          logger.error({ err }, 'stop failed');
          resolve(1);
        },
      );
    };
    process.once('SIGTERM', () => shutdown('SIGTERM'));
    process.once('SIGINT', () => shutdown('SIGINT'));
  });
}
