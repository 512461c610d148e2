// The shared side of store: redis, and its only I/O: three atomic scripts on one key each
// (claim, complete, release) over a connection of its own to spec.redis.
//
// Never hangs a request: every call is bounded by commandTimeoutMs and by the request's own
// cancellation, ioredis neither queues while disconnected nor replays after a reconnect, and a
// call that fails or times out marks Redis down. While down, requests do not touch Redis at all
// (the caller falls back to memory at once) until a background PING gets through: an outage costs
// at most one timeout per request already in flight. The state machine is the rate limiter's
// (RedisHealth): the same rules for when Redis counts as up.
import { Redis } from 'ioredis';
import type { RedisPolicy } from '../../policy/ratelimits.ts';
import { RedisHealth, type RedisState } from '../ratelimit/redis-health.ts';
import { releaseCancel, type Clock, type RequestContext } from '../../stack/types.ts';

export class SharedStoreUnavailable extends Error {
  readonly why: 'down' | 'timeout' | 'error';
  constructor(why: 'down' | 'timeout' | 'error', cause?: unknown) {
    super(`idempotency store unavailable: ${why}`, { cause });
    this.name = 'SharedStoreUnavailable';
    this.why = why;
  }
}

/** Another request's state under the key, and how long Redis keeps it (ms; -1: no expiry). */
export interface Existing {
  readonly value: Buffer;
  readonly pttlMs: number;
}

/** What the layer needs from a shared store; RedisIdempotencyStore is the real one, tests may fake it. */
export interface SharedStore {
  /** Requests may call the store now. */
  readonly usable: boolean;
  /** Resolves once the store knows whether it is up (bounded). */
  ready(): Promise<void>;
  /**
   * Takes `key` for `marker` for `pxMs` if it is free (resolves null), or tells what holds it.
   * Rejects with SharedStoreUnavailable, or with the cancellation reason.
   */
  claim(key: string, marker: Buffer, pxMs: number, ctx: RequestContext): Promise<Existing | null>;
  /** Writes `value` over our marker for `pxMs`. false: our claim was lost meanwhile. */
  complete(key: string, marker: Buffer, value: Buffer, pxMs: number): Promise<boolean>;
  /** Frees the key if our marker still holds it. */
  release(key: string, marker: Buffer): Promise<void>;
  close(): Promise<void>;
}

// The key is free: take it with our in-flight marker. Taken: say by what, and for how long.
const CLAIM = `
local v = redis.call('GET', KEYS[1])
if v then return {v, redis.call('PTTL', KEYS[1])} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false`;
// Our marker still holds the key (or it expired and nobody took it): the outcome replaces it.
// Otherwise our claim was lost (expired and taken): that claimant's outcome stands.
const COMPLETE = `
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] or not v then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0`;
// Frees the key only if we still hold it.
const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;

type Command = (...args: (string | Buffer | number)[]) => Promise<unknown>;

export interface RedisStoreOptions {
  readonly policy: RedisPolicy;
  readonly clock: Clock;
  /** Names the connection in CLIENT LIST. */
  readonly name: string;
  /** Hears every state change (for logs and metrics). */
  readonly onStateChange?: (state: RedisState) => void;
}

export class RedisIdempotencyStore implements SharedStore {
  readonly #policy: RedisPolicy;
  readonly #health: RedisHealth;
  readonly #client: Redis;
  readonly #onStateChange: ((state: RedisState) => void) | undefined;
  readonly #probeTimer: ReturnType<typeof setInterval>;
  readonly #commands: { claim: Command; complete: Command; release: Command };
  #probing = false;
  #closed = false;
  #settled: Promise<void>;
  #settle: () => void = () => {};

