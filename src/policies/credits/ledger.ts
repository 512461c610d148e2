// The consumer's credit ledger (pure: inputs and a clock, no timers, no I/O). It shares the app's
// admission limit among the producer sidecars it sees: a weighted max-min fair share of their
// demands, so a producer that wants little leaves the rest to the others.
//
// Conservation: a grant can only grow out of capacity nobody holds. A grant that shrinks is still
// *committed* at its old size until the producer acknowledges the smaller one (its next request
// carries ack=seq) or its lease lapses, because until then it may rightly send under the old one.
// So at every moment: Σ committed + uncredited in flight + orphaned in flight ≤ capacity, or, when
// the capacity itself just fell, the grants only shrink until it holds again.
import type { CreditGrantPolicy } from '../../policy/types.ts';
import type { Clock } from '../../stack/types.ts';
import type { CreditClaim, Grant } from './protocol.ts';

/** Grants sent and not yet acknowledged, per producer; beyond it the two oldest merge (max). */
const MAX_OUTSTANDING = 16;
/**
 * With many producers, fair shares are recomputed at most this often (unless the set changed),
 * ms; with few, on every change: the computation is O(n log n) per answer.
 */
const RESHARE_MS = 5;
const RESHARE_ALWAYS_UNDER = 64;

export interface Producer {
  readonly id: string;
  svc: string;
  weight: number;
  want: number;
  /** Its requests in flight here now (counted by the grant layer, from arrival to headers). */
  inFlight: number;
  /** The last grant sent. */
  n: number;
  seq: number;
  /** Grants sent at or after the acknowledged one: [seq, n] pairs, oldest first. */
  outstanding: [number, number][];
  leaseUntilMs: number;
  /** Max-min fair share, recomputed on change. */
  target: number;
  /** Lapsed and removed: its in-flight requests are orphans until they end. */
  gone: boolean;
}

export class CreditLedger {
  readonly epoch: string;
  readonly #clock: Clock;
  #policy: CreditGrantPolicy;
  readonly #producers = new Map<string, Producer>();
  #capacity = 0;
  /** Requests from producers without a claim (no sidecar, or malformed), in flight here. */
  #uncredited = 0;
  /** Requests of lapsed producers still in flight. */
  orphanedInFlight = 0;
  /** Leases that lapsed, since start. */
  expired = 0;
  /** Requests that arrived beyond their producer's committed window (a race or a misbehaving producer). */
  overGrant = 0;
  #sharedAtMs = -Infinity;
  #dirty = true;
  /** The earliest lease end among producers: no scan before it. */
  #nextExpiryMs = Infinity;

  constructor(policy: CreditGrantPolicy, clock: Clock, epoch: string) {
    this.#policy = policy;
    this.#clock = clock;
    this.epoch = epoch;
  }

