/**
 * Reverse DNS for the Received header and the event's clientHostname, with a small cache:
 * smtp-server looks up every connection before its greeting (up to 1.5 s), and busy clients
 * reconnect many times a minute. Bounded, so a scan from many addresses cannot grow it.
 */
import { Resolver } from 'node:dns';

const TTL_MS = 5 * 60_000; // PTR records change rarely; five minutes keeps it fresh enough
const MAX_ENTRIES = 10_000; // ~1 MB at most
const LOOKUP_TIMEOUT_MS = 1000; // below smtp-server's own 1.5 s cap

type Callback = (err: NodeJS.ErrnoException | null, hostnames: string[]) => void;

export class CachingReverseResolver {
  #cache = new Map<string, { hostnames: string[]; expires: number }>();
  #resolver = new Resolver({ timeout: LOOKUP_TIMEOUT_MS, tries: 1 });

  reverse(ip: string, callback: Callback): void {
    const hit = this.#cache.get(ip);
    if (hit && hit.expires > Date.now()) return callback(null, [...hit.hostnames]);
    this.#resolver.reverse(ip, (err, hostnames) => {
      // Negative answers (no PTR) are cached too: they are the common case for spam sources.
      if (!err || err.code === 'ENOTFOUND') this.#remember(ip, err ? [] : hostnames);
      callback(err, err ? [] : hostnames);
    });
  }

  #remember(ip: string, hostnames: string[]): void {
    this.#cache.delete(ip);
    this.#cache.set(ip, { hostnames, expires: Date.now() + TTL_MS });
    if (this.#cache.size > MAX_ENTRIES) this.#cache.delete(this.#cache.keys().next().value as string);
  }
}
