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
