// One rule's decision: take a token for a descriptor key, locally or from the shared store, and
// say how long a refused client should wait. Decisions for local rules are synchronous (no promise,
// no timer): exactness under concurrency comes from that. Global rules ask the store, and fall back
// by onRedisDown when it is down or fails.
import type { RateLimitPolicy } from '../../policy/ratelimits.ts';
import type { Clock, RequestContext } from '../../stack/types.ts';
import { KeyedBuckets } from './keyed-buckets.ts';
import { StoreUnavailable, type GlobalBucket, type GlobalStore } from './redis-link.ts';
import { TokenBucket } from './token-bucket.ts';

export interface Verdict {
  readonly admitted: boolean;
  /** Decided without the shared store (Redis down): counted as fallback_*. */
  readonly fallback: boolean;
  /** Ms until a retry could be admitted; 0 when admitted. */
  readonly waitMs: number;
}

const ADMITTED: Verdict = Object.freeze({ admitted: true, fallback: false, waitMs: 0 });
const ADMITTED_FALLBACK: Verdict = Object.freeze({ admitted: true, fallback: true, waitMs: 0 });

/** Buckets for one rule's keys: one bucket, or one per descriptor value (bounded). */
class Buckets {
  readonly #single: TokenBucket | undefined;
  readonly #keyed: KeyedBuckets | undefined;
  #rate: number;
  #burst: number;

  constructor(rule: RateLimitPolicy, ratePerSecond: number, burst: number, nowMs: number) {
    this.#rate = ratePerSecond;
    this.#burst = burst;
    if (rule.by.kind === 'none') this.#single = new TokenBucket(ratePerSecond, burst, nowMs);
    else this.#keyed = new KeyedBuckets(ratePerSecond, burst, rule.maxKeys);
  }

  /** The bucket that decides for `key` (maybe the shared overflow bucket: see isOverflow). */
  bucketFor(key: string, nowMs: number): TokenBucket {
    return this.#single ?? this.#keyed!.bucketFor(key, nowMs);
  }

  isOverflow(bucket: TokenBucket): boolean {
    return this.#keyed?.isOverflow(bucket) ?? false;
  }

  /** Rescales to a new rate and burst (a new local share); no-op when unchanged. */
  resize(ratePerSecond: number, burst: number, nowMs: number): void {
    if (ratePerSecond === this.#rate && burst === this.#burst) return;
    this.#rate = ratePerSecond;
    this.#burst = burst;
    this.#single?.reconfigure(ratePerSecond, burst, nowMs);
    this.#keyed?.reconfigure(ratePerSecond, burst, nowMs);
  }
}

/** Keys this sidecar has initialised in the store, most recent last; bounded like the buckets. */
class KnownKeys {
  readonly #keys = new Set<string>();
  readonly #max: number;

  constructor(max: number) {
    this.#max = max;
  }

  has(key: string): boolean {
    return this.#keys.has(key);
  }

