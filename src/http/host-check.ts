/**
 * The Host header check against DNS rebinding. A web page on attacker.example can make its
 * own name resolve to 127.0.0.1; the browser then sends our API the page's requests as
 * same-origin, with `Host: attacker.example`. The name in Host is the one thing such a page
 * cannot forge, so only names we know are served:
 *
 * - always: loopback names and addresses (`localhost`, `*.localhost`, `127.0.0.0/8`, `[::1]`),
 *   which no outside DNS can point anywhere, and every entry of http.allowed_hosts;
 * - on a loopback-bound server: only those;
 * - on a non-loopback-bound server: also the bound address (or name) itself, and, when
 *   allowed_hosts is empty, any well-formed Host (such a server is reached by names we
 *   cannot guess; access control is a separate layer).
 *
 * A missing, repeated or malformed Host is always refused. Pure functions, no fastify: the
 * WebSocket upgrade handler uses the same check.
 */
import type { IncomingMessage } from 'node:http';
import { isIP } from 'node:net';
import { isLoopbackBind } from '../util/net.js';

/** Where the server listens (config http.host) and the extra names it may be reached by. */
export interface HostPolicy {
  boundHost: string;
  allowedHosts: readonly string[];
}

/** The policy when none is given (tests building the server alone): loopback, no extra names. */
export const DEFAULT_HOST_POLICY: HostPolicy = Object.freeze({ boundHost: '127.0.0.1', allowedHosts: Object.freeze([]) });

/** A DNS name is at most 253 octets; with brackets, a port and a trailing dot a Host stays well under this. */
const MAX_HOST_LENGTH = 300;

const NAME = /^[a-z0-9_-]+(?:\.[a-z0-9_-]+)*$/;
const BRACKETED = /^\[([0-9a-f:.]+)\](?::(\d{1,5}))?$/;
const UNBRACKETED = /^([^:[\]]+)(?::(\d{1,5}))?$/;

/**
 * The canonical form of a host: a lower-case DNS name without trailing dot, a dotted-quad
 * IPv4 address, or a bracketed, compressed IPv6 address (`[::1]`); null when malformed.
 */
type Canonical = { kind: 'name' | 'ipv4' | 'ipv6'; value: string };

function canonicalIpv6(address: string): string | null {
  if (isIP(address) !== 6) return null;
  try {
    // The WHATWG URL parser prints an IPv6 host compressed and lower-case: [0:0::1] -> [::1].
    return new URL(`http://[${address}]/`).hostname;
  } catch {
    return null;
  }
}

function canonicalName(raw: string): Canonical | null {
  let name = raw.toLowerCase();
  if (name.endsWith('.')) name = name.slice(0, -1);
  if (isIP(name) === 4) return { kind: 'ipv4', value: name };
  if (!NAME.test(name)) return null;
  return { kind: 'name', value: name };
}

/** Parses a Host header value (`name`, `name:port`, `a.b.c.d:port`, `[v6]:port`). */
export function parseHostHeader(header: string | undefined): Canonical | null {
  if (header === undefined || header.length === 0 || header.length > MAX_HOST_LENGTH) return null;
  const lower = header.toLowerCase();
  const bracketed = BRACKETED.exec(lower);
  if (bracketed) {
    if (!portOk(bracketed[2])) return null;
    const v6 = canonicalIpv6(bracketed[1]!);
    return v6 === null ? null : { kind: 'ipv6', value: v6 };
  }
  const plain = UNBRACKETED.exec(lower);
  if (!plain || !portOk(plain[2])) return null;
  return canonicalName(plain[1]!);
}

function portOk(port: string | undefined): boolean {
  return port === undefined || Number(port) <= 65535;
}

/** A configured host (http.host, an allowed_hosts entry): as a header, but without port and v6 brackets optional. */
function parseConfigured(host: string): Canonical | null {
  const v6 = canonicalIpv6(host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host);
  if (v6 !== null) return { kind: 'ipv6', value: v6 };
  return canonicalName(host);
}

function isLoopbackHost(host: Canonical): boolean {
  switch (host.kind) {
    case 'name':
      return host.value === 'localhost' || host.value.endsWith('.localhost');
    case 'ipv4':
      return host.value.startsWith('127.');
    case 'ipv6':
      return host.value === '[::1]';
  }
}

