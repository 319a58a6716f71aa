/**
 * `hooks:` in mailwire.yml: hook scripts per SMTP phase (src/hooks/, docs/hooks.md).
 *
 *   hooks:
 *     dir: hooks            # relative to the config directory
 *     timeout_ms: 5000
 *     phases:
 *       mail: [block-spammer.ts]
 *       eom: [add-header.ts, tag-subject.ts]
 *
 * A phase name that is not a phase stops the start (the object is strict); a file that is missing
 * or outside the hooks directory stops it too (checked when the hooks are loaded, src/hooks/registry.ts).
 */
import { z } from 'zod';
import { PHASES } from '../../hooks/api.js';

// A relative path that stays inside the hooks directory: no absolute paths, no `..` segments, so
// a config edit cannot make mailwire execute a file from anywhere on the disk.
const hookFile = z
  .string()
  .min(1)
  .refine((p) => !/^([/\\]|[A-Za-z]:)/.test(p) && !p.split(/[/\\]/).includes('..'), 'must be a path inside the hooks directory (no leading /, no ..)')
  .refine((p) => /\.(ts|mts|js|mjs)$/.test(p), 'must be a .ts, .mts, .js or .mjs file');

// One list per phase. 50 hooks in one phase is far beyond any real setup and bounds the work a
// single SMTP command can trigger.
const phaseList = z.array(hookFile).max(50).default([]);

const phasesShape = Object.fromEntries(PHASES.map((p) => [p, phaseList])) as Record<(typeof PHASES)[number], typeof phaseList>;
const phasesSchema = z.object(phasesShape).strict();

const hooksObject = z
  .object({
    dir: z.string().min(1).default('hooks'),
    // Per-call deadline of a hook (a module may set its own timeoutMs). A hook that looks something
    // up (DNS, HTTP) normally answers well under a second; 5 s stays far below the client's
    // command timeouts (RFC 5321 4.5.3.2: 5 min) while a stalled hook holds a session only briefly.
    // Passing it is a 451 4.3.0: access control fails closed.
    timeout_ms: z.number().int().positive().max(300_000).default(5000),
    phases: phasesSchema.default(phasesSchema.parse({})),
  })
  .strict();

// zod 4: .default({}) would skip the inner defaults, so the default is the parsed empty object.
export const hooksSchema = hooksObject.default(hooksObject.parse({}));
export type HooksConfig = z.infer<typeof hooksObject>;
