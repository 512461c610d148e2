// Build lifetime of the backpressure protections: the credit pools each outbound upstream holds,
// the latency trackers hedging reads, and the inbound trio (admission, credit grants, dedupe).
// Each is kept across policy updates while its meaning is unchanged: a pool keeps its balances
// per endpoint, admission its learned limit, dedupe its stored responses.
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import type { Logger } from 'pino';
import { AdmissionControl } from '../policies/admission/control.ts';
import { CreditGrants } from '../policies/credits/grant-layer.ts';
import { CreditPool, type CreditFetcher, type ProducerIdentity } from '../policies/credits/pool.ts';
import { CREDIT_HEADER, CREDITS_PATH, GRANT_HEADER } from '../policies/credits/protocol.ts';
import { IdempotencyDedupe } from '../policies/idempotency/dedupe.ts';
import { LatencyTracker } from '../policies/retry/hedge.ts';
import type { Endpoint, SidecarPolicy, UpstreamPolicy } from '../policy/types.ts';
import type { StackMetrics } from '../stack/order.ts';
import type { Clock } from '../stack/types.ts';
import type { EndpointSet } from './endpoints.ts';

/** A credit fetch waits this long for an answer; past it the endpoint counts as unreachable. */
const FETCH_TIMEOUT_MS = 1000;

/** This sidecar as producers and consumers know it: stable per process, unique per sidecar. */
export function sidecarIdentity(podName: string | undefined, policyName: string): ProducerIdentity {
  const base = (podName ?? os.hostname()).replace(/[^A-Za-z0-9._:-]/g, '-').slice(0, 100) || 'sidecar';
  const svc = (process.env['SLUICE_SERVICE'] ?? policyName).replace(/[^A-Za-z0-9._:-]/g, '-').slice(0, 128) || 'unknown';
  // Several sidecars may share a pod name (restarts overlap, tests run many in one process).
  return { id: `${base}-${randomBytes(3).toString('hex')}`, svc };
}

function endpointKey(e: Endpoint): string {
  return `${e.host}|${e.port}`;
}

/** Asks an endpoint's sidecar for a grant over the endpoint's own keep-alive pool. */
function creditFetcher(set: EndpointSet, host: string): CreditFetcher {
  return async (i, claim) => {
    try {
      const res = await set.dispatcher(i, false).request({
        method: 'GET',
        path: CREDITS_PATH,
        headers: { host, [CREDIT_HEADER]: claim },
        headersTimeout: FETCH_TIMEOUT_MS,
        bodyTimeout: FETCH_TIMEOUT_MS,
      });
      const grant = res.headers[GRANT_HEADER];
      await res.body.dump();
      return {
        status: res.statusCode,
        grant: typeof grant === 'string' ? grant : undefined,
        sidecarError: res.headers['sluice-error'] !== undefined,
      };
    } catch (error) {
      return { error };
    }
  };
}

interface KeptPool {
  readonly pool: CreditPool;
}

/** The outbound router's credit pools and latency trackers, one of each per upstream. */
export class OutboundBackpressure {
  readonly #clock: Clock;
  readonly #metrics: StackMetrics;
  readonly #identity: () => ProducerIdentity;
  #pools = new Map<string, KeptPool>();
  #latency = new Map<string, LatencyTracker>();

  constructor(clock: Clock, metrics: StackMetrics, identity: () => ProducerIdentity) {
    this.#clock = clock;
    this.#metrics = metrics;
    this.#identity = identity;
  }

  /** The upstream's latency tracker (hedging), kept while the upstream keeps its name. */
  latency(name: string): LatencyTracker {
    let t = this.#latency.get(name);
    if (t === undefined) {
      t = new LatencyTracker();
      this.#latency.set(name, t);
    }
    return t;
  }

