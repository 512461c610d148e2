// Keep-alive connection pools, one undici Pool per endpoint and connection setting. Pools outlive
// policy updates: a reload that keeps an endpoint keeps its warm connections, and an endpoint
// that leaves the policy is closed gracefully (in-flight requests finish first).
import { Pool } from 'undici';
import type { Endpoint } from '../policy/types.ts';

export interface PoolSettings {
  readonly connectMs: number;
  readonly connections: number;
}

function poolKey(e: Endpoint, s: PoolSettings): string {
  return `${e.host}:${e.port}/${s.connectMs}/${s.connections}`;
}

function origin(e: Endpoint): string {
  return e.host.includes(':') ? `http://[${e.host}]:${e.port}` : `http://${e.host}:${e.port}`;
}

export class PoolSet {
  readonly #pools = new Map<string, Pool>();
  /** Pools for hosts outside the policy (forwarded unknown hosts) are capped, oldest evicted. */
  readonly #maxPools: number;

  constructor(maxPools = 4096) {
    this.#maxPools = maxPools;
  }

  get(endpoint: Endpoint, settings: PoolSettings): Pool {
    const key = poolKey(endpoint, settings);
    let pool = this.#pools.get(key);
    if (pool === undefined) {
      pool = new Pool(origin(endpoint), {
        connections: settings.connections,
        connect: { timeout: settings.connectMs },
        pipelining: 1,
        // Our own deadline and per-try timers are the contract; undici's are a backstop.
        headersTimeout: 0,
        bodyTimeout: 0,
      });
      this.#pools.set(key, pool);
      if (this.#pools.size > this.#maxPools) this.#evictOldest();
    }
    return pool;
  }

  /** Closes every pool not used by the given endpoint/settings pairs (after a policy update). */
  retain(used: Iterable<readonly [Endpoint, PoolSettings]>): void {
    const keep = new Set<string>();
    for (const [e, s] of used) keep.add(poolKey(e, s));
    for (const [key, pool] of this.#pools) {
      if (!keep.has(key)) {
        this.#pools.delete(key);
        void pool.close().catch(() => undefined);
      }
    }
  }

  async close(): Promise<void> {
    const pools = [...this.#pools.values()];
    this.#pools.clear();
    await Promise.all(pools.map((p) => p.destroy().catch(() => undefined)));
  }

  #evictOldest(): void {
    const first = this.#pools.entries().next();
    if (first.done === true) return;
    this.#pools.delete(first.value[0]);
    void first.value[1].close().catch(() => undefined);
  }
}