  add(key: string): void {
    if (this.#keys.has(key)) return;
    if (this.#keys.size >= this.#max) this.#keys.delete(this.#keys.values().next().value as string);
    this.#keys.add(key);
  }
}

/**
 * The state a rule keeps between requests. A policy update that leaves the rule's meaning as it
 * was (same signature) hands the state to the new build, so an update grants no fresh burst.
 */
export class RuleState {
  readonly signature: string;
  readonly local: Buckets | undefined;
  /** Local-share buckets for a global rule while Redis is down, made on first need. */
  fallback: Buckets | undefined;
  readonly known: KnownKeys | undefined;

  constructor(rule: RateLimitPolicy, nowMs: number) {
    this.signature = ruleSignature(rule);
    this.local = rule.scope === 'local' ? new Buckets(rule, rule.ratePerSecond, rule.burst, nowMs) : undefined;
    this.known = rule.scope === 'global' ? new KnownKeys(rule.by.kind === 'none' ? 1 : rule.maxKeys) : undefined;
  }
}

/** What must be equal for state to carry over: everything that shapes the buckets. */
export function ruleSignature(r: RateLimitPolicy): string {
  const by = r.by.kind === 'header' ? `header:${r.by.name}` : r.by.kind === 'path-prefix' ? `path-prefix:${r.by.segments}` : r.by.kind;
  return [r.name, r.scope, r.ratePerSecond, r.burst, by, r.maxKeys, r.onRedisDown].join('|');
}

/** Bottleneck limiter id of a global rule: the rate is in it because init.lua never overwrites settings. */
export function globalBucket(keyPrefix: string, direction: string, upstream: string, r: RateLimitPolicy): GlobalBucket {
  return {
    baseId: `${keyPrefix}:${direction}:${upstream}:${r.name}:${r.quota}per${r.windowS}s-b${r.burst}`,
    ratePerSecond: r.ratePerSecond,
    burst: r.burst,
    // Twice the time to refill from empty, at least a minute: a key that expires had refilled.
    keyTtlMs: Math.max(60_000, Math.ceil((2000 * r.burst) / r.ratePerSecond)),
  };
}

export interface RuleLimiterOptions {
  readonly rule: RateLimitPolicy;
  readonly state: RuleState;
  readonly clock: Clock;
  /** Required for a global rule. */
  readonly store: GlobalStore | undefined;
  readonly global: GlobalBucket | undefined;
  /** A key was charged to the overflow bucket (maxKeys reached). */
  readonly onOverflow: () => void;
}

export class RuleLimiter {
  readonly rule: RateLimitPolicy;
  readonly #state: RuleState;
  readonly #clock: Clock;
  readonly #store: GlobalStore | undefined;
  readonly #global: GlobalBucket | undefined;
  readonly #onOverflow: () => void;

  constructor(o: RuleLimiterOptions) {
    if (o.rule.scope === 'global' && (o.store === undefined || o.global === undefined)) {
      throw new Error(`rate limit ${o.rule.name} is global but the sidecar has no redis link`);
    }
    this.rule = o.rule;
    this.#state = o.state;
    this.#clock = o.clock;
    this.#store = o.store;
    this.#global = o.global;
    this.#onOverflow = o.onOverflow;
  }

  /** Local rules answer synchronously; global rules return a promise. */
  decide(key: string, ctx: RequestContext): Verdict | Promise<Verdict> {
    const local = this.#state.local;
    if (local !== undefined) return this.#take(local, key, false);
    const store = this.#store!;
    if (!store.usable) return this.#fallback(key);
    const known = this.#state.known!;
    const fresh = !known.has(key);
    return store.take(this.#global!, key, fresh, ctx).then(
      (taken) => {
        known.add(key);
        // The store's tick is amount per step (≈ one token per 1/rate s): the next token comes within 1/rate.
        return taken ? ADMITTED : { admitted: false, fallback: false, waitMs: 1000 / this.rule.ratePerSecond };
      },
      (err: unknown) => {
        if (err instanceof StoreUnavailable) return this.#fallback(key);
        throw err;
      },
    );
  }

  #take(buckets: Buckets, key: string, fallback: boolean): Verdict {
    const now = this.#clock.now();
    const bucket = buckets.bucketFor(key, now);
    if (buckets.isOverflow(bucket)) this.#onOverflow();
    if (bucket.tryTake(now)) return fallback ? ADMITTED_FALLBACK : ADMITTED;
    return { admitted: false, fallback, waitMs: bucket.msUntil(1, now) };
  }

  #fallback(key: string): Verdict {
    switch (this.rule.onRedisDown) {
      case 'allow':
        return ADMITTED_FALLBACK;
      case 'deny':
        return { admitted: false, fallback: true, waitMs: this.#store!.retryMs };
      case 'local-share': {
        // rate and burst / replicas; at least one token so a sidecar can always admit something.
        const share = 1 / this.#store!.replicas();
        const rate = this.rule.ratePerSecond * share;
        const burst = Math.max(1, this.rule.burst * share);
        const now = this.#clock.now();
        let buckets = this.#state.fallback;
        if (buckets === undefined) buckets = this.#state.fallback = new Buckets(this.rule, rate, burst, now);
        else buckets.resize(rate, burst, now);
        return this.#take(buckets, key, true);
      }
    }
  }
}