/** Whether a server bound to this address only answers on loopback (re-exported from util/net.ts). */
export { isLoopbackBind };

function isUnspecified(host: Canonical): boolean {
  return (host.kind === 'ipv4' && host.value === '0.0.0.0') || (host.kind === 'ipv6' && host.value === '[::]');
}

interface Compiled {
  loopbackBound: boolean;
  /** Exact hosts in canonical form: allowed_hosts entries and, when not loopback-bound, the bound host. */
  exact: Set<string>;
  /** Leading-dot entries, kept with the dot: `.example.org`. */
  suffixes: string[];
  /** Non-loopback-bound with no allowed_hosts: every well-formed Host. */
  anyHost: boolean;
}

const compiled = new WeakMap<HostPolicy, Compiled>();

function compile(policy: HostPolicy): Compiled {
  const cached = compiled.get(policy);
  if (cached) return cached;
  const exact = new Set<string>();
  const suffixes: string[] = [];
  for (const entry of policy.allowedHosts) {
    if (entry.startsWith('.')) {
      const base = canonicalName(entry.slice(1));
      if (base?.kind === 'name') suffixes.push(`.${base.value}`);
      continue;
    }
    const host = parseConfigured(entry);
    if (host) exact.add(host.value);
  }
  const bound = parseConfigured(policy.boundHost);
  // The same predicate as http.auth.enabled: auto (util/net.ts): the two must never disagree,
  // or a loopback bind would run with neither a login nor the Host check.
  const loopbackBound = isLoopbackBind(policy.boundHost);
  if (bound !== null && !isUnspecified(bound)) exact.add(bound.value);
  const result: Compiled = { loopbackBound, exact, suffixes, anyHost: !loopbackBound && policy.allowedHosts.length === 0 };
  compiled.set(policy, result);
  return result;
}

/**
 * Whether a request with this Host header may be served. `.example.org` in allowed_hosts
 * matches example.org itself and every name under it, not `evilexample.org`.
 */
export function hostAllowed(hostHeader: string | undefined, policy: HostPolicy): boolean {
  const host = parseHostHeader(hostHeader);
  if (host === null) return false;
  const rules = compile(policy);
  return knownHost(host, rules) || rules.anyHost;
}

/**
 * Whether this Host is one we know by name (loopback, the bound address, allowed_hosts), not
 * merely served because a non-loopback server with no allowed_hosts serves any Host. Such a
 * Host can be a DNS-rebinding page's own name, so it cannot vouch for "same origin".
 */
export function hostKnown(hostHeader: string | undefined, policy: HostPolicy): boolean {
  const host = parseHostHeader(hostHeader);
  return host !== null && knownHost(host, compile(policy));
}

/** Loopback, an exact entry (allowed_hosts or the bound address) or under a `.suffix` entry. */
function knownHost(host: Canonical, rules: Compiled): boolean {
  if (isLoopbackHost(host) || rules.exact.has(host.value)) return true;
  return host.kind === 'name' && rules.suffixes.some((s) => host.value.endsWith(s) || host.value === s.slice(1));
}

const ABSOLUTE_FORM = /^[a-z][a-z0-9+.-]*:\/\/([^/?#]*)/i;

/**
 * The check on a whole Node request (fastify's request.raw, or the upgrade request of the
 * WebSocket feed): exactly one Host header, and an allowed one. A request target in absolute
 * form (`GET http://name/path`, RFC 9112 3.2.2: its authority overrides Host) must name an
 * allowed host too.
 */
export function requestHostAllowed(req: Pick<IncomingMessage, 'headers' | 'rawHeaders' | 'url'>, policy: HostPolicy): boolean {
  let count = 0;
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    if (req.rawHeaders[i]!.toLowerCase() === 'host') count++;
  }
  if (count !== 1 || !hostAllowed(req.headers.host, policy)) return false;
  const url = req.url ?? '';
  if (url.startsWith('/') || url === '*') return true;
  const absolute = ABSOLUTE_FORM.exec(url);
  // Neither origin nor absolute form: nothing routes it, but refuse rather than guess.
  return absolute !== null && hostAllowed(absolute[1], policy);
}
