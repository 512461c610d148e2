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
    this.#comply();
  }

  /**
   * The grant this producer acts on, for its claims: the newest one it is within. After a shrink
   * it still has more in flight than the new window until enough tries end; acknowledging the
   * shrink before that would let the consumer give the difference away while it is still used.
   */
  #complied: { epoch: string; ack: number } = { epoch: '', ack: -1 };

  #comply(): void {
    if (this.state === 'granted' && this.inFlight <= this.n) this.#complied = { epoch: this.epoch, ack: this.seq };
  }

  /** A grant arrived (on an answer or from a fetch). Stale grants (older seq, same epoch) are ignored. */
  onGrant(g: Grant, now: number): boolean {
    if (g.epoch === this.epoch && g.seq < this.seq) return false;
    this.epoch = g.epoch;
    this.seq = g.seq;
    this.n = g.n;
    this.state = 'granted';
    this.#validUntilMs = now + g.leaseMs * LEASE_SAFETY;
    this.#comply();
    return true;
  }

  /** The grant is no good any more: a fetch is needed, and any grant that comes is taken. */
  lapse(): void {
    this.state = 'unknown';
    this.seq = -1;
    this.epoch = '';
    this.#complied = { epoch: '', ack: -1 };
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
    return this.#complied;
  }

  #lapse(now: number): void {
    if (this.state === 'granted' && now >= this.#validUntilMs) this.lapse();
    else if (this.state === 'uncredited' && now >= this.#recheckAtMs) this.state = 'unknown';
  }
}
