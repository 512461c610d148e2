// A producer's credit balance with one consumer endpoint (pure: a clock, no timers, no I/O). The
// consumer granted a window `n` of requests in flight; spending a credit is sending a try, and the
// try's end (its response headers, or its failure) gives it back. Conservation is by construction:
// credits in flight are counted here, and available = n − inFlight whenever the grant is valid.
import type { Grant } from './protocol.ts';

/**
 * unknown: no grant yet, or it lapsed (a fetch is needed). fetching: a fetch is out.
 * granted: a valid window. uncredited: the endpoint does not grant credits (no sidecar there, or
 * it could not be asked): tries go out unmetered until `recheckAtMs`.
 */
export type BalanceState = 'unknown' | 'fetching' | 'granted' | 'uncredited';

/** The producer stops using a grant this much before the consumer would let it lapse. */
const LEASE_SAFETY = 0.9;

export class CreditBalance {
  state: BalanceState = 'unknown';
  n = 0;
  seq = -1;
  epoch = '';
  /** Tries in flight to this endpoint that spent a credit. */
  inFlight = 0;
  /** A fetch is out while a grant is held (asking for more): the grant stays usable meanwhile. */
  refreshing = false;
  /** When a refresh last went out (clock ms); first fetches do not count. */
  lastFetchMs = -Infinity;
  /** Tries sent while uncredited count too: they hold capacity a grant arriving meanwhile covers. */
  #validUntilMs = 0;
  #recheckAtMs = 0;

  /** Credits that can be spent now; Infinity while uncredited. Negative after a shrink (debt). */
  available(now: number): number {
    this.#lapse(now);
    if (this.state === 'granted') return this.n - this.inFlight;
    if (this.state === 'uncredited') return Infinity;
    return 0;
  }

  /** A fetch should start now (no grant, none out, and no recheck pending). */
  needsFetch(now: number): boolean {
    this.#lapse(now);
    return this.state === 'unknown';
  }

  spend(): void {
    this.inFlight++;
  }

  giveBack(): void {
    if (this.inFlight > 0) this.inFlight--;
  }

  /** A grant arrived (on an answer or from a fetch). Stale grants (older seq, same epoch) are ignored. */
  onGrant(g: Grant, now: number): boolean {
    if (g.epoch === this.epoch && g.seq < this.seq) return false;
    this.epoch = g.epoch;
    this.seq = g.seq;
    this.n = g.n;
    this.state = 'granted';
    this.#validUntilMs = now + g.leaseMs * LEASE_SAFETY;
    return true;
  }

  /** A fetch goes out now: the first (no grant yet), or a refresh of a grant held. */
  fetching(now: number): void {
    if (this.state === 'granted') {
      this.refreshing = true;
      this.lastFetchMs = now;
    } else this.state = 'fetching';
  }

  /** A fetch came back (with whatever result the caller applies). */
  fetched(): void {
    this.refreshing = false;
  }

  /** The endpoint does not grant credits, or could not be asked: unmetered until `untilMs`. */
  uncredited(untilMs: number): void {
    this.state = 'uncredited';
    this.#recheckAtMs = untilMs;
  }

  /** The claim a try to this endpoint carries: the grant it acts on. */
  ack(): { epoch: string; ack: number } {
    return this.state === 'granted' ? { epoch: this.epoch, ack: this.seq } : { epoch: '', ack: -1 };
  }

  /** Carry what an earlier balance for the same endpoint knew (a policy or DNS change). */
  adopt(previous: CreditBalance): void {
    this.state = previous.state === 'fetching' ? 'unknown' : previous.state;
    this.n = previous.n;
    this.seq = previous.seq;
    this.epoch = previous.epoch;
    this.inFlight = previous.inFlight;
    this.#validUntilMs = previous.#validUntilMs;
    this.#recheckAtMs = previous.#recheckAtMs;
  }

  #lapse(now: number): void {
    if (this.state === 'granted' && now >= this.#validUntilMs) this.state = 'unknown';
    else if (this.state === 'uncredited' && now >= this.#recheckAtMs) this.state = 'unknown';
  }
}
