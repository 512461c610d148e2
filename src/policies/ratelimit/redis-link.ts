// The sidecar's one connection to the Redis that global rate limits share, and the only I/O of
// this protection. Owned by the sidecar (not by a build): builds come and go with policy updates,
// the link lives as long as the `redis:` policy does.
//
// Request path: one script call (bottleneck's register.lua) per decision, bounded by
// commandTimeoutMs and by the request's own cancellation. A call that fails or times out marks Redis
// down, and from then on requests do not touch Redis at all (they take onRedisDown at once) until
// the background probe reaches it again: detecting an outage costs at most one timeout per request
// already in flight, never one per request.
//
// Background: every probeIntervalMs the probe writes this sidecar's heartbeat into a sorted set and
// counts the live ones (the replica count for local shares); its success is what ends an outage.
// ioredis reconnects on its own (retryStrategy); the probe runs at once when it does.
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { Redis } from 'ioredis';
import type { Counter, Gauge } from 'prom-client';
import type { RedisPolicy } from '../../policy/ratelimits.ts';
import { releaseCancel, systemClock, type Clock, type RequestContext } from '../../stack/types.ts';
import { KEY_COUNT, SCRIPTS, initArgs, needsInit, scriptKeys, scriptSources } from './bottleneck-scripts.ts';
import { RedisHealth, type RedisState } from './redis-health.ts';

/** A global bucket: one bottleneck limiter id per descriptor value under `baseId`. */
export interface GlobalBucket {
  readonly baseId: string;
  readonly ratePerSecond: number;
  readonly burst: number;
  /** Keys expire this long after the last take; by then the bucket would have refilled anyway. */
  readonly keyTtlMs: number;
}

/** What a rule needs from the shared store; RedisLink is the real one, tests may fake it. */
export interface GlobalStore {
  /** Prefix of every limiter id (RedisPolicy.keyPrefix). */
  readonly keyPrefix: string;
  /** Requests may call the store now (Redis is known up). */
  readonly usable: boolean;
  /** Sidecars sharing each global limit (for the local share). */
  replicas(): number;
  /** How long a client refused by `deny` should wait: about when the store is tried again. */
  readonly retryMs: number;
  /**
   * Takes one token from `bucket`'s bucket for `key`. Resolves true (taken) or false (empty).
   * Rejects with StoreUnavailable when the store failed or timed out (the caller falls back), or
   * with the cancellation reason when the request was cancelled meanwhile.
   * `fresh`: the caller has not used this key on this store yet, so its limiter is initialised in
   * the same round trip.
   */
  take(bucket: GlobalBucket, key: string, fresh: boolean, ctx: RequestContext): Promise<boolean>;
}

export class StoreUnavailable extends Error {
  readonly why: 'down' | 'timeout' | 'error';
  constructor(why: 'down' | 'timeout' | 'error', cause?: unknown) {
    super(`rate limit store unavailable: ${why}`, { cause });
    this.name = 'StoreUnavailable';
    this.why = why;
  }
}

export interface RedisLinkMetrics {
  readonly redisUp: Gauge<string>;
  readonly redisReplicas: Gauge<string>;
  readonly fallbackActivations: Counter<string>;
  readonly redisFailures: Counter<'why'>;
}

export interface RedisLinkOptions {
  readonly policy: RedisPolicy;
  readonly metrics: RedisLinkMetrics;
  /** Monotonic clock for state-change times; default performance.now. */
  readonly clock?: Clock;
  /** This sidecar in Redis (heartbeats, bottleneck's client id); default host name + random suffix. */
  readonly sidecarId?: string;
  /** Hears every state change (for logs). */
  readonly onStateChange?: (state: RedisState) => void;
  /** Hears every probe's outcome and the replica count it left (for logs and tests). */
  readonly onProbe?: (ok: boolean, replicas: number) => void;
}

type ScriptCall = (...args: (string | number)[]) => Promise<unknown>;
type PipelineResult = [Error | null, unknown][] | null;
interface ScriptPipeline {
  [name: string]: unknown;
  exec(): Promise<PipelineResult>;
}

