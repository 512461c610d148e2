// What the idempotency layer counts, declared once per registry. Labels are bounded: outcomes and
// eviction reasons are fixed sets, and keys never become labels.
import type { Counter, Gauge, Registry } from 'prom-client';
import { counter, gauge } from '../../telemetry/registry.ts';

export type IdempotencyOutcome = 'first' | 'replayed' | 'waited' | 'mismatch' | 'conflict' | 'not_stored';

export interface IdempotencyMetrics {
  readonly requests: Counter<'outcome'>;
  readonly entries: Gauge<string>;
  readonly bytes: Gauge<string>;
  readonly evictions: Counter<'reason'>;
  readonly storeFallbacks: Counter<string>;
  readonly waiting: Gauge<string>;
  readonly redisUp: Gauge<string>;
}

export function declareIdempotencyMetrics(registry: Registry): IdempotencyMetrics {
  return {
    requests: counter(
      registry,
      'sluice_idempotency_requests_total',
      'Requests with an Idempotency-Key, by outcome: first (ran in the app), replayed (answered from a stored outcome), waited (waited for the original, then replayed), mismatch (key used for another request: 422), conflict (outcome not replayable, or too many waiting: 409); not_stored counts originals whose outcome was not kept (5xx, failure, cut or oversize body).',
      ['outcome'],
    ),
    entries: gauge(registry, 'sluice_idempotency_entries', 'Outcomes held in this sidecar\'s idempotency store.', []),
    bytes: gauge(registry, 'sluice_idempotency_bytes', 'Bytes of stored outcomes (bodies, headers, trailers, keys) in this sidecar\'s idempotency store.', []),
    evictions: counter(
      registry,
      'sluice_idempotency_evictions_total',
      'Stored outcomes dropped, by reason: ttl (expired), lru (room made under maxEntries or maxBytes).',
      ['reason'],
    ),
    storeFallbacks: counter(
      registry,
      'sluice_idempotency_store_fallbacks_total',
      'Keys decided or stored in this sidecar\'s memory only because the shared (Redis) store was unusable.',
      [],
    ),
    waiting: gauge(
      registry,
      'sluice_idempotency_waiting',
      'Requests waiting now for the outcome of another with the same key: duplicates on this sidecar, and requests polling a claim another replica holds.',
      [],
    ),
    redisUp: gauge(registry, 'sluice_idempotency_redis_up', 'With store: redis, 1 while the shared store is usable; 0 while keys are kept in memory only.', []),
  };
}
