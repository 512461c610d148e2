// Inbound dedupe of requests carrying an Idempotency-Key (build lifetime: one per sidecar).
// STUB: passes everything through; being built.
import type { Registry } from 'prom-client';
import type { IdempotencyPolicy } from '../../policy/types.ts';
import type { RedisPolicy } from '../../policy/ratelimits.ts';
import type { Clock, Layer } from '../../stack/types.ts';

export interface IdempotencyMetrics {
  readonly registry: Registry;
}

export function declareIdempotencyMetrics(registry: Registry): IdempotencyMetrics {
  return { registry };
}

export interface IdempotencyDeps {
  readonly clock: Clock;
  readonly metrics: IdempotencyMetrics;
  readonly log: { info(obj: object, msg: string): void; warn(obj: object, msg: string): void };
  /** spec.redis of the policy in force (store: redis needs it). */
  readonly redis: RedisPolicy | undefined;
}

export class IdempotencyDedupe {
  constructor(_policy: IdempotencyPolicy, _deps: IdempotencyDeps) {}

  /** A policy update: stored responses are kept while the store kind is unchanged. */
  reconfigure(_policy: IdempotencyPolicy, _redis: RedisPolicy | undefined): void {}

  layer(): Layer {
    return (next) => next;
  }

  async close(): Promise<void> {}
}
