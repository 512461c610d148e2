// Whether global rules may ask Redis right now, and how many sidecars share a global limit. A small
// state machine with no I/O and no timers; the Redis link feeds it events and reads its answers.
//
//   connecting ──probe ok──▶ up ──call failed / timed out / connection closed──▶ down
//        │                   ▲                                                  │
//        └──probe failed──▶ down ◀──────────────probe failed──────────────────────┘
//                            └──────────────────probe ok──────────────────▶ up
//
// Only the background probe brings Redis back. A request's call that succeeds late (after another
// timed out and marked Redis down) proves little about the next one, and letting it flip the state
// would make a slow Redis flap; so request-path calls can only report failures. While not up,
// requests never wait for Redis: global rules decide by their onRedisDown at once.
import type { Clock } from '../../stack/types.ts';

export type RedisState = 'connecting' | 'up' | 'down';

export interface RedisHealthPolicy {
  /** Fixed replica count, or auto: counted live in Redis by the probe. */
  readonly replicas: number | 'auto';
  /** With auto: the floor, and the count before any was seen. */
  readonly minReplicas: number;
}

export class RedisHealth {
  readonly #clock: Clock;
  readonly #policy: RedisHealthPolicy;
  #state: RedisState = 'connecting';
  #sinceMs: number;
  #seenReplicas: number | undefined;

  constructor(policy: RedisHealthPolicy, clock: Clock) {
    const { replicas, minReplicas } = policy;
    if (replicas !== 'auto' && !(Number.isSafeInteger(replicas) && replicas >= 1)) {
      throw new RangeError(`redis replicas must be auto or an integer >= 1, got ${replicas}`);
    }
    if (!(Number.isSafeInteger(minReplicas) && minReplicas >= 1)) {
      throw new RangeError(`redis minReplicas must be an integer >= 1, got ${minReplicas}`);
    }
    this.#policy = policy;
    this.#clock = clock;
    this.#sinceMs = clock.now();
  }

  get state(): RedisState {
    return this.#state;
  }

  /** Clock time of the last state change (construction, for connecting). */
  get sinceMs(): number {
    return this.#sinceMs;
  }

  /** Requests may call Redis. */
  get usable(): boolean {
    return this.#state === 'up';
  }

  /** A probe reached Redis. True when this ends an outage or is the first contact: global again. */
  probeSucceeded(): boolean {
    if (this.#state === 'up') return false;
    this.#set('up');
    return true;
  }

  /** A probe failed. True when this starts an outage (a fallback activation). */
  probeFailed(): boolean {
    return this.#fail();
  }

  /**
   * A request's call failed or timed out, or the connection closed. True when this starts an
   * outage (a fallback activation); later failures in the same outage are not new activations.
   */
  callFailed(): boolean {
    return this.#fail();
  }

  /** The probe counted `n` sidecars live (itself included). Ignored with a fixed replica count. */
  observeReplicas(n: number): void {
    if (Number.isSafeInteger(n) && n >= 1) this.#seenReplicas = n;
  }

  /**
   * Sidecars sharing a global limit: the fixed count, or the last count seen (remembered through
   * an outage, which is when it is needed), never below minReplicas.
   */
  replicas(): number {
    const { replicas, minReplicas } = this.#policy;
    if (replicas !== 'auto') return replicas;
    return Math.max(minReplicas, this.#seenReplicas ?? minReplicas);
  }

  /** This sidecar's share of a global limit while Redis is down: 1 / replicas. */
  share(): number {
    return 1 / this.replicas();
  }

  #fail(): boolean {
    if (this.#state === 'down') return false;
    this.#set('down');
    return true;
  }

  #set(state: RedisState): void {
    this.#state = state;
    this.#sinceMs = this.#clock.now();
  }
}
