/**
 * A YAML table from the config directory (domains, and later the Haineko tables) that is
 * reloaded when it changes. A broken edit keeps the last good version and logs why, so a
 * typo never takes the server down or opens it up.
 */
import { existsSync, readFileSync, watch, type FSWatcher } from 'node:fs';
import { join } from 'node:path';
import type { ZodType } from 'zod';
import type { Logger } from '../log/logger.js';
import { parseYaml } from './yaml.js';
import { ConfigError } from './load.js';

// Editors write files in several steps (truncate, write, rename); wait for the burst to end.
const RELOAD_DEBOUNCE_MS = 100;

export class WatchedTable<T> {
  #value: T;
  #watcher: FSWatcher | null = null;
  #timer: NodeJS.Timeout | null = null;
  #listeners = new Set<(value: T) => void>();
  readonly path: string;

  constructor(
    configDir: string,
    readonly name: string,
    private readonly schema: ZodType<T>,
    private readonly fallback: T,
    private readonly logger: Logger,
  ) {
    this.path = join(configDir, name);
    // At start a broken table is fatal: better not to start than to start with the wrong policy.
    this.#value = this.#read();
  }

  get value(): T {
    return this.#value;
  }

  onChange(fn: (value: T) => void): void {
    this.#listeners.add(fn);
  }

  /** Starts watching the directory (the file may not exist yet, or be replaced by rename). */
  watch(): void {
    if (this.#watcher) return;
    const dir = join(this.path, '..');
    if (!existsSync(dir)) return;
    try {
      this.#watcher = watch(dir, (_event, filename) => {
        if (filename && filename.toString() !== this.name) return;
        if (this.#timer) clearTimeout(this.#timer);
        this.#timer = setTimeout(() => this.reload(), RELOAD_DEBOUNCE_MS);
      });
      this.#watcher.on('error', (err) => this.logger.warn({ err, table: this.name }, 'table watcher failed; changes need a restart'));
    } catch (err) {
      this.logger.warn({ err, table: this.name }, 'cannot watch table; changes need a restart');
    }
  }

  /** Re-reads the file; on error keeps the last good value. Returns whether it changed. */
  reload(): boolean {
    try {
      this.#value = this.#read();
      this.logger.info({ table: this.name }, 'table reloaded');
      for (const fn of this.#listeners) fn(this.#value);
      return true;
    } catch (err) {
      this.logger.error({ table: this.name, reason: (err as Error).message }, 'table has errors; keeping the last good version');
      return false;
    }
  }

  close(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#watcher?.close();
    this.#watcher = null;
  }

  #read(): T {
    if (!existsSync(this.path)) return this.fallback;
    let raw: unknown;
    try {
      raw = parseYaml(readFileSync(this.path, 'utf8'));
    } catch (err) {
      throw new ConfigError(`${this.path}: invalid YAML: ${(err as Error).message.split('\n')[0]}`);
    }
    const parsed = this.schema.safeParse(raw ?? {});
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      const key = issue.path.join('.') || '(top level)';
      // A misspelt key is named, as config/load.ts does for mailwire.yml.
      if (issue.code === 'unrecognized_keys') {
        const prefix = issue.path.length ? issue.path.join('.') + '.' : '';
        throw new ConfigError(`${this.path}: unknown key ${issue.keys.map((k) => prefix + k).join(', ')}`);
      }
      throw new ConfigError(`${this.path}: ${key}: ${issue.message}`);
    }
    return parsed.data;
  }
}
