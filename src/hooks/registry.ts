/**
 * The configured hooks: loaded at start (a missing, misplaced or broken file stops the start,
 * naming the config key), then watched. A changed file is loaded again for the next sessions;
 * if it fails, sessions already running keep the version they started with, and new sessions
 * fail closed (451 4.3.0) in the phases that list the file until it is fixed.
 *
 * Sessions take a snapshot (HookSet) when they start, so one session never sees two versions.
 */
import { existsSync, watch, type FSWatcher } from 'node:fs';
import { dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import type { HooksConfig } from '../config/sections/hooks.js';
import { ConfigError } from '../config/load.js';
import type { Logger } from '../log/logger.js';
import { PHASES, type Phase } from './api.js';
import { HOOK_LOAD_TIMEOUT_MS, HookLoadError, loadHookFile, type LoadedHook } from './loader.js';

// Editors save in several steps (truncate, write, rename): wait for the burst to end (as tables do).
const RELOAD_DEBOUNCE_MS = 100;

export interface HookEntry {
  file: string;
  /** The last version that loaded. */
  hook: LoadedHook;
  /** Set while the file on disk does not load: new sessions fail closed. */
  broken: HookLoadError | null;
}

/** An immutable view of every phase's hooks, taken by a session when it starts. */
export interface HookSet {
  readonly generation: number;
  readonly byPhase: ReadonlyMap<Phase, readonly HookEntry[]>;
}

export class HookRegistry {
  readonly dir: string;
  #entries = new Map<string, HookEntry>();
  /** For each file, the phases listing it, and the first config key naming it (for errors). */
  #phasesOf = new Map<string, { phases: Phase[]; key: string }>();
  #set: HookSet = { generation: 0, byPhase: new Map() };
  #watchers: FSWatcher[] = [];
  #timers = new Map<string, NodeJS.Timeout>();
  #reloads: Promise<void> = Promise.resolve();
  #listeners = new Set<(file: string, error: HookLoadError | null) => void>();

  constructor(
    private readonly config: HooksConfig,
    configDir: string,
    private readonly logger: Logger,
    /** For tests: the load deadline of each file (see HOOK_LOAD_TIMEOUT_MS). */
    private readonly loadTimeoutMs = HOOK_LOAD_TIMEOUT_MS,
  ) {
    this.dir = resolve(configDir, config.dir);
    for (const phase of PHASES) {
      config.phases[phase].forEach((file, i) => {
        const known = this.#phasesOf.get(file);
        if (known) {
          if (!known.phases.includes(phase)) known.phases.push(phase);
        } else this.#phasesOf.set(file, { phases: [phase], key: `hooks.phases.${phase}[${i}]` });
      });
    }
  }

  /** True when no phase lists a hook: the SMTP side then skips hooks entirely. */
  get empty(): boolean {
    return this.#phasesOf.size === 0;
  }

  get current(): HookSet {
    return this.#set;
  }

  /** Loads every configured file. Throws ConfigError naming the key on the first problem. */
  async load(): Promise<void> {
    for (const [file, { phases, key }] of this.#phasesOf) {
      const abs = this.#resolve(file);
      if (!abs) throw new ConfigError(`${key}: ${file} is outside the hooks directory ${this.dir}`);
      if (!existsSync(abs)) throw new ConfigError(`${key}: hook file not found: ${abs}`);
      try {
        this.#entries.set(file, { file, hook: await loadHookFile(abs, file, phases, this.loadTimeoutMs), broken: null });
      } catch (err) {
        if (err instanceof HookLoadError) throw new ConfigError(`${key}: ${join(this.dir, err.file)}${err.line !== null ? `:${err.line}` : ''}: ${err.reason}`);
        throw err;
      }
    }
    this.#publish();
    if (!this.empty) this.logger.info({ dir: this.dir, files: [...this.#entries.keys()] }, 'hooks loaded');
  }

  /** Called after each reload attempt (tests and logs). */
  onReload(fn: (file: string, error: HookLoadError | null) => void): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  /** Watches the directories holding the configured files. */
  watch(): void {
    if (this.#watchers.length || this.empty) return;
    const dirs = new Set([...this.#phasesOf.keys()].map((f) => dirname(this.#resolve(f)!)));
    for (const dir of dirs) {
      try {
        const w = watch(dir, (_event, filename) => {
          if (!filename) return;
          const file = relative(this.dir, join(dir, filename.toString())).split(sep).join('/');
          if (this.#phasesOf.has(file)) this.#schedule(file);
        });
        w.on('error', (err) => this.logger.warn({ err, dir }, 'hook watcher failed; hook changes need a restart'));
        this.#watchers.push(w);
      } catch (err) {
        this.logger.warn({ err, dir }, 'cannot watch hooks; hook changes need a restart');
      }
    }
  }

  close(): void {
    for (const t of this.#timers.values()) clearTimeout(t);
    this.#timers.clear();
    for (const w of this.#watchers) w.close();
    this.#watchers = [];
  }

  #schedule(file: string): void {
    const t = this.#timers.get(file);
    if (t) clearTimeout(t);
    this.#timers.set(
      file,
      setTimeout(() => {
        this.#timers.delete(file);
        // One reload at a time, in order of the edits.
        this.#reloads = this.#reloads.then(() => this.reload(file));
      }, RELOAD_DEBOUNCE_MS),
    );
  }

  /** Loads a file again; on failure keeps the last good version and marks the file broken. */
  async reload(file: string): Promise<void> {
    const entry = this.#entries.get(file);
    const info = this.#phasesOf.get(file);
    if (!entry || !info) return;
    let error: HookLoadError | null = null;
    try {
      const hook = await loadHookFile(this.#resolve(file)!, file, info.phases, this.loadTimeoutMs);
      this.#entries.set(file, { file, hook, broken: null });
      this.logger.info({ hook: file, name: hook.name }, 'hook reloaded');
    } catch (err) {
      error = err instanceof HookLoadError ? err : new HookLoadError(file, null, (err as Error).message);
      this.#entries.set(file, { file, hook: entry.hook, broken: error });
      // Once per change: the debounce folds an editor's burst of events into this one attempt.
      this.logger.error(
        { hook: file, file: join(this.dir, file), line: error.line, reason: error.reason, phases: info.phases },
        'hook failed to load; its phases fail closed (451) for new sessions until it is fixed',
      );
    }
    this.#publish();
    for (const fn of this.#listeners) fn(file, error);
  }

  /** The absolute path of a configured file, or null when it would leave the hooks directory. */
  #resolve(file: string): string | null {
    const abs = resolve(this.dir, file);
    const rel = relative(this.dir, abs);
    if (!rel || rel.startsWith('..') || isAbsolute(rel)) return null;
    return abs;
  }

  #publish(): void {
    const byPhase = new Map<Phase, HookEntry[]>();
    for (const phase of PHASES) {
      const list = this.config.phases[phase].map((f) => this.#entries.get(f)).filter((e): e is HookEntry => !!e);
      if (list.length) byPhase.set(phase, list);
    }
    this.#set = { generation: this.#set.generation + 1, byPhase };
  }
}
