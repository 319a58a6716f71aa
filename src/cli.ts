#!/usr/bin/env node
/**
 * mailwire command line:
 *   mailwire start [--config-dir DIR]          run the server (also: npm start)
 *   mailwire check-config [--config-dir DIR]   validate the configuration and tables, exit 0 or 1
 *   mailwire print-config [--config-dir DIR]   print the effective configuration (defaults, file, environment)
 *   mailwire pw [--scheme ssha|ssha256|ssha512]  print a password hash for config/password (password from stdin)
 *   mailwire setup --dest DIR                  write a commented starter config directory
 */
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig, resolveConfigDir } from './config/load.js';
import { toYaml } from './config/yaml.js';
import { WatchedTable } from './config/table.js';
import { domainsSchema, EMPTY_DOMAINS } from './policy/domains.js';
import { silentLogger } from './log/logger.js';
import { runServer } from './main.js';
import { hashPassword, PASSWORD_SCHEMES, type PasswordScheme } from './auth/ssha.js';
import { PasswordInputError, readPassword } from './auth/read-password.js';
import { createRouting } from './routing/routing.js';
import { HookRegistry } from './hooks/registry.js';
import { SetupError, setupConfigDir } from './routing/setup.js';
import { hostname } from 'node:os';

const USAGE = `usage: mailwire <start|check-config|print-config> [--config-dir DIR]
       mailwire pw [--scheme ssha|ssha256|ssha512]
       mailwire setup --dest DIR`;

/** Set by a command that must end the process when done, whatever handles are still open. */
let exitWhenDone = false;

async function cli(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, allowPositionals: true, options: { 'config-dir': { type: 'string' }, scheme: { type: 'string' }, dest: { type: 'string' }, help: { type: 'boolean', short: 'h' } } });
  } catch (err) {
    console.error(`mailwire: ${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  const [command = 'start'] = parsed.positionals;
  if (parsed.values.help) {
    console.log(USAGE);
    return 0;
  }
  const configDir = resolveConfigDir(parsed.values['config-dir']);
  try {
    switch (command) {
      case 'start':
        return await runServer(configDir);
      case 'check-config': {
        // It runs the hooks' top-level code, which may leave a timer or a socket open: the
        // process must end all the same. (start ends once the server has stopped.)
        exitWhenDone = true;
        const config = loadConfig(configDir);
        // Tables are checked too: a broken table stops the start the same way.
        new WatchedTable(configDir, 'domains', domainsSchema, EMPTY_DOMAINS, silentLogger());
        createRouting(configDir, silentLogger(), { hostname: hostname(), watch: false }).close();
        // And the hooks, loaded as the start loads them (their top-level code runs): a missing
        // file, a syntax error or a missing handler stops the start the same way.
        await new HookRegistry(config.hooks, config.configDir, silentLogger()).load();
        console.log(`configuration in ${configDir} is valid`);
        return 0;
      }
      case 'print-config': {
        const { configDir: dir, ...config } = loadConfig(configDir);
        process.stdout.write(`# effective configuration (defaults, ${dir}/mailwire.yml, MAILWIRE_* environment)\n${toYaml(config)}`);
        return 0;
      }
      case 'pw': {
        const scheme = (parsed.values.scheme ?? 'ssha512').toLowerCase() as PasswordScheme;
        if (!PASSWORD_SCHEMES.includes(scheme)) {
          console.error(`mailwire: --scheme must be one of ${PASSWORD_SCHEMES.join(', ')}`);
          return 2;
        }
        try {
          console.log(hashPassword(await readPassword(), scheme));
        } catch (err) {
          if (!(err instanceof PasswordInputError)) throw err;
          console.error(`mailwire: ${err.message}`);
          return 1;
        }
        return 0;
      }
      case 'setup': {
        if (!parsed.values.dest) {
          console.error(`mailwire: setup needs --dest DIR\n${USAGE}`);
          return 2;
        }
        try {
          const written = setupConfigDir(parsed.values.dest);
          console.log(`wrote ${written.length} files to ${parsed.values.dest}:\n${written.map((f) => `  ${f}`).join('\n')}`);
        } catch (err) {
          if (!(err instanceof SetupError)) throw err;
          console.error(`mailwire: ${err.message}`);
          return 1;
        }
        return 0;
      }
      default:
        console.error(`mailwire: unknown command ${JSON.stringify(command)}\n${USAGE}`);
        return 2;
    }
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`mailwire: ${err.message}`);
      return 1;
    }
    throw err;
  }
}

cli(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    if (exitWhenDone) process.exit(code);
  },
  (err) => {
    console.error(`mailwire: ${(err as Error).stack ?? err}`);
    process.exitCode = 1;
  },
);
