// `dns:` in outbound.defaults and per upstream: how endpoint names are re-resolved. Merges over
// the level above field by field, like every other section.
import type { Field } from './reader.ts';
import { MAX_MS, readSection, type SectionSpec } from './schema.ts';

export interface DnsPolicy {
  /** Re-resolve no more often than this (ms), whatever the TTL: a TTL of 0 must not spin. */
  readonly minTtlMs: number;
  /** ...and at least this often (ms), whatever the TTL: a day-long TTL must not pin a dead address. */
  readonly maxTtlMs: number;
  /**
   * Re-resolve interval (ms) for answers that carry no TTL: names only the system resolver knows
   * (/etc/hosts, search domains) and names with no address. Clamped to [minTtlMs, maxTtlMs] too.
   */
  readonly refreshMs: number;
  /** First wait (ms) after a failed resolution; doubles on each failure in a row, up to maxTtlMs. */
  readonly failureRetryMs: number;
  /** Address families to resolve; endpoints written as IP addresses are kept whatever this says. */
  readonly family: 'any' | 'ipv4' | 'ipv6';
  /** Addresses kept per name (1..1024); a longer answer is cut to a stable subset. */
  readonly maxEndpoints: number;
}

/**
 * Kubernetes' CoreDNS answers with a 5 s TTL (30 s for external names), so the clamp rarely
 * bites there; refreshMs is Envoy's dns_refresh_rate default. maxEndpoints bounds the pools one
 * name can open: an answer that lists a thousand pods is a config mistake, not a load balancer.
 */
export const DNS_DEFAULTS: DnsPolicy = Object.freeze({
  minTtlMs: 1000,
  maxTtlMs: 30000,
  refreshMs: 5000,
  failureRetryMs: 1000,
  family: 'any',
  maxEndpoints: 64,
});

/** Below 100 ms a re-resolution loop is a DNS flood, not freshness. */
const MIN_INTERVAL_MS = 100;

export const DNS_FIELDS: SectionSpec<DnsPolicy> = {
  minTtlMs: { kind: 'int', min: MIN_INTERVAL_MS, max: MAX_MS },
  maxTtlMs: { kind: 'int', min: MIN_INTERVAL_MS, max: MAX_MS },
  refreshMs: { kind: 'int', min: MIN_INTERVAL_MS, max: MAX_MS },
  failureRetryMs: { kind: 'int', min: MIN_INTERVAL_MS, max: MAX_MS },
  family: { kind: 'enum', values: ['any', 'ipv4', 'ipv6'] },
  maxEndpoints: { kind: 'int', min: 1, max: 1024 },
};

/** The section at `f` merged over `base`; `base` itself when the section is absent. */
export function readDns(f: Field | undefined, base: DnsPolicy): DnsPolicy {
  if (!f) return base;
  const errorsBefore = f.reader.errors.length;
  const dns = readSection(f, DNS_FIELDS, base);
  // A bound that did not read has been reported; comparing its stand-in would only add noise.
  if (dns.maxTtlMs >= dns.minTtlMs || f.reader.errors.length > errorsBefore) return dns;
  // Point at a bound this level wrote: an inherited pair was checked where it was written.
  const max = f.lookup('maxTtlMs');
  const at = max ?? f.lookup('minTtlMs');
  if (!at) return dns;
  at.fail(
    at === max
      ? `must be at least minTtlMs (${dns.minTtlMs}), got ${dns.maxTtlMs}`
      : `must be at most maxTtlMs (${dns.maxTtlMs}), got ${dns.minTtlMs}`,
  );
  return dns;
}
