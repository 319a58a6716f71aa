/** events/id.ts: ULIDs from a pooled CSPRNG. */
import { describe, expect, it } from 'vitest';
import { idFor, isMessageId, newMessageId } from '../src/events/id.js';

describe('newMessageId', () => {
  it('gives valid, strictly increasing, distinct ids across many pool refills', () => {
    const ids = Array.from({ length: 5000 }, () => newMessageId());
    for (const id of ids) expect(isMessageId(id)).toBe(true);
    for (let i = 1; i < ids.length; i++) expect(ids[i]! > ids[i - 1]!).toBe(true);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it('draws every one of the 32 characters for the random part', () => {
    // The first random character of a new millisecond is freshly drawn: collect them over time.
    const seen = new Set<string>();
    const deadline = Date.now() + 2000;
    let last = '';
    while (seen.size < 32 && Date.now() < deadline) {
      const id = newMessageId();
      if (id.slice(0, 10) !== last) seen.add(id[10]!);
      last = id.slice(0, 10);
    }
    expect(seen.size).toBe(32);
  });
});

describe('idFor', () => {
  it('gives the same valid id for the same key, and different ones for different keys', () => {
    const ids = Array.from({ length: 2000 }, (_, i) => idFor(`key ${i}`));
    for (const id of ids) expect(id).toMatch(/^[0-7][0-9A-HJKMNP-TV-Z]{25}$/);
    expect(isMessageId(ids[0]!)).toBe(true);
    expect(new Set(ids).size).toBe(ids.length);
    expect(idFor('key 7')).toBe(ids[7]);
  });
});
