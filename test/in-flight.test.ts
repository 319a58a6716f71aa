/** InFlight: what a close() waits for. */
import { expect, it } from 'vitest';
import { InFlight } from '../src/util/in-flight.js';

it('settled() waits for everything tracked, failures and work tracked meanwhile included', async () => {
  const inFlight = new InFlight();
  const order: string[] = [];
  let later: Promise<void> | null = null;
  const failing = inFlight.track(Promise.reject(new Error('boom')));
  const first = inFlight.track(
    new Promise<void>((resolve) =>
      setTimeout(() => {
        order.push('first');
        // Tracked while settled() is already waiting.
        later = inFlight.track(new Promise<void>((r) => setTimeout(() => (order.push('later'), r()), 20)));
        resolve();
      }, 10),
    ),
  );
  expect(inFlight.size).toBe(2);
  await expect(failing).rejects.toThrow('boom'); // returned unchanged
  await inFlight.settled();
  order.push('settled');
  expect(order).toEqual(['first', 'later', 'settled']);
  expect(later).not.toBeNull();
  await first;
  expect(inFlight.size).toBe(0);
});
