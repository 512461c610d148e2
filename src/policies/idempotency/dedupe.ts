// Inbound dedupe of requests carrying an Idempotency-Key (build lifetime: one per sidecar), so a
// producer's retries reach the app once and every retry gets the one outcome.
// draft-ietf-httpapi-idempotency-key-header, with Stripe's choices where the draft leaves room:
//
// - A key belongs to one request: method, authority and path (query included). The same key on
//   another request is refused with 422 (idempotency-mismatch), in flight or stored.
// - The first request runs; its body streams to its own client as always while up to
//   maxResponseBytes are copied. When the body ends, the outcome (status, headers, body,
//   trailers) is stored for ttlMs and replayed to duplicates with `sluice-idempotent-replay: true`.
// - A duplicate that arrives while the original runs waits for it (the draft answers 409 here:
//   waiting gives the retry its answer instead of a refusal it would only retry), never past its
//   own deadline or cancellation, at most maxWaitersPerKey per key (beyond: 409).
// - Not stored: 5xx, 408/425/429 (see isStorableStatus), errors and local replies from inside, and
//   bodies cut before their end. The key is free again, so a retry runs; the oldest waiter is such
//   a retry and runs now (see in-flight.ts). A body over maxResponseBytes has had its effect but
//   cannot be replayed: duplicates get 409 (idempotency-conflict) for ttlMs.
// - store: redis shares keys between replicas. Duplicates on one sidecar still coalesce locally
//   (one Redis caller per key per sidecar); the lead claims the key in Redis (SET NX PX with an
//   in-flight marker naming its owner), polls with bounded back-off while another replica holds
//   it, and writes the outcome over its marker. Outcomes are kept in memory too, so repeats are
//   answered without Redis and survive an outage. Redis unusable: memory alone, counted.
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import type { IdempotencyPolicy } from '../../policy/types.ts';
import type { RedisPolicy } from '../../policy/ratelimits.ts';
import { SluiceError } from '../../stack/errors.ts';
import { type Clock, type Handler, type Layer, type ProxyRequest, type ProxyResponse, type RequestContext } from '../../stack/types.ts';
import { InFlight, type FlightOutcome } from './in-flight.ts';
import { ResponseLru } from './lru.ts';
import type { IdempotencyMetrics, IdempotencyOutcome } from './metrics.ts';
import { encodeDone, encodeInFlight, encodeUnreplayable, redisKey, type SharedState } from './redis-codec.ts';
import { RedisIdempotencyStore, type SharedStore } from './redis-store.ts';
import type { RedisState } from '../ratelimit/redis-health.ts';
import { claimShared, type SharedLookup } from './shared-claim.ts';
import { isStorableStatus, keptHeaders, replayResponse, storedBytes, type StoredResponse } from './stored-response.ts';
import { TeeBody } from './tee-body.ts';

export { declareIdempotencyMetrics, type IdempotencyMetrics, type IdempotencyOutcome } from './metrics.ts';

export interface IdempotencyDeps {
  readonly clock: Clock;
  readonly metrics: IdempotencyMetrics;
  readonly log: { info(obj: object, msg: string): void; warn(obj: object, msg: string): void };
  /** spec.redis of the policy in force (store: redis needs it). */
  readonly redis: RedisPolicy | undefined;
  /** This sidecar in Redis claims (owner ids, connection name); default host name + random suffix. */
  readonly sidecarId?: string;
  /** Duplicates waiting on one key at once; beyond it they get 409. Default 1000. */
  readonly maxWaitersPerKey?: number;
  /** Opens the shared store for store: redis; default a RedisIdempotencyStore (tests pass a fake). */
  readonly openSharedStore?: (policy: RedisPolicy, onStateChange: (state: RedisState) => void) => SharedStore;
}

export const DEFAULT_MAX_WAITERS_PER_KEY = 1000;

