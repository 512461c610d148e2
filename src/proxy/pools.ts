// Keep-alive connection pools, one undici Pool per endpoint, connection setting and protocol. Pools outlive
// policy updates: a reload that keeps an endpoint keeps its warm connections. A pool that leaves
// the policy is not closed at once: requests that started on the old policy may still send a
// retry to it, and a closed pool would fail them. It closes gracefully after `retireMs`.
import { Pool, type Dispatcher } from 'undici';
import type { Endpoint } from '../policy/types.ts';
import { H2Pool } from './h2-pool.ts';

export interface PoolSettings {
  readonly connectMs: number;
  readonly connections: number;
  /** http2: cleartext HTTP/2 with prior knowledge (h2c), many streams on each connection. */
  readonly protocol: 'http1' | 'http2';
}

/** Streams a pooled HTTP/2 connection carries at once (the server's SETTINGS may lower it). */
const H2_MAX_STREAMS = 100;

function poolKey(e: Endpoint, s: PoolSettings): string {
  return `${e.host}:${e.port}/${s.connectMs}/${s.connections}/${s.protocol}`;
}

function origin(e: Endpoint): string {
  return e.host.includes(':') ? `http://[${e.host}]:${e.port}` : `http://${e.host}:${e.port}`;
}

export class PoolSet {
  readonly #pools = new Map<string, Dispatcher>();
  /** Pools taken out of use, closing after their grace period; destroyed by close(). */
  readonly #retiring = new Set<Dispatcher>();

  get(endpoint: Endpoint, settings: PoolSettings): Dispatcher {
    const key = poolKey(endpoint, settings);
    let pool = this.#pools.get(key);
    if (pool === undefined) {
      pool =
        settings.protocol === 'http2'
          ? new H2Pool(endpoint.host, endpoint.port, {
              connectMs: settings.connectMs,
              connections: settings.connections,
              maxStreams: H2_MAX_STREAMS,
            })
          : new Pool(origin(endpoint), {
              connections: settings.connections,
              connect: { timeout: settings.connectMs },
              pipelining: 1,
              // Our own deadline and per-try timers are the contract; undici's are a backstop.
              headersTimeout: 0,
              bodyTimeout: 0,
            });
      this.#pools.set(key, pool);
    }
    return pool;
  }

  /** Retires every pool not used by the given endpoint/settings pairs (after a policy update). */
  retain(used: Iterable<readonly [Endpoint, PoolSettings]>, retireMs: number): void {
    const keep = new Set<string>();
    for (const [e, s] of used) keep.add(poolKey(e, s));
    for (const [key, pool] of this.#pools) {
      if (!keep.has(key)) this.#retire(key, pool, retireMs);
    }
  }

  /** Retires one pool (a forwarded unknown host whose route was evicted). */
  release(endpoint: Endpoint, settings: PoolSettings, retireMs: number): void {
    const key = poolKey(endpoint, settings);
    const pool = this.#pools.get(key);
    if (pool !== undefined) this.#retire(key, pool, retireMs);
  }

  get size(): number {
    return this.#pools.size;
  }

  async close(): Promise<void> {
    const pools = [...this.#pools.values(), ...this.#retiring];
    this.#pools.clear();
    this.#retiring.clear();
    await Promise.all(pools.map((p) => p.destroy().catch(() => undefined)));
  }

  #retire(key: string, pool: Dispatcher, retireMs: number): void {
    this.#pools.delete(key);
    this.#retiring.add(pool);
    // close() lets requests already dispatched finish; the delay lets old stacks dispatch theirs.
    setTimeout(() => {
      if (!this.#retiring.delete(pool)) return;
      void pool.close().catch(() => undefined);
    }, retireMs).unref();
  }
}