  /**
   * A pool over the upstream's endpoints as resolved now, adopting what the previous pool knew
   * of endpoints that stay; undefined when the upstream has credits off or no endpoints.
   */
  pool(u: UpstreamPolicy, endpoints: readonly Endpoint[], set: EndpointSet | undefined): CreditPool | undefined {
    const previous = this.#pools.get(u.name);
    if (u.credits === undefined || set === undefined) {
      if (previous !== undefined) this.#retire(u.name, previous);
      return undefined;
    }
    const keys = endpoints.map(endpointKey);
    const fetch = creditFetcher(set, u.hosts[0] ?? u.name);
    if (previous !== undefined) {
      // The same pool goes on: tries in flight give their credits back to it, waiters keep
      // their place, and endpoints that stay keep their grants.
      previous.pool.rebind(keys, u.credits, fetch);
      return previous.pool;
    }
    const metrics = this.#metrics.credits;
    const labels = { upstream: u.name };
    const pool = new CreditPool({
      upstream: u.name,
      endpoints: keys,
      policy: u.credits,
      clock: this.#clock,
      identity: this.#identity(),
      fetch,
      events: {
        refused: (reason) => metrics.refusals.labels({ ...labels, reason }).inc(),
        waited: () => metrics.waits.labels(labels).inc(),
        fetched: (result) => metrics.fetches.labels({ ...labels, result }).inc(),
      },
    });
    this.#pools.set(u.name, { pool });
    metrics.livePools.add(pool);
    return pool;
  }

  /** Pools and trackers of upstreams no longer in the policy go. */
  retain(names: ReadonlySet<string>): void {
    for (const [name, kept] of this.#pools) if (!names.has(name)) this.#retire(name, kept);
    for (const name of this.#latency.keys()) if (!names.has(name)) this.#latency.delete(name);
  }

  close(): void {
    for (const [name, kept] of this.#pools) this.#retire(name, kept);
  }

  #retire(name: string, kept: KeptPool): void {
    kept.pool.close();
    this.#metrics.credits.livePools.delete(kept.pool);
    if (this.#pools.get(name) === kept) this.#pools.delete(name);
  }
}

interface InboundDeps {
  readonly clock: Clock;
  readonly random: () => number;
  readonly metrics: StackMetrics;
  readonly log: Logger;
  readonly identity: () => ProducerIdentity;
}

/** The inbound side's admission, credit grants and dedupe (one each per sidecar). */
export class InboundBackpressure {
  readonly #deps: InboundDeps;
  admission: AdmissionControl | undefined;
  creditGrants: CreditGrants | undefined;
  idempotency: IdempotencyDedupe | undefined;

  constructor(deps: InboundDeps) {
    this.#deps = deps;
  }

  apply(policy: SidecarPolicy): void {
    const { admission, credits, idempotency } = policy.inbound;
    const d = this.#deps;
    if (admission === undefined || admission.mode === 'off') {
      this.admission?.close();
      this.admission = undefined;
    } else if (this.admission === undefined) {
      this.admission = new AdmissionControl(admission, { clock: d.clock, random: d.random, metrics: d.metrics.admission, log: d.log });
    } else this.admission.reconfigure(admission);

    const limiter = this.admission;
    if (credits === undefined || limiter === undefined) {
      this.creditGrants?.retire();
      this.creditGrants = undefined;
    } else if (this.creditGrants === undefined) {
      // The grants read the limit through the sidecar's current admission, whichever it is.
      // A new ledger, a new epoch: producers drop what an earlier one granted at once.
      this.creditGrants = new CreditGrants(credits, d.clock, () => this.admission?.limit() ?? 0, d.metrics.credits, randomBytes(6).toString('base64url'));
    } else this.creditGrants.reconfigure(credits);

    if (idempotency === undefined) {
      void this.idempotency?.close();
      this.idempotency = undefined;
    } else if (this.idempotency === undefined) {
      this.idempotency = new IdempotencyDedupe(idempotency, {
        clock: d.clock,
        metrics: d.metrics.idempotency,
        log: d.log,
        redis: policy.redis,
        sidecarId: d.identity().id,
      });
    } else this.idempotency.reconfigure(idempotency, policy.redis);
  }

  /** Settles once dedupe knows whether its Redis is up (store: redis), so first keys go to it. */
  ready(): Promise<void> {
    return this.idempotency?.ready() ?? Promise.resolve();
  }

  async close(): Promise<void> {
    this.admission?.close();
    this.creditGrants?.retire();
    await this.idempotency?.close();
  }
}