type Entry =
  | { readonly kind: 'response'; readonly fingerprint: string; readonly response: StoredResponse; readonly bytes: number; readonly expiresAtMs: number }
  | { readonly kind: 'unreplayable'; readonly fingerprint: string; readonly bytes: number; readonly expiresAtMs: number };

/** A lead's hold on the key in Redis. */
interface Claim {
  readonly store: SharedStore;
  readonly key: string;
  readonly marker: Buffer;
}

export class IdempotencyDedupe {
  #policy: IdempotencyPolicy;
  readonly #clock: Clock;
  readonly #metrics: IdempotencyMetrics;
  readonly #log: IdempotencyDeps['log'];
  readonly #sidecarId: string;
  readonly #maxWaiters: number;
  readonly #outcomes: Record<IdempotencyOutcome, { inc(): void }>;
  readonly #lru: ResponseLru<Entry>;
  readonly #inFlight = new Map<string, InFlight>();
  #shared: { readonly settings: string; readonly prefix: string; readonly store: SharedStore } | undefined;
  readonly #openSharedStore: NonNullable<IdempotencyDeps['openSharedStore']>;
  #claims = 0;

  constructor(policy: IdempotencyPolicy, deps: IdempotencyDeps) {
    this.#policy = policy;
    this.#clock = deps.clock;
    this.#metrics = deps.metrics;
    this.#log = deps.log;
    this.#sidecarId = deps.sidecarId ?? `${hostname()}-${randomBytes(4).toString('hex')}`;
    this.#maxWaiters = deps.maxWaitersPerKey ?? DEFAULT_MAX_WAITERS_PER_KEY;
    this.#openSharedStore =
      deps.openSharedStore ?? ((policy, onStateChange) => new RedisIdempotencyStore({ policy, clock: this.#clock, name: this.#sidecarId, onStateChange }));
    if (!(Number.isSafeInteger(this.#maxWaiters) && this.#maxWaiters >= 0)) {
      throw new RangeError(`idempotency maxWaitersPerKey must be an integer >= 0, got ${this.#maxWaiters}`);
    }
    const r = deps.metrics.requests;
    this.#outcomes = {
      first: r.labels({ outcome: 'first' }),
      replayed: r.labels({ outcome: 'replayed' }),
      waited: r.labels({ outcome: 'waited' }),
      mismatch: r.labels({ outcome: 'mismatch' }),
      conflict: r.labels({ outcome: 'conflict' }),
      not_stored: r.labels({ outcome: 'not_stored' }),
    };
    const evicted = { ttl: deps.metrics.evictions.labels({ reason: 'ttl' }), lru: deps.metrics.evictions.labels({ reason: 'lru' }) };
    this.#lru = new ResponseLru<Entry>(policy, deps.clock, (reason) => evicted[reason].inc());
    this.#syncGauges();
    this.#useShared(policy, deps.redis);
  }

  /**
   * A policy update. Stored outcomes are kept (new caps apply at once, a new TTL to new entries),
   * also when the store kind changes: memory is redis mode's cache and fallback, and forgetting
   * outcomes would let retries of them run again. Only the Redis link is made anew, when the
   * store kind or spec.redis changes.
   */
  reconfigure(policy: IdempotencyPolicy, redis: RedisPolicy | undefined): void {
    this.#policy = policy;
    this.#lru.resize(policy);
    this.#syncGauges();
    this.#useShared(policy, redis);
  }

  layer(): Layer {
    return (next) => (req, ctx) => {
      const key = ctx.idempotencyKey;
      // An empty value names no operation: it would make every such request one duplicate.
      if (key === undefined || key === '') return next(req, ctx);
      return this.#dedupe(key, req, ctx, next);
    };
  }

  /** Resolves once the shared store (if any) knows whether Redis is up; bounded by one connect and one call. */
  ready(): Promise<void> {
    return this.#shared?.store.ready() ?? Promise.resolve();
  }

  async close(): Promise<void> {
    const shared = this.#shared;
    this.#shared = undefined;
    this.#metrics.redisUp.set(0);
    this.#lru.clear();
    this.#syncGauges();
    await shared?.store.close();
  }

  async #dedupe(key: string, req: ProxyRequest, ctx: RequestContext, next: Handler): Promise<ProxyResponse> {
    const fingerprint = `${req.method} ${req.authority}${req.path}`;
    const entry = this.#lru.get(key);
    if (entry !== undefined) {
      this.#syncGauges();
      return this.#answer(judge(entry, fingerprint), 'replayed');
    }
    const flight = this.#inFlight.get(key);
    if (flight !== undefined) {
      if (flight.fingerprint !== fingerprint) return this.#answer({ kind: 'error', error: mismatch() }, 'replayed');
      if (flight.full) {
        this.#outcomes.conflict.inc();
        throw new SluiceError('idempotency-conflict', `${this.#maxWaiters} duplicates already wait for the original request`, { retryAfterS: 1 });
      }
      return this.#waitFor(flight, key, req, ctx, next);
    }
    const mine = new InFlight(fingerprint, this.#maxWaiters);
    this.#inFlight.set(key, mine);
    return this.#lead(mine, key, req, ctx, next);
  }

  async #waitFor(flight: InFlight, key: string, req: ProxyRequest, ctx: RequestContext, next: Handler): Promise<ProxyResponse> {
    let outcome: FlightOutcome;
    this.#metrics.waiting.inc();
    try {
      outcome = await flight.wait(ctx, this.#clock);
    } finally {
      this.#metrics.waiting.dec();
    }
    if (outcome.kind === 'lead') return this.#lead(flight, key, req, ctx, next);
    return this.#answer(outcome, 'waited');
  }

  /** This request holds the key on this sidecar: claim it in Redis if shared, then run it. */
  async #lead(flight: InFlight, key: string, req: ProxyRequest, ctx: RequestContext, next: Handler): Promise<ProxyResponse> {
    const link = this.#shared;
    if (link === undefined) return this.#run(flight, key, req, ctx, next, undefined);
    const claim: Claim = {
      store: link.store,
      key: redisKey(link.prefix, key),
      marker: encodeInFlight(`${this.#sidecarId}.${++this.#claims}`, flight.fingerprint),
    };
    let found: SharedLookup;
    try {
      found = await claimShared({ ...claim, fingerprint: flight.fingerprint, ttlMs: this.#policy.ttlMs, clock: this.#clock, waiting: this.#metrics.waiting }, ctx);
    } catch (err) {
      // Cancelled or out of time while another replica runs it: the next waiter carries on.
      this.#handOver(flight, key);
      throw err;
    }
    if (found.kind === 'claimed') return this.#run(flight, key, req, ctx, next, claim);
    if (found.kind === 'fallback') {
      this.#metrics.storeFallbacks.inc();
      return this.#run(flight, key, req, ctx, next, undefined);
    }
    let verdict: FlightOutcome;
    if (found.kind === 'found') {
      const entry = this.#entryFrom(found.state, key, found.pttlMs);
      this.#lru.set(key, entry);
      this.#syncGauges();
      verdict = judge(entry, flight.fingerprint);
    } else verdict = { kind: 'error', error: found.error };
    // Whatever this request learnt answers its local waiters too.
    this.#endFlight(key, flight);
    if (verdict.kind === 'stored') flight.complete(verdict.response);
    else if (verdict.kind === 'error') flight.fail(verdict.error);
    return this.#answer(verdict, found.kind === 'found' && found.polled ? 'waited' : 'replayed');
  }

  /** Runs the request in the app and keeps its outcome, if it is one to keep. */
  async #run(flight: InFlight, key: string, req: ProxyRequest, ctx: RequestContext, next: Handler, claim: Claim | undefined): Promise<ProxyResponse> {
    this.#outcomes.first.inc();
    let res: ProxyResponse;
    try {
      res = await next(req, ctx);
    } catch (err) {
      this.#notStored(flight, key, claim);
      throw err;
    }
    const { statusCode, body } = res;
    if (!isStorableStatus(statusCode)) {
      this.#notStored(flight, key, claim);
      return res;
    }
    const headers = keptHeaders(res.headers, body !== null);
    const maxBytes = this.#policy.maxResponseBytes;
    if (body === null || Buffer.isBuffer(body)) {
      if (body !== null && body.length > maxBytes) this.#unreplayable(flight, key, claim);
      else this.#stored(flight, key, claim, { statusCode, headers, body, trailers: null });
      return res;
    }
    // Declared too large: no point copying what cannot be kept.
    if (declaredLength(res.headers) > maxBytes) {
      this.#unreplayable(flight, key, claim);
      return res;
    }
    let settled = false;
    const tee = new TeeBody(body, maxBytes, {
      complete: (bytes, trailers) => {
        if (settled) return;
        settled = true;
        this.#stored(flight, key, claim, { statusCode, headers, body: bytes, trailers });
      },
      oversize: () => {
        if (settled) return;
        settled = true;
        this.#unreplayable(flight, key, claim);
      },
      cut: () => {
        if (settled) return;
        settled = true;
        this.#notStored(flight, key, claim);
      },
    });
    return { statusCode, headers: res.headers, body: tee };
  }

  #stored(flight: InFlight, key: string, claim: Claim | undefined, response: StoredResponse): void {
    const fingerprint = flight.fingerprint;
    const entry: Entry = {
      kind: 'response',
      fingerprint,
      response,
      bytes: storedBytes(response) + key.length + fingerprint.length,
      expiresAtMs: this.#clock.now() + this.#policy.ttlMs,
    };
    // Larger than the whole store: remember at least that it happened, so it is not run again.
    if (!this.#lru.set(key, entry)) this.#lru.set(key, this.#unreplayableEntry(key, fingerprint));
    this.#syncGauges();
    this.#endFlight(key, flight);
    // Waiters get it either way: it is here now.
    flight.complete(response);
    if (claim !== undefined) this.#share(claim, encodeDone(fingerprint, response));
  }

  #unreplayable(flight: InFlight, key: string, claim: Claim | undefined): void {
    this.#outcomes.not_stored.inc();
    this.#lru.set(key, this.#unreplayableEntry(key, flight.fingerprint));
    this.#syncGauges();
    this.#endFlight(key, flight);
    flight.fail(oversize(this.#policy.maxResponseBytes));
    if (claim !== undefined) this.#share(claim, encodeUnreplayable(flight.fingerprint));
  }

  #notStored(flight: InFlight, key: string, claim: Claim | undefined): void {
    this.#outcomes.not_stored.inc();
    if (claim === undefined) {
      this.#handOver(flight, key);
      return;
    }
    // Freed in Redis first, so the next lead's claim finds the key free instead of polling our marker.
    void claim.store
      .release(claim.key, claim.marker)
      .catch(() => {})
      .finally(() => this.#handOver(flight, key));
  }

  /** Writes an outcome over the lead's marker; failing that, the outcome lives in memory only. */
  #share(claim: Claim, value: Buffer): void {
    void claim.store.complete(claim.key, claim.marker, value, this.#policy.ttlMs).catch((err: unknown) => {
      this.#metrics.storeFallbacks.inc();
      this.#log.warn({ err }, 'idempotency: outcome not written to redis; other replicas may run this key again');
    });
  }

  /** The lead ended with nothing kept: the oldest waiter leads now, or the key is free. */
  #handOver(flight: InFlight, key: string): void {
    if (!flight.promote()) this.#endFlight(key, flight);
  }

  #endFlight(key: string, flight: InFlight): void {
    if (this.#inFlight.get(key) === flight) this.#inFlight.delete(key);
  }

  #unreplayableEntry(key: string, fingerprint: string): Entry {
    return { kind: 'unreplayable', fingerprint, bytes: key.length + fingerprint.length, expiresAtMs: this.#clock.now() + this.#policy.ttlMs };
  }

  /** A Redis outcome as a local entry, kept no longer than Redis keeps it. */
  #entryFrom(state: Exclude<SharedState, { kind: 'in-flight' }>, key: string, pttlMs: number): Entry {
    const ttlMs = pttlMs > 0 ? Math.min(pttlMs, this.#policy.ttlMs) : this.#policy.ttlMs;
    const expiresAtMs = this.#clock.now() + ttlMs;
    if (state.kind === 'unreplayable') return { ...this.#unreplayableEntry(key, state.fingerprint), expiresAtMs };
    const { response, fingerprint } = state;
    return { kind: 'response', fingerprint, response, bytes: storedBytes(response) + key.length + fingerprint.length, expiresAtMs };
  }

  /** Answers a duplicate from a verdict, counted as `hit` when it is a replay. */
  #answer(verdict: FlightOutcome, hit: 'replayed' | 'waited'): ProxyResponse {
    if (verdict.kind === 'stored') {
      this.#outcomes[hit].inc();
      return replayResponse(verdict.response);
    }
    if (verdict.kind === 'error') {
      this.#outcomes[verdict.error.code === 'idempotency-mismatch' ? 'mismatch' : 'conflict'].inc();
      throw verdict.error;
    }
    throw new Error('idempotency: a lead handed to #answer');
  }

  #useShared(policy: IdempotencyPolicy, redis: RedisPolicy | undefined): void {
    if (policy.store === 'redis' && redis === undefined) {
      this.#log.warn({}, 'idempotency store: redis needs spec.redis; keys are kept in this sidecar\'s memory only');
    }
    const want = policy.store === 'redis' ? redis : undefined;
    const settings = want === undefined ? undefined : JSON.stringify(want);
    if (settings === this.#shared?.settings) return;
    const old = this.#shared;
    this.#shared = undefined;
    this.#metrics.redisUp.set(0);
    if (want !== undefined) {
      const store: SharedStore = this.#openSharedStore(want, (state) => {
        if (this.#shared?.store !== store) return;
        this.#metrics.redisUp.set(state === 'up' ? 1 : 0);
        if (state === 'down') this.#log.warn({ redis: `${want.host}:${want.port}` }, "redis unreachable: idempotency keys kept in this sidecar's memory only");
        else this.#log.info({ state }, 'redis for idempotency keys');
      });
      this.#shared = { settings: settings!, prefix: want.keyPrefix, store };
      this.#metrics.redisUp.set(store.usable ? 1 : 0);
    }
    void old?.store.close();
  }

  #syncGauges(): void {
    this.#metrics.entries.set(this.#lru.size);
    this.#metrics.bytes.set(this.#lru.bytes);
  }
}

/** What a duplicate with `fingerprint` gets from a kept entry. */
function judge(entry: Entry, fingerprint: string): FlightOutcome {
  if (entry.fingerprint !== fingerprint) return { kind: 'error', error: mismatch() };
  if (entry.kind === 'unreplayable') return { kind: 'error', error: new SluiceError('idempotency-conflict', 'the original response was not stored (larger than maxResponseBytes)') };
  return { kind: 'stored', response: entry.response };
}

function mismatch(): SluiceError {
  return new SluiceError('idempotency-mismatch', 'the key was first used with another method or path');
}

function oversize(maxBytes: number): SluiceError {
  return new SluiceError('idempotency-conflict', `the original response is larger than maxResponseBytes (${maxBytes} bytes) and is not stored`);
}

/** Content-Length as a number; -1 when absent or not one. */
function declaredLength(headers: ProxyResponse['headers']): number {
  const v = headers['content-length'];
  if (typeof v !== 'string') return -1;
  const n = Number(v);
  return Number.isSafeInteger(n) && n >= 0 ? n : -1;
}
