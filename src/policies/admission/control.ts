// Inbound admission (build lifetime: one per sidecar's app): an adaptive concurrency limit on the
// app, priority shedding when the app is at its limit, and deadline-aware refusal of requests
// that cannot finish in time. STUB: admits everything; being built.
import type { Registry } from 'prom-client';
import type { AdmissionPolicy } from '../../policy/types.ts';
import type { Clock, Layer } from '../../stack/types.ts';

export interface AdmissionMetrics {
  readonly registry: Registry;
}

export function declareAdmissionMetrics(registry: Registry): AdmissionMetrics {
  return { registry };
}

export interface AdmissionDeps {
  readonly clock: Clock;
  readonly random: () => number;
  readonly metrics: AdmissionMetrics;
  readonly log: { info(obj: object, msg: string): void; warn(obj: object, msg: string): void };
}

export class AdmissionControl {
  #policy: AdmissionPolicy;

  constructor(policy: AdmissionPolicy, _deps: AdmissionDeps) {
    this.#policy = policy;
  }

  /** A policy update: the learned limit carries over where its meaning is unchanged. */
  reconfigure(policy: AdmissionPolicy): void {
    this.#policy = policy;
  }

  /** The limit now: requests the app is given at once. Credits share this out. */
  limit(): number {
    return this.#policy.maxConcurrency;
  }

  /** Requests in flight to the app now. */
  inFlight(): number {
    return 0;
  }

  /** The layer, in the inbound stack between credit grant and idempotency. */
  layer(): Layer {
    return (next) => next;
  }

  /** The sidecar is closing, or admission was turned off: stop timers, drop metrics children. */
  close(): void {}
}
