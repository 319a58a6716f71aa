/**
 * Loads config/mailwire.yml, applies MAILWIRE_* environment overrides (they win over the file),
 * and validates. Errors are ConfigError with a one-line message naming the key.
 */
import { readFileSync, existsSync } from 'node:fs';
import { resolve, join } from 'node:path';
import { configSchema, type Config } from './schema.js';
import { parseYaml } from './yaml.js';

export class ConfigError extends Error {
  override name = 'ConfigError';
}

export const CONFIG_FILE = 'mailwire.yml';

type Env = Record<string, string | undefined>;

export function resolveConfigDir(cliDir: string | undefined, env: Env = process.env): string {
  return resolve(cliDir ?? env.MAILWIRE_CONFIG_DIR ?? 'config');
}

/** Reads and validates the configuration from a directory (missing file = all defaults). */
export function loadConfig(configDir: string, env: Env = process.env): Config {
  const file = join(configDir, CONFIG_FILE);
  let raw: unknown = {};
  if (existsSync(file)) {
    try {
      raw = parseYaml(readFileSync(file, 'utf8')) ?? {};
    } catch (err) {
      throw new ConfigError(`${file}: invalid YAML: ${firstLine((err as Error).message)}`);
    }
    if (typeof raw !== 'object' || Array.isArray(raw)) {
      throw new ConfigError(`${file}: the top level must be a mapping of keys`);
    }
  }
  return validateConfig(applyEnv(raw as Record<string, unknown>, env), configDir, file);
}

/** Validates an already-parsed object (tests build configs this way). */
export function validateConfig(raw: unknown, configDir: string, source = 'config'): Config {
  const parsed = configSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const key = issue.path.join('.') || '(top level)';
    let what = issue.message;
    if (issue.code === 'unrecognized_keys') {
      const keys = (issue as { keys: string[] }).keys;
      const prefix = issue.path.length ? issue.path.join('.') + '.' : '';
      throw new ConfigError(`${source}: unknown key ${keys.map((k) => prefix + k).join(', ')}`);
    }
    throw new ConfigError(`${source}: ${key}: ${what}`);
  }
  return { ...parsed.data, configDir: resolve(configDir) };
}

function applyEnv(raw: Record<string, unknown>, env: Env): Record<string, unknown> {
  const out = structuredClone(raw);
  const section = (name: string): Record<string, unknown> => {
    const cur = out[name];
    if (cur === undefined || cur === null) {
      const fresh: Record<string, unknown> = {};
      out[name] = fresh;
      return fresh;
    }
    if (typeof cur !== 'object' || Array.isArray(cur)) throw new ConfigError(`${name}: must be a mapping`);
    return cur as Record<string, unknown>;
  };
  if (env.MAILWIRE_DATA_DIR) section('storage').data_dir = env.MAILWIRE_DATA_DIR;
  if (env.MAILWIRE_SMTP_HOST) section('smtp').host = env.MAILWIRE_SMTP_HOST;
  if (env.MAILWIRE_SMTP_PORT) section('smtp').port = envPort('MAILWIRE_SMTP_PORT', env.MAILWIRE_SMTP_PORT);
  if (env.MAILWIRE_HTTP_HOST) section('http').host = env.MAILWIRE_HTTP_HOST;
  if (env.MAILWIRE_HTTP_PORT) section('http').port = envPort('MAILWIRE_HTTP_PORT', env.MAILWIRE_HTTP_PORT);
  if (env.MAILWIRE_SPAMD) {
    const spamd = section('spamd');
    if (env.MAILWIRE_SPAMD === 'off') {
      spamd.enabled = false;
    } else {
      const m = /^\[?([^\]]+?)\]?:(\d{1,5})$/.exec(env.MAILWIRE_SPAMD);
      if (!m) throw new ConfigError(`MAILWIRE_SPAMD: expected host:port or off, got ${JSON.stringify(env.MAILWIRE_SPAMD)}`);
      spamd.enabled = true;
      spamd.host = m[1];
      spamd.port = envPort('MAILWIRE_SPAMD', m[2]!);
    }
  }
  return out;
}

function envPort(name: string, value: string): number {
  if (!/^\d{1,5}$/.test(value) || Number(value) > 65535) {
    throw new ConfigError(`${name}: expected a port number 0-65535, got ${JSON.stringify(value)}`);
  }
  return Number(value);
}

function firstLine(s: string): string {
  return s.split('\n')[0] ?? s;
}
