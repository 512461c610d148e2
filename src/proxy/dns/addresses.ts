// Address sets as the watcher hands them out: one spelling per address, a fixed order, and a
// bounded, stable subset of a long answer. Pure functions, no I/O.
import { isIPv4, isIPv6 } from 'node:net';
import type { Endpoint } from '../../policy/types.ts';

/**
 * A key that orders addresses numerically (IPv4 first) and is equal for equal addresses however
 * they are written (`::1` and `0:0::1`), so a set compares equal from one answer to the next.
 */
export function addressKey(address: string): string {
  if (isIPv4(address)) return `4:${address.split('.').map((o) => o.padStart(3, '0')).join('.')}`;
  if (!isIPv6(address)) return `n:${address}`;
  // A zone (fe80::1%eth0) stays part of the key; an embedded IPv4 tail is two more groups.
  const [ip = '', zone] = address.toLowerCase().split('%');
  const v4Tail = /(\d+\.\d+\.\d+\.\d+)$/.exec(ip)?.[1];
  const hex = v4Tail === undefined ? ip : ip.slice(0, -v4Tail.length) + v4ToGroups(v4Tail);
  const [head = '', tail] = hex.split('::');
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const groups = tail === undefined ? left : [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right];
  return `6:${groups.map((g) => g.padStart(4, '0')).join(':')}${zone === undefined ? '' : `%${zone}`}`;
}

function v4ToGroups(v4: string): string {
  const [a = 0, b = 0, c = 0, d = 0] = v4.split('.').map(Number);
  return `${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
}

function compareKeys(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Endpoints without repeats (by address and port), sorted by address then port. */
export function sortEndpoints(endpoints: Iterable<Endpoint>): Endpoint[] {
  const byKey = new Map<string, { key: string; e: Endpoint }>();
  for (const e of endpoints) {
    const key = addressKey(e.host);
    const id = `${key}|${e.port}`;
    if (!byKey.has(id)) byKey.set(id, { key, e });
  }
  return [...byKey.values()].sort((x, y) => compareKeys(x.key, y.key) || x.e.port - y.e.port).map((x) => x.e);
}

/** Same endpoints in the same order (both come out of sortEndpoints). */
export function sameEndpoints(a: readonly Endpoint[], b: readonly Endpoint[]): boolean {
  return a.length === b.length && a.every((e, i) => e.host === b[i]!.host && e.port === b[i]!.port);
}

/**
 * At most `max` of `addresses`, chosen by rendezvous hashing on `seed`: the same answer always
 * gives the same subset, and an address joining or leaving displaces at most one other, so a
 * DNS server that rotates or pages its answers does not churn connection pools. Sidecars with
 * different seeds (pod names) pick different subsets and spread their load over all addresses;
 * with one seed they all pick the same ones.
 */
export function chooseSubset(addresses: readonly string[], max: number, seed: string): string[] {
  const unique = [...new Map(addresses.map((a) => [addressKey(a), a])).entries()];
  if (unique.length <= max) return unique.map(([, a]) => a);
  return unique
    .map(([key, a]) => ({ key, a, w: fnv1a(`${seed}\u0000${key}`) }))
    .sort((x, y) => y.w - x.w || compareKeys(x.key, y.key))
    .slice(0, Math.max(0, max))
    .map((x) => x.a);
}

/** 32-bit FNV-1a with a final avalanche (murmur3's fmix32): near strings get unrelated weights. */
function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}
