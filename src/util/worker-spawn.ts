/** Starting worker threads (the parse pool, the store writer) from the build and from source. */
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';

/**
 * How to start a worker thread whose entry is `entry` (the built .js file's URL, made relative to the
 * caller's import.meta.url). Built (dist/): that file, with the parent's flags. From source (tsx,
 * vitest: this module's URL ends in .ts): the .ts file next to it, with tsx's
 * ESM hooks registered in the worker. `--import tsx` is not enough there: on Node 20 tsx's loader
 * registers its hooks on the main thread only, and module hooks are not inherited by workers (the
 * worker fails with ERR_UNKNOWN_FILE_EXTENSION). Calling tsx's register() from an --import works, so
 * that is what the worker gets, and the parent's own tsx flags are left out (they would do nothing on
 * Node 20 and register tsx a second time on a Node that runs them in workers). Because the flags are
 * passed explicitly, a source run with a process-wide flag (node --max-old-space-size=… --import tsx)
 * cannot start workers; the built app has no such limit.
 */
export function workerSpawn(entry: URL): { url: URL; execArgv: string[] | undefined } {
  // undefined: the worker inherits the parent's flags. Passed explicitly, process-wide flags such as
  // --max-old-space-size would make new Worker() throw ERR_WORKER_INVALID_EXEC_ARGV.
  if (!import.meta.url.endsWith('.ts')) return { url: entry, execArgv: undefined };
  const api = tsxEsmApi();
  const boot = `import { register } from ${JSON.stringify(api)}; register();`;
  return {
    url: new URL(entry.href.replace(/\.js$/, '.ts')),
    execArgv: [...withoutTsx(process.execArgv), '--import', `data:text/javascript,${encodeURIComponent(boot)}`],
  };
}

/** The file URL of tsx/esm/api's ESM entry (its CommonJS entry fails when imported from a data: URL). */
function tsxEsmApi(): string {
  const require = createRequire(import.meta.url);
  const manifest = require.resolve('tsx/package.json');
  const pkg = require(manifest) as { exports?: Record<string, { import?: { default?: string } } | string> };
  const entry = pkg.exports?.['./esm/api'];
  const relative = typeof entry === 'object' ? entry.import?.default : undefined;
  if (!relative) throw new Error('tsx/esm/api has no ESM entry: cannot run a worker thread from source');
  return new URL(relative, pathToFileURL(manifest)).href;
}

function withoutTsx(argv: readonly string[]): string[] {
  const out: string[] = [];
  const isTsx = (value: string): boolean => /(^|[/\\])tsx([/\\]|$)/.test(value);
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const m = /^(--import|--loader|--experimental-loader|--require|-r)(?:=(.*))?$/.exec(arg);
    if (m) {
      const value = m[2] ?? argv[i + 1];
      if (value !== undefined && isTsx(value)) {
        if (m[2] === undefined) i++;
        continue;
      }
    }
    out.push(arg);
  }
  return out;
}
