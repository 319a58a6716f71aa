/**
 * In-process event bus: the store commits an event, then the bus fans it out to the
 * WebSocket feed and (later) webhooks. Subscribers must not throw or block; a failing
 * subscriber is isolated so publishing never fails the SMTP side.
 */
import type { AnyEvent } from '../events/types.js';

export type Subscriber = (event: AnyEvent) => void;

export class EventBus {
  #subscribers = new Set<Subscriber>();
  #onError: (err: unknown) => void;

  constructor(onError: (err: unknown) => void = () => {}) {
    this.#onError = onError;
  }

  subscribe(fn: Subscriber): () => void {
    this.#subscribers.add(fn);
    return () => this.#subscribers.delete(fn);
  }

  get subscriberCount(): number {
    return this.#subscribers.size;
  }

  publish(event: AnyEvent): void {
    for (const fn of this.#subscribers) {
      try {
        fn(event);
      } catch (err) {
        this.#onError(err);
      }
    }
  }
}