  reconfigure(policy: CreditGrantPolicy): void {
    this.#policy = policy;
    this.#nextExpiryMs = -Infinity;
    for (const p of this.#producers.values()) p.weight = this.#weightOf(p.svc);
    this.#dirty = true;
  }

  /** The limit to share out (admission's limit now). */
  setCapacity(capacity: number): void {
    const c = Math.max(0, Math.floor(capacity));
    if (c !== this.#capacity) {
      this.#capacity = c;
      this.#dirty = true;
    }
  }

  get capacity(): number {
    return this.#capacity;
  }

  /** A request without a claim started or ended: it holds capacity nobody granted. */
  uncredited(delta: 1 | -1): void {
    this.#uncredited = Math.max(0, this.#uncredited + delta);
    this.#dirty = true;
  }

  get uncreditedInFlight(): number {
    return this.#uncredited;
  }

  /**
   * A claimed request (or a credit fetch) arrived. Renews the producer's lease and applies its
   * acknowledgement. undefined when the ledger is full of producers: the request is uncredited.
   */
  arrive(claim: CreditClaim, counts: boolean): Producer | undefined {
    const now = this.#clock.now();
    this.#expire(now);
    let p = this.#producers.get(claim.id);
    if (p === undefined) {
      if (this.#producers.size >= this.#policy.maxProducers) return undefined;
      p = {
        id: claim.id,
        svc: claim.svc,
        weight: this.#weightOf(claim.svc),
        want: claim.want,
        inFlight: 0,
        n: 0,
        seq: -1,
        outstanding: [],
        leaseUntilMs: now,
        target: 0,
        gone: false,
      };
      this.#producers.set(claim.id, p);
      if (this.#nextExpiryMs === Infinity) this.#nextExpiryMs = p.leaseUntilMs + this.#policy.leaseMs;
      this.#dirty = true;
      this.#sharedAtMs = -Infinity;
    }
    if (claim.svc !== p.svc) {
      p.svc = claim.svc;
      p.weight = this.#weightOf(claim.svc);
      this.#dirty = true;
    }
    if (claim.want !== p.want) {
      p.want = claim.want;
      this.#dirty = true;
    }
    if (claim.epoch === this.epoch) acknowledge(p, claim.ack);
    this.#renew(p, now);
    if (counts) {
      if (p.inFlight >= committed(p)) this.overGrant++;
      p.inFlight++;
    }
    return p;
  }

  /** A claimed request ended (its response headers went back, or it failed). */
  depart(p: Producer): void {
    if (p.inFlight > 0) p.inFlight--;
    if (p.gone && this.orphanedInFlight > 0) this.orphanedInFlight--;
  }

  /** The grant to send back to `p` now; renews its lease. */
  grant(p: Producer): Grant {
    const now = this.#clock.now();
    this.#expire(now);
    if (p.gone) return { n: 0, seq: Math.max(0, p.seq), leaseMs: this.#policy.leaseMs, epoch: this.epoch };
    this.#reshare(now);
    let n = p.target;
    const holds = held(p);
    if (n > holds) {
      // Growth comes only out of capacity nobody holds.
      const free = Math.max(0, this.#capacity - this.committedTotal() - this.uncreditedInFlight - this.orphanedInFlight);
      n = Math.min(n, holds + free);
    }
    if (p.seq < 0 || n !== p.n) {
      p.seq++;
      p.n = n;
      p.outstanding.push([p.seq, n]);
      if (p.outstanding.length > MAX_OUTSTANDING) {
        // Merging keeps the larger window of the two: conservative, never under-counts.
        const [first, second] = p.outstanding.splice(0, 2) as [[number, number], [number, number]];
        p.outstanding.unshift([second[0], Math.max(first[1], second[1])]);
      }
    }
    this.#renew(p, now);
    return { n: p.n, seq: p.seq, leaseMs: this.#policy.leaseMs, epoch: this.epoch };
  }

  /** Σ committed over live producers (lapsed leases are let go first). */
  committedTotal(): number {
    this.#expire(this.#clock.now());
    let sum = 0;
    for (const p of this.#producers.values()) sum += held(p);
    return sum;
  }

  /** Live producers, lapsed leases let go first. */
  get size(): number {
    this.#expire(this.#clock.now());
    return this.#producers.size;
  }

  /** Live producers (leases not lapsed as of the last look). */
  producers(): IterableIterator<Producer> {
    this.#expire(this.#clock.now());
    return this.#producers.values();
  }

  #weightOf(svc: string): number {
    return this.#policy.weights[svc] ?? 1;
  }

  #renew(p: Producer, now: number): void {
    p.leaseUntilMs = now + this.#policy.leaseMs;
  }

  /** Producers whose lease lapsed lose their grants; what they still have in flight is orphaned. */
  #expire(now: number): void {
    if (now < this.#nextExpiryMs) return;
    let next = Infinity;
    for (const [id, p] of this.#producers) {
      if (p.leaseUntilMs <= now) {
        this.#producers.delete(id);
        p.gone = true;
        this.orphanedInFlight += p.inFlight;
        this.expired++;
        this.#dirty = true;
        this.#sharedAtMs = -Infinity;
      } else if (p.leaseUntilMs < next) next = p.leaseUntilMs;
    }
    // A producer added later has the latest lease of all, so `next` stays the earliest.
    this.#nextExpiryMs = next;
  }

  #reshare(now: number): void {
    if (!this.#dirty) return;
    if (this.#producers.size >= RESHARE_ALWAYS_UNDER && now - this.#sharedAtMs < RESHARE_MS) return;
    this.#dirty = false;
    this.#sharedAtMs = now;
    const pool = Math.max(0, this.#capacity - this.uncreditedInFlight - this.orphanedInFlight);
    fairShares([...this.#producers.values()], pool);
  }
}

/**
 * What a producer holds here: the largest window it may still act on, or what it has in flight
 * if more (a producer that gave a credit back early, at its deadline, while the request still
 * runs here; or one that ignores its grants).
 */
function held(p: Producer): number {
  return Math.max(committed(p), p.inFlight);
}

/** The most this producer may be using: the largest window it may still act on. */
export function committed(p: Producer): number {
  let max = 0;
  for (const [, n] of p.outstanding) if (n > max) max = n;
  return max;
}

/** The producer acts on grant `ack` now: older grants no longer bind it. */
function acknowledge(p: Producer, ack: number): void {
  if (ack < 0 || ack > p.seq) return;
  let k = 0;
  while (k < p.outstanding.length - 1 && (p.outstanding[k] as [number, number])[0] < ack) k++;
  if (k > 0) p.outstanding.splice(0, k);
}

/**
 * Weighted max-min fair shares of `pool` whole credits over producers' demands (water-filling):
 * a producer never gets more than it wants, and what it leaves goes to the others in proportion
 * to their weights. While the pool has a credit for each, every producer gets at least one: a
 * producer with none could not send the request that tells it more is free.
 */
export function fairShares(producers: readonly Producer[], pool: number): void {
  const demand = (p: Producer): number => Math.max(p.want, 1);
  let remaining = pool;
  for (const p of producers) p.target = 0;
  if (remaining >= producers.length) {
    for (const p of producers) p.target = 1;
    remaining -= producers.length;
  }
  let active = producers.filter((p) => demand(p) > p.target);
  while (active.length > 0 && remaining > 0) {
    const weights = active.reduce((s, p) => s + p.weight, 0);
    const satisfied = active.filter((p) => demand(p) - p.target <= (remaining * p.weight) / weights);
    if (satisfied.length === 0) {
      // An equal split satisfies nobody: split what is left by weight in whole credits, the
      // remainders to the largest fractions (ties to the lower id, for determinism).
      const exact = active.map((p) => ({ p, share: (remaining * p.weight) / weights }));
      let left = remaining;
      for (const e of exact) {
        const whole = Math.floor(e.share);
        e.p.target += whole;
        left -= whole;
      }
      const frac = (x: number): number => x - Math.floor(x);
      exact.sort((a, b) => frac(b.share) - frac(a.share) || (a.p.id < b.p.id ? -1 : 1));
      for (const e of exact) {
        if (left <= 0) break;
        e.p.target++;
        left--;
      }
      return;
    }
    for (const p of satisfied) {
      remaining -= demand(p) - p.target;
      p.target = demand(p);
    }
    active = active.filter((p) => !satisfied.includes(p));
  }
}
