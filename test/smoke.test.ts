import { describe, it, expect, inject } from 'vitest';
import { validateConfig } from '../src/config/load.js';

describe('config', () => {
  it('rejects an unknown key naming it', () => {
    expect(() => validateConfig({ smtp: { limits: { bogus: 1 } } }, '.')).toThrow('unknown key smtp.limits.bogus');
  });
  it('has spamd from the global setup', () => {
    expect(inject('spamd').port).toBeGreaterThan(0);
  });
});
