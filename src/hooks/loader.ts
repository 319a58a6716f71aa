/**
 * Loads one hook file: TypeScript without a build step (tsx's loader hooks, registered once in
 * their own namespace so they never touch mailwire's own imports), plain .js/.mjs the same way.
 *
 * Every load gets a fresh module instance: the URL carries a version query, which the ESM cache
 * treats as a new module. Old instances stay in the cache (ESM has no unload), so memory grows by
 * one module per edit: fine for files a person edits, and why reloads follow edits, not timers.
 * Modules a hook imports itself are cached as usual (edit the hook file to pick them up).
 */
import { findSourceMap } from 'node:module';
import { pathToFileURL } from 'node:url';
import { register, type NamespacedUnregister } from 'tsx/esm/api';
import { PHASES, type Hook, type Phase } from './api.js';

export interface LoadedHook {
  /** Path relative to the hooks directory, as written in the config. */
  file: string;
  name: string;
  timeoutMs: number | null;
  /** The handler of each phase the module implements. */
  handlers: Partial<Record<Phase, (ctx: never) => unknown>>;
}

/** A load failure with the file and, when known, the line of the fault. */
export class HookLoadError extends Error {
  override name = 'HookLoadError';
  constructor(
    readonly file: string,
    readonly line: number | null,
    readonly reason: string,
  ) {
    super(`${file}${line !== null ? `:${line}` : ''}: ${reason}`);
  }
}

let api: NamespacedUnregister | null = null;
let version = 0;

function tsxApi(): NamespacedUnregister {
  if (!api) {
    // tsx compiles to one line with an inline source map: with maps on, a hook's errors (at load
    // and at run time) point at its own lines. The cost is paid only when a stack is formatted.
    process.setSourceMapsEnabled(true);
    api = register({ namespace: 'mailwire-hooks' });
  }
  return api;
}

/**
 * How long one hook file may take to load: compile and evaluate, top-level awaits included. A
 * module awaiting something that never settles would otherwise hang the start (which then ended
 * with exit code 0 and nothing said, once nothing else kept the event loop alive) or, at a
 * reload, every later reload, queued behind it. Compiling a file takes well under a second.
 */
export const HOOK_LOAD_TIMEOUT_MS = 10_000;

/**
 * Imports a hook file and checks its shape. `phases` are the phases the config lists it under;
 * a module without a handler for one of them is an error (a typo in a handler name must not be a
 * silent no-op, especially for access control).
 */
export async function loadHookFile(absPath: string, file: string, phases: readonly Phase[], timeoutMs = HOOK_LOAD_TIMEOUT_MS): Promise<LoadedHook> {
  let mod: Record<string, unknown>;
  let timer: NodeJS.Timeout | undefined;
  try {
    const url = `${pathToFileURL(absPath).href}?v=${++version}`;
    // The import itself cannot be cancelled: a module that never settles stays pending, unused.
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new HookLoadError(file, null, `did not finish loading within ${timeoutMs} ms (a top-level await that never settles?)`)), timeoutMs);
    });
    mod = (await Promise.race([tsxApi().import(url, import.meta.url), deadline])) as Record<string, unknown>;
  } catch (err) {
    if (err instanceof HookLoadError) throw err;
    throw describeError(absPath, file, err);
  } finally {
    clearTimeout(timer);
  }
  return shape(file, unwrapDefault(mod), phases);
}

/** A .ts file outside a `"type": "module"` package is compiled as CommonJS: its default sits one level down. */
function unwrapDefault(mod: Record<string, unknown>): unknown {
  const exp = mod.default;
  if (exp && typeof exp === 'object' && 'default' in exp && !PHASES.some((p) => p in exp)) return (exp as { default: unknown }).default;
  return exp;
}

function shape(file: string, exp: unknown, phases: readonly Phase[]): LoadedHook {
  const baseName = file.replace(/^.*[/\\]/, '').replace(/\.[^.]+$/, '');
  const fail = (reason: string) => new HookLoadError(file, null, reason);
  // A default function is the handler of every phase the file is listed under.
  if (typeof exp === 'function') {
    const fn = exp as (ctx: never) => unknown;
    return { file, name: fn.name && fn.name !== 'default' ? fn.name : baseName, timeoutMs: null, handlers: Object.fromEntries(phases.map((p) => [p, fn])) };
  }
  if (!exp || typeof exp !== 'object') throw fail('the default export must be a hook object ({ mail(ctx) { ... } }) or a function');
  const hook = exp as Hook & Record<string, unknown>;
  if (hook.name !== undefined && (typeof hook.name !== 'string' || !hook.name)) throw fail('name must be a non-empty string');
  if (hook.timeoutMs !== undefined && !(Number.isInteger(hook.timeoutMs) && hook.timeoutMs > 0 && hook.timeoutMs <= 300_000)) {
    throw fail('timeoutMs must be an integer from 1 to 300000');
  }
  const handlers: LoadedHook['handlers'] = {};
  for (const p of PHASES) {
    const h = hook[p];
    if (h === undefined) continue;
    if (typeof h !== 'function') throw fail(`${p} must be a function`);
    handlers[p] = h as (ctx: never) => unknown;
  }
  const missing = phases.filter((p) => !handlers[p]);
  if (missing.length) throw fail(`listed under ${missing.join(', ')} but has no ${missing.join('()/')}() handler`);
  return { file, name: hook.name ?? baseName, timeoutMs: hook.timeoutMs ?? null, handlers };
}

/** Finds "file:line" in a compile error (esbuild) or an evaluation error's stack. */
function describeError(absPath: string, file: string, err: unknown): HookLoadError {
  const e = err as { message?: string; stack?: string; code?: string };
  const message = String(e?.message ?? err);
  if (e?.code === 'ERR_MODULE_NOT_FOUND' && message.includes(absPath)) return new HookLoadError(file, null, 'file not found');
  // esbuild: "Transform failed with 1 error:\n/abs/file.ts:3:32: ERROR: Expected ..."
  const escaped = absPath.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const compile = new RegExp(`${escaped}:(\\d+):(\\d+): (?:ERROR: )?(.*)`).exec(message);
  if (compile) return new HookLoadError(file, Number(compile[1]), compile[3]!.trim());
  // A throw while the module evaluates: the first stack frame in the file, mapped back to the
  // source (the stack may be unmapped when something else formats stacks, e.g. a test runner).
  const url = pathToFileURL(absPath).href.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const frame = new RegExp(`((?:${url}|${escaped})(?:\\?[^\\s:)]*)?):(\\d+):(\\d+)`).exec(e?.stack ?? '');
  const firstLine = message.split('\n')[0] ?? message;
  let line: number | null = null;
  if (frame) {
    line = Number(frame[2]);
    try {
      const entry = findSourceMap(frame[1]!)?.findEntry(line - 1, Number(frame[3]) - 1) as { originalLine?: number } | undefined;
      if (entry && typeof entry.originalLine === 'number') line = entry.originalLine + 1;
    } catch {
      // No map for it: the frame's own line.
    }
  }
  return new HookLoadError(file, line, firstLine.slice(0, 500));
}
