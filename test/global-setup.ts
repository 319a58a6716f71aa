/**
 * One real spamd for the whole test run (it takes seconds to load its rules).
 * Tests read its address with inject('spamd').
 */
import type { TestProject } from 'vitest/node';
import { startSpamd, type SpamdHandle } from './helpers/spamd.js';

let spamd: SpamdHandle | undefined;

export async function setup(project: TestProject): Promise<void> {
  spamd = await startSpamd();
  project.provide('spamd', { host: spamd.host, port: spamd.port });
}

export async function teardown(): Promise<void> {
  await spamd?.stop();
}

declare module 'vitest' {
  export interface ProvidedContext {
    spamd: { host: string; port: number };
  }
}
