// What one endpoint name resolves to and when to ask again: a pure step from (state, answer,
// now) to the next state. No timers, no sockets; the watcher does the I/O.
//
// The rules, and why:
// - An answer with records replaces the addresses; the next query is due when the shortest TTL
//   expires, clamped to [minTtlMs, maxTtlMs]. A name only the system resolver knows has no TTL
//   and is asked again after refreshMs, clamped the same way.
// - A failure (SERVFAIL, timeout, refused...) keeps the last good addresses and retries after
//   failureRetryMs, doubling per failure in a row up to maxTtlMs. DNS hiccups must never empty
//   an upstream: Envoy's STRICT_DNS did, and was changed for it (envoyproxy/envoy#2691).
// - One family failing while the other answers (A fine, AAAA SERVFAIL: common with old
//   forwarders) takes the fresh family and keeps the failed family's last addresses.
// - NXDOMAIN or no records, confirmed by the system resolver, is an answer: the name has no
//   address. Envoy's STRICT_DNS empties the host set on it (since envoyproxy/envoy#21027; its
//   LOGICAL_DNS keeps the last host instead). We follow STRICT_DNS, because in Kubernetes a
//   stale pod IP is soon another pod's IP, but only once the empty answer is confirmed by a
//   second query failureRetryMs later: a resolver that answers NXDOMAIN in a hiccup (the Consul
//   case in envoy#2691) costs one extra query, not the upstream.
import type { DnsPolicy } from '../../policy/dns.ts';
import { chooseSubset } from './addresses.ts';
import type { NameAnswer, ResolvedAddress } from './resolve.ts';

export interface NameState {
  /** What the name resolves to now, at most policy.maxEndpoints. */
  readonly addresses: readonly ResolvedAddress[];
  /** Clock time at which to resolve the name again. */
  readonly dueAtMs: number;
  /** Failed (or partly failed) resolutions in a row: the back-off exponent. */
  readonly failures: number;
  /** Empty answers in a row; the first one after a good answer keeps the addresses. */
  readonly empties: number;
}

export type Outcome = NameAnswer['kind'];

/** A name never resolved: no addresses, due now. */
export function initialNameState(nowMs: number): NameState {
  return { addresses: [], dueAtMs: nowMs, failures: 0, empties: 0 };
}

export function nextNameState(prev: NameState, answer: NameAnswer, policy: DnsPolicy, nowMs: number, seed: string): NameState {
  const clamp = (ms: number): number => Math.min(Math.max(ms, policy.minTtlMs), policy.maxTtlMs);
  switch (answer.kind) {
    case 'resolved':
      return { addresses: bound(answer.addresses, policy, seed), dueAtMs: nowMs + clamp(answer.ttlMs), failures: 0, empties: 0 };
    case 'system':
      return { addresses: bound(answer.addresses, policy, seed), dueAtMs: nowMs + clamp(policy.refreshMs), failures: 0, empties: 0 };
    case 'partial': {
      const kept = prev.addresses.filter((a) => a.family === answer.failedFamily);
      const failures = prev.failures + 1;
      return {
        addresses: bound([...answer.addresses, ...kept], policy, seed),
        // Back soon for the family that failed, but never later than the fresh family's TTL.
        dueAtMs: nowMs + Math.min(clamp(answer.ttlMs), backoffMs(failures, policy)),
        failures,
        empties: 0,
      };
    }
    case 'empty':
      if (prev.addresses.length > 0 && prev.empties === 0) {
        return { addresses: prev.addresses, dueAtMs: nowMs + policy.failureRetryMs, failures: 0, empties: 1 };
      }
      return { addresses: [], dueAtMs: nowMs + clamp(policy.refreshMs), failures: 0, empties: prev.empties + 1 };
    case 'failed': {
      const failures = prev.failures + 1;
      // A failure says nothing about the name, so an empty answer before it still counts.
      return { addresses: prev.addresses, dueAtMs: nowMs + backoffMs(failures, policy), failures, empties: prev.empties };
    }
  }
}

/** failureRetryMs × 2^(n-1), at most maxTtlMs (or failureRetryMs, if that is longer). No jitter: see the watcher. */
export function backoffMs(failures: number, policy: DnsPolicy): number {
  const cap = Math.max(policy.failureRetryMs, policy.maxTtlMs);
  // 2^30 already exceeds any cap in range; a bigger exponent would only risk Infinity.
  return Math.min(policy.failureRetryMs * 2 ** Math.min(Math.max(failures - 1, 0), 30), cap);
}

function bound(addresses: readonly ResolvedAddress[], policy: DnsPolicy, seed: string): ResolvedAddress[] {
  const chosen = new Set(chooseSubset(addresses.map((a) => a.address), policy.maxEndpoints, seed));
  const out: ResolvedAddress[] = [];
  for (const a of addresses) {
    // chooseSubset drops repeats; keep each chosen address once.
    if (chosen.delete(a.address)) out.push(a);
  }
  return out;
}
