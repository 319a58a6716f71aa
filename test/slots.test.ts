/** util/slots.ts: the bounded wait queue in front of /submit's concurrency limit. */
import { describe, expect, it } from 'vitest';
import { Slots } from '../src/util/slots.js';

describe('Slots', () => {
  it('gives max slots at once, then queues in arrival order and hands a released slot to the first waiter', async () => {
    const s = new Slots(2, 5);
    const a = await s.acquire(1000);
    const b = await s.acquire(1000);
    expect(a).not.toBeNull();
    expect(b).not.toBeNull();
    expect(s.tryAcquire()).toBeNull();
    const order: string[] = [];
    const c = s.acquire(1000).then((r) => (order.push('c'), r));
    const d = s.acquire(1000).then((r) => (order.push('d'), r));
    expect(s.queued).toBe(2);
    a!();
    a!(); // a second release of the same slot frees nothing more
    const rc = await c;
    expect(rc).not.toBeNull();
    expect(order).toEqual(['c']);
    expect(s.held).toBe(2);
    expect(s.queued).toBe(1);
    // A newcomer cannot take the slot d is waiting for.
    b!();
    expect(s.tryAcquire()).toBeNull();
    expect(await d).not.toBeNull();
    expect(order).toEqual(['c', 'd']);
  });

  it('refuses at once when the queue is full, and after the wait runs out', async () => {
    const s = new Slots(1, 1);
    const held = s.tryAcquire();
    expect(held).not.toBeNull();
    const waiting = s.acquire(50);
    expect(await s.acquire(10_000)).toBeNull(); // queue full: no wait at all
    expect(await waiting).toBeNull(); // 50 ms passed
    expect(s.queued).toBe(0);
    held!();
    expect(s.held).toBe(0);
  });

  it('an aborted waiter leaves the line and its turn goes to the next', async () => {
    const s = new Slots(1, 3);
    const held = s.tryAcquire()!;
    const ac = new AbortController();
    const gone = s.acquire(10_000, ac.signal);
    const next = s.acquire(10_000);
    ac.abort();
    expect(await gone).toBeNull();
    expect(s.queued).toBe(1);
    held();
    const r = await next;
    expect(r).not.toBeNull();
    r!();
    expect(s.held).toBe(0);
    const pre = new AbortController();
    pre.abort();
    s.tryAcquire();
    expect(await s.acquire(10_000, pre.signal)).toBeNull();
  });
});