export class RedisLink implements GlobalStore {
  readonly #policy: RedisPolicy;
  readonly #metrics: RedisLinkMetrics;
  readonly #health: RedisHealth;
  readonly #client: Redis;
  readonly #sidecarId: string;
  readonly #presenceKey: string;
  readonly #onStateChange: ((state: RedisState) => void) | undefined;
  readonly #onProbe: ((ok: boolean, replicas: number) => void) | undefined;
  readonly #probeTimer: ReturnType<typeof setInterval>;
  #seq = 0;
  #probing = false;
  #closed = false;

  constructor(o: RedisLinkOptions) {
    const p = o.policy;
    this.#policy = p;
    this.#metrics = o.metrics;
    this.#health = new RedisHealth(p, o.clock ?? systemClock);
    this.#sidecarId = o.sidecarId ?? `${hostname()}-${randomBytes(4).toString('hex')}`;
    this.#presenceKey = `${p.keyPrefix}:sidecars`;
    this.#onStateChange = o.onStateChange;
    this.#onProbe = o.onProbe;
    this.#client = new Redis({
      host: p.host,
      port: p.port,
      connectTimeout: p.connectTimeoutMs,
      commandTimeout: p.commandTimeoutMs,
      // Fail at once while disconnected instead of queueing behind the reconnect, and never replay
      // a take after a reconnect: its request was decided long ago.
      enableOfflineQueue: false,
      autoResendUnfulfilledCommands: false,
      maxRetriesPerRequest: 0,
      retryStrategy: (times: number) => Math.min(50 * 2 ** Math.min(times, 10), p.probeIntervalMs),
      connectionName: `sluice-${this.#sidecarId}`,
    });
    for (const [name, lua] of scriptSources()) this.#client.defineCommand(name, { lua, numberOfKeys: KEY_COUNT });
    this.#client.on('error', () => {
      // Connection errors arrive here on every reconnect attempt; state follows 'close' and the
      // probe, and the failure counters say how often. A listener must exist or ioredis logs them.
    });
    this.#client.on('close', () => this.#failed('closed'));
    this.#client.on('ready', () => void this.#probe());
    this.#probeTimer = setInterval(() => void this.#probe(), p.probeIntervalMs);
    this.#probeTimer.unref();
    this.#metrics.redisUp.set(0);
    this.#metrics.redisReplicas.set(this.#health.replicas());
  }

  get usable(): boolean {
    return this.#health.usable && !this.#closed;
  }

  get state(): RedisState {
    return this.#health.state;
  }

  get keyPrefix(): string {
    return this.#policy.keyPrefix;
  }

  get retryMs(): number {
    return this.#policy.probeIntervalMs;
  }

  get sidecarId(): string {
    return this.#sidecarId;
  }

  replicas(): number {
    return this.#health.replicas();
  }

  take(bucket: GlobalBucket, key: string, fresh: boolean, ctx: RequestContext): Promise<boolean> {
    if (!this.usable) return Promise.reject(new StoreUnavailable('down'));
    if (ctx.cancelled !== undefined) return Promise.reject(ctx.cancelled);
    const id = key === '' ? bucket.baseId : `${bucket.baseId}:${key}`;
    return new Promise<boolean>((resolve, reject) => {
      let done = false;
      const onCancel = (reason: Error): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        reject(reason);
      };
      const timer = setTimeout(() => {
        if (done) return;
        done = true;
        releaseCancel(ctx, onCancel);
        this.#failed('timeout');
        reject(new StoreUnavailable('timeout'));
      }, this.#policy.commandTimeoutMs);
      ctx.onCancel = onCancel;
      this.#register(id, bucket, fresh).then(
        (taken) => {
          if (done) return;
          done = true;
          clearTimeout(timer);
          releaseCancel(ctx, onCancel);
          resolve(taken);
        },
        (err: unknown) => {
          if (done) return;
          done = true;
          clearTimeout(timer);
          releaseCancel(ctx, onCancel);
          // ioredis' own commandTimeout may win the race against our timer.
          const timedOut = err instanceof Error && /timed out/i.test(err.message);
          this.#failed(timedOut ? 'timeout' : 'error');
          reject(new StoreUnavailable(timedOut ? 'timeout' : 'error', err));
        },
      );
    });
  }

  /** Stops the probe and the connection (no reconnects). Takes after this fail as unavailable. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#probeTimer);
    this.#client.disconnect();
    this.#metrics.redisUp.set(0);
  }

  /** One round trip: register.lua alone, or init + register_client + register for a new limiter. */
  async #register(id: string, bucket: GlobalBucket, fresh: boolean): Promise<boolean> {
    const keys = scriptKeys(id);
    const now = Date.now();
    const takeArgs = [...keys, now, this.#sidecarId, `${this.#sidecarId}.${++this.#seq}`, '1', '0'];
    if (!fresh) {
      try {
        const call = (this.#client as unknown as Record<string, ScriptCall>)[SCRIPTS.register]!;
        return isTaken(await call.call(this.#client, ...takeArgs));
      } catch (err) {
        // Keys expired or Redis restarted empty: initialise and take again, in one more round trip.
        if (!needsInit(err)) throw err;
      }
    }
    const pipeline = this.#client.pipeline() as unknown as ScriptPipeline;
    const add = (name: string, args: (string | number)[]): void => {
      (pipeline[name] as (...a: (string | number)[]) => unknown).call(pipeline, ...args);
    };
    add(SCRIPTS.init, [...keys, now, this.#sidecarId, ...initArgs(id, bucket.ratePerSecond, bucket.burst, bucket.keyTtlMs)]);
    add(SCRIPTS.registerClient, [...keys, now, this.#sidecarId, '0']);
    add(SCRIPTS.register, takeArgs);
    const results = await pipeline.exec();
    if (results === null || results.length !== 3) throw new Error('redis pipeline returned no results');
    for (const [err] of results) if (err) throw err;
    return isTaken(results[2]![1]);
  }

  async #probe(): Promise<void> {
    if (this.#probing || this.#closed) return;
    this.#probing = true;
    try {
      const now = Date.now();
      const ttlMs = 3 * this.#policy.probeIntervalMs;
      const results = await this.#client
        .pipeline()
        .zadd(this.#presenceKey, now, this.#sidecarId)
        .zremrangebyscore(this.#presenceKey, '-inf', now - ttlMs)
        .zcard(this.#presenceKey)
        .pexpire(this.#presenceKey, ttlMs)
        .exec();
      if (results === null) throw new Error('redis pipeline returned no results');
      for (const [err] of results) if (err) throw err;
      if (this.#closed) return;
      this.#health.observeReplicas(Number(results[2]![1]));
      this.#metrics.redisReplicas.set(this.#health.replicas());
      if (this.#health.probeSucceeded()) {
        this.#metrics.redisUp.set(1);
        this.#onStateChange?.('up');
      }
      this.#onProbe?.(true, this.#health.replicas());
    } catch {
      if (this.#closed) return;
      if (this.#health.probeFailed()) this.#wentDown();
      this.#onProbe?.(false, this.#health.replicas());
    } finally {
      this.#probing = false;
    }
  }

  #failed(why: 'timeout' | 'error' | 'closed'): void {
    if (this.#closed) return;
    this.#metrics.redisFailures.labels({ why }).inc();
    if (this.#health.callFailed()) this.#wentDown();
  }

  #wentDown(): void {
    this.#metrics.redisUp.set(0);
    this.#metrics.fallbackActivations.inc();
    this.#onStateChange?.('down');
  }
}

/** register.lua answers {true, wait, reservoir} (true arrives as 1) or {false} (nil). */
function isTaken(reply: unknown): boolean {
  return Array.isArray(reply) && reply[0] === 1;
}