  constructor(o: RedisStoreOptions) {
    const p = o.policy;
    this.#policy = p;
    this.#health = new RedisHealth(p, o.clock);
    this.#onStateChange = o.onStateChange;
    this.#settled = new Promise<void>((resolve) => (this.#settle = resolve));
    this.#client = new Redis({
      host: p.host,
      port: p.port,
      connectTimeout: p.connectTimeoutMs,
      commandTimeout: p.commandTimeoutMs,
      // Fail at once while disconnected, and never replay a claim after a reconnect: its request
      // was decided (by the fallback) long ago.
      enableOfflineQueue: false,
      autoResendUnfulfilledCommands: false,
      maxRetriesPerRequest: 0,
      retryStrategy: (times: number) => Math.min(50 * 2 ** Math.min(times, 10), p.probeIntervalMs),
      connectionName: `sluice-idempotency-${o.name}`,
    });
    this.#client.defineCommand('sluiceIdemClaim', { lua: CLAIM, numberOfKeys: 1 });
    this.#client.defineCommand('sluiceIdemComplete', { lua: COMPLETE, numberOfKeys: 1 });
    this.#client.defineCommand('sluiceIdemRelease', { lua: RELEASE, numberOfKeys: 1 });
    const c = this.#client as unknown as Record<string, Command>;
    this.#commands = {
      // The Buffer variant: stored bodies are bytes, not UTF-8.
      claim: c['sluiceIdemClaimBuffer']!.bind(this.#client),
      complete: c['sluiceIdemComplete']!.bind(this.#client),
      release: c['sluiceIdemRelease']!.bind(this.#client),
    };
    this.#client.on('error', () => {
      // Every failed reconnect lands here; state follows 'close' and the probe. A listener must
      // exist or ioredis logs each one.
    });
    this.#client.on('close', () => this.#failed());
    this.#client.on('ready', () => void this.#probe());
    this.#probeTimer = setInterval(() => void this.#probe(), p.probeIntervalMs);
    this.#probeTimer.unref();
  }

  /** Requests may call Redis now. */
  get usable(): boolean {
    return this.#health.usable && !this.#closed;
  }

  get state(): RedisState {
    return this.#health.state;
  }

  /** Resolves once Redis is known up or down, or after one connect and one call's time. */
  ready(): Promise<void> {
    if (this.#health.state !== 'connecting') return Promise.resolve();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const bound = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, this.#policy.connectTimeoutMs + this.#policy.commandTimeoutMs);
    });
    return Promise.race([this.#settled, bound]).finally(() => clearTimeout(timer));
  }

  /**
   * Takes `key` for `marker` for `pxMs` if it is free (resolves null), or tells what holds it.
   * Rejects with SharedStoreUnavailable, or with the cancellation reason. A claim that succeeds
   * after its request gave up (cancelled, timed out) is released again, so no marker is left for
   * duplicates to wait on.
   */
  claim(key: string, marker: Buffer, pxMs: number, ctx: RequestContext): Promise<Existing | null> {
    return this.#call(
      () => this.#commands.claim(key, marker, Math.max(1, Math.ceil(pxMs))).then(toExisting),
      ctx,
      (late) => {
        if (late === null) void this.release(key, marker).catch(() => {});
      },
    );
  }

  /** Writes the outcome over our marker for `pxMs`. false: our claim was lost meanwhile. */
  complete(key: string, marker: Buffer, value: Buffer, pxMs: number): Promise<boolean> {
    return this.#call(() => this.#commands.complete(key, marker, value, Math.max(1, Math.ceil(pxMs))).then((r) => r === 1), undefined);
  }

  /** Frees the key if our marker still holds it. */
  release(key: string, marker: Buffer): Promise<void> {
    return this.#call(() => this.#commands.release(key, marker).then(() => undefined), undefined);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#probeTimer);
    this.#settle();
    this.#client.disconnect();
  }

  /**
   * One bounded call. `late` hears the result of a call that completed after its caller was
   * answered (timeout or cancellation), to undo what it did.
   */
  #call<T>(run: () => Promise<T>, ctx: RequestContext | undefined, late?: (result: T) => void): Promise<T> {
    if (!this.usable) return Promise.reject(new SharedStoreUnavailable('down'));
    if (ctx?.cancelled !== undefined) return Promise.reject(ctx.cancelled);
    return new Promise<T>((resolve, reject) => {
      let done = false;
      const finish = (): void => {
        done = true;
        clearTimeout(timer);
        if (ctx !== undefined) releaseCancel(ctx, onCancel);
      };
      const onCancel = (reason: Error): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        reject(reason);
      };
      const timer = setTimeout(() => {
        if (done) return;
        finish();
        this.#failed();
        reject(new SharedStoreUnavailable('timeout'));
      }, this.#policy.commandTimeoutMs);
      if (ctx !== undefined) ctx.onCancel = onCancel;
      run().then(
        (result) => {
          if (done) {
            late?.(result);
            return;
          }
          finish();
          resolve(result);
        },
        (err: unknown) => {
          if (done) return;
          finish();
          // ioredis' own commandTimeout may win the race against our timer.
          const timedOut = err instanceof Error && /timed out/i.test(err.message);
          this.#failed();
          reject(new SharedStoreUnavailable(timedOut ? 'timeout' : 'error', err));
        },
      );
    });
  }

  async #probe(): Promise<void> {
    if (this.#probing || this.#closed || this.#health.usable) return;
    this.#probing = true;
    try {
      await this.#client.ping();
      if (this.#closed) return;
      if (this.#health.probeSucceeded()) this.#onStateChange?.('up');
    } catch {
      if (this.#closed) return;
      if (this.#health.probeFailed()) this.#onStateChange?.('down');
    } finally {
      this.#probing = false;
      if (this.#health.state !== 'connecting') this.#settle();
    }
  }

  #failed(): void {
    if (this.#closed) return;
    if (this.#health.callFailed()) this.#onStateChange?.('down');
    this.#settle();
  }
}

/** The claim script's reply: nil (claimed) or [value, pttl]. */
function toExisting(reply: unknown): Existing | null {
  if (reply === null || reply === undefined) return null;
  if (Array.isArray(reply) && Buffer.isBuffer(reply[0])) return { value: reply[0], pttlMs: Number(reply[1]) };
  throw new Error('unexpected reply from the idempotency claim script');
}
