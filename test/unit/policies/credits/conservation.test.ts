// Credits under any interleaving: producers (CreditBalance) and a consumer (CreditLedger) talk
// through a network that delays and reorders messages; a seeded PRNG picks each step (send,
// arrive, complete, answer, fetch, a producer-side timeout, a producer going silent, time
// passing). After every step the invariants are checked, so a failure names the step and seed.
import { describe, expect, it } from 'vitest';
import { CreditBalance } from '../../../../src/policies/credits/balance.ts';
import { CreditLedger, committed, fairShares, type Producer } from '../../../../src/policies/credits/ledger.ts';
import { formatClaim, formatGrant, parseClaim, parseGrant, type Grant } from '../../../../src/policies/credits/protocol.ts';
import { FakeClock } from '../../../support/fake-clock.ts';
import { prng } from '../../../support/prng.ts';

const LEASE_MS = 1000;

interface SimProducer {
  readonly id: string;
  readonly balance: CreditBalance;
  alive: boolean;
  /** Credits spent and not yet given back, counted by the model itself. */
  spent: number;
  /** Requests this producer has out, by request id. */
  readonly outstanding: Set<number>;
}

type Message =
  | { kind: 'request'; to: 'consumer'; from: SimProducer; req: number; claim: string }
  | { kind: 'fetch'; to: 'consumer'; from: SimProducer; claim: string }
  | { kind: 'answer'; to: SimProducer; req: number | undefined; grant: string };

function simulate(seed: number, steps: number, capacity: number, opts: { producerTimeouts: boolean }) {
  const random = prng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)] as T;
  const clock = new FakeClock(0);
  const ledger = new CreditLedger({ leaseMs: LEASE_MS, weights: {}, maxProducers: 100 }, clock, 'e1');
  ledger.setCapacity(capacity);
  const producers: SimProducer[] = Array.from({ length: 3 }, (_, k) => ({
    id: `p${k}`,
    balance: new CreditBalance(),
    alive: true,
    spent: 0,
    outstanding: new Set(),
  }));
  const network: Message[] = [];
  /** Requests at the consumer's app: request id -> ledger producer entry. */
  const atApp = new Map<number, { p: Producer; from: SimProducer }>();
  /** Requests a producer gave up on (credit returned early) but the app may still run. */
  const abandoned = new Set<number>();
  let nextReq = 0;
  let maxAtApp = 0;

  const claimOf = (s: SimProducer): string => {
    const { epoch, ack } = s.balance.ack();
    return formatClaim({ id: s.id, svc: 'svc', epoch, ack, want: 10 });
  };
  const deliverGrant = (s: SimProducer, header: string): void => {
    s.balance.onGrant(parseGrant(header) as Grant, clock.now());
  };

  const check = (step: number): void => {
    const where = `seed ${seed} step ${step}`;
    for (const s of producers) {
      const b = s.balance;
      expect(b.inFlight, `${where}: ${s.id} in flight`).toBe(s.spent);
      const now = clock.now();
      const available = b.available(now);
      if (b.state === 'granted') expect(available, `${where}: ${s.id} granted = in flight + available`).toBe(b.n - b.inFlight);
      else expect(available, `${where}: ${s.id} without a grant has none`).toBe(0);
    }
    // The consumer never commits more than it has, beyond requests a producer gave up on that
    // the app still runs (they hold capacity nobody granted; the ledger counts them as held).
    let givenUp = 0;
    for (const req of atApp.keys()) if (abandoned.has(req)) givenUp++;
    expect(ledger.committedTotal(), `${where}: committed`).toBeLessThanOrEqual(capacity + givenUp);
    maxAtApp = Math.max(maxAtApp, atApp.size);
    // Without early give-ups, producers honouring grants never put more than capacity at the app.
    if (!opts.producerTimeouts) expect(atApp.size, `${where}: at the app`).toBeLessThanOrEqual(capacity);
  };

  for (let step = 0; step < steps; step++) {
    const roll = random();
    const live = producers.filter((s) => s.alive);
    if (roll < 0.3 && live.length > 0) {
      // A producer sends if it has a credit; with no grant at all it fetches.
      const s = pick(live);
      if (s.balance.needsFetch(clock.now())) {
        s.balance.fetching(clock.now());
        network.push({ kind: 'fetch', to: 'consumer', from: s, claim: claimOf(s) });
      } else {
        // A burst: everything the balance allows.
        while (s.balance.available(clock.now()) >= 1) {
          s.balance.spend();
          s.spent++;
          const req = nextReq++;
          s.outstanding.add(req);
          network.push({ kind: 'request', to: 'consumer', from: s, req, claim: claimOf(s) });
        }
      }
    } else if (roll < 0.6 && network.length > 0) {
      // Deliver any message: the network reorders.
      const m = network.splice(Math.floor(random() * network.length), 1)[0] as Message;
      if (m.to === 'consumer') {
        const p = ledger.arrive(parseClaim(m.claim)!, m.kind === 'request');
        if (m.kind === 'fetch') network.push({ kind: 'answer', to: m.from, req: undefined, grant: formatGrant(ledger.grant(p!)) });
        else atApp.set(m.req, { p: p!, from: m.from });
      } else if (m.to.alive) {
        m.to.balance.fetched();
        deliverGrant(m.to, m.grant);
        if (m.req !== undefined && m.to.outstanding.delete(m.req) && !abandoned.has(m.req)) {
          m.to.balance.giveBack();
          m.to.spent--;
        }
      }
    } else if (roll < 0.8 && atApp.size > 0) {
      // The app finishes a request: the answer carries the producer's grant.
      const [req, { p, from }] = pick([...atApp.entries()]);
      atApp.delete(req);
      ledger.depart(p);
      network.push({ kind: 'answer', to: from, req, grant: formatGrant(ledger.grant(p)) });
    } else if (roll < 0.85 && opts.producerTimeouts) {
      // A producer gives up on a request (its deadline): the credit comes back at once, locally.
      const s = pick(producers);
      const req = [...s.outstanding].find((r) => !abandoned.has(r));
      if (req !== undefined) {
        abandoned.add(req);
        s.balance.giveBack();
        s.spent--;
      }
    } else if (roll < 0.87 && live.length > 1) {
      // A producer goes silent for good (killed, partitioned): its lease must lapse.
      pick(live).alive = false;
    } else {
      clock.advance(Math.floor(random() * 200));
    }
    check(step);
  }
  return { ledger, producers, clock, atApp, maxAtApp };
}

describe('credit conservation under any interleaving', () => {
  for (const seed of [1, 2, 3, 4, 5, 6, 7, 8]) {
    it(`seed ${seed}: granted = in flight + available; committed ≤ capacity; the app gets ≤ capacity`, () => {
      const { maxAtApp } = simulate(seed, 3000, 6, { producerTimeouts: false });
      // The run did reach the limit: the bound was tested, not idle.
      expect(maxAtApp).toBe(6);
    });
  }

  for (const seed of [11, 12, 13, 14]) {
    it(`seed ${seed}: with producers giving up early, the ledger still never over-commits`, () => {
      simulate(seed, 3000, 6, { producerTimeouts: true });
    });
  }

  it('lapsed leases give every credit back once the silent producers are gone', () => {
    const { ledger, clock, producers } = simulate(21, 2000, 6, { producerTimeouts: false });
    for (const s of producers) s.alive = false;
    clock.advance(LEASE_MS + 1);
    expect(ledger.committedTotal()).toBe(0);
    expect(ledger.size).toBe(0);
    // A newcomer can be granted the whole capacity (less what lapsed producers still run).
    const p = ledger.arrive({ id: 'new', svc: 'svc', epoch: '', ack: -1, want: 100 }, false)!;
    expect(ledger.grant(p).n).toBe(6 - ledger.orphanedInFlight);
  });
});

describe('fair shares', () => {
  const producer = (id: string, want: number, weight = 1): Producer => ({
    id,
    svc: id,
    weight,
    want,
    inFlight: 0,
    n: 0,
    seq: -1,
    outstanding: [],
    leaseUntilMs: 0,
    target: 0,
    gone: false,
  });

  it.each([
    { pool: 20, wants: [100, 100], weights: [1, 1], shares: [10, 10] },
    { pool: 20, wants: [5, 100], weights: [1, 1], shares: [5, 15] },
    { pool: 20, wants: [100, 100], weights: [3, 1], shares: [15, 5] },
    { pool: 10, wants: [100, 100, 100], weights: [1, 1, 1], shares: [4, 3, 3] },
    { pool: 3, wants: [100, 100, 100], weights: [10, 1, 1], shares: [1, 1, 1] },
    { pool: 2, wants: [100, 100, 100], weights: [1, 1, 1], shares: [1, 1, 0] },
    { pool: 20, wants: [0, 3], weights: [1, 1], shares: [1, 3] },
  ])('pool $pool, wants $wants, weights $weights → $shares', ({ pool, wants, weights, shares }) => {
    const ps = wants.map((w, k) => producer(`p${k}`, w, weights[k]));
    fairShares(ps, pool);
    expect(ps.map((p) => p.target)).toEqual(shares);
    expect(ps.reduce((s, p) => s + p.target, 0)).toBeLessThanOrEqual(pool);
  });

  it('two producers wanting everything converge to half each, through acknowledged shrinks', () => {
    const clock = new FakeClock(0);
    const ledger = new CreditLedger({ leaseMs: LEASE_MS, weights: {}, maxProducers: 10 }, clock, 'e');
    ledger.setCapacity(20);
    const a = new CreditBalance();
    const b = new CreditBalance();
    const exchange = (id: string, bal: CreditBalance): void => {
      const { epoch, ack } = bal.ack();
      const p = ledger.arrive({ id, svc: id, epoch, ack, want: 50 }, false)!;
      bal.onGrant(ledger.grant(p), clock.now());
    };
    // a arrives alone and takes everything; b arrives later.
    exchange('a', a);
    expect(a.n).toBe(20);
    exchange('b', b);
    // b gets only what a does not hold: a has not acknowledged any shrink yet.
    expect(b.n).toBe(0);
    for (let round = 0; round < 4; round++) {
      clock.advance(10);
      exchange('a', a);
      exchange('b', b);
      expect(ledger.committedTotal()).toBeLessThanOrEqual(20);
    }
    expect([a.n, b.n]).toEqual([10, 10]);
    const committedByA = [...ledger.producers()].find((p) => p.id === 'a')!;
    expect(committed(committedByA)).toBe(10);
  });

  it('a shrink is not given to anyone else until the producer acknowledges it', () => {
    const clock = new FakeClock(0);
    const ledger = new CreditLedger({ leaseMs: LEASE_MS, weights: {}, maxProducers: 10 }, clock, 'e');
    ledger.setCapacity(20);
    const claim = (id: string, ack: number) => ({ id, svc: id, epoch: ack < 0 ? '' : 'e', ack, want: 50 });
    const a = ledger.arrive(claim('a', -1), false)!;
    expect(ledger.grant(a)).toMatchObject({ n: 20, seq: 0 });
    const b = ledger.arrive(claim('b', -1), false)!;
    expect(ledger.grant(b).n).toBe(0);
    // a's next request still acts on seq 0 (20): its answer shrinks it to 10 as seq 1.
    ledger.arrive(claim('a', 0), true);
    expect(ledger.grant(a)).toMatchObject({ n: 10, seq: 1 });
    // Another request of a's, sent before seq 1 reached it, still says ack=0: a may use 20.
    ledger.arrive(claim('a', 0), true);
    expect(ledger.grant(ledger.arrive(claim('b', 0), false)!).n).toBe(0);
    // a acknowledges the shrink: now, and only now, b gets the difference.
    ledger.arrive(claim('a', 1), false);
    expect(ledger.grant(ledger.arrive(claim('b', 0), false)!).n).toBe(10);
    expect(ledger.committedTotal()).toBe(20);
  });

  it('weights set the proportions', () => {
    const clock = new FakeClock(0);
    const ledger = new CreditLedger({ leaseMs: LEASE_MS, weights: { big: 3 }, maxProducers: 10 }, clock, 'e');
    ledger.setCapacity(40);
    const bals = { big: new CreditBalance(), small: new CreditBalance() };
    for (let round = 0; round < 5; round++) {
      for (const [id, bal] of Object.entries(bals)) {
        const { epoch, ack } = bal.ack();
        const p = ledger.arrive({ id, svc: id, epoch, ack, want: 100 }, false)!;
        bal.onGrant(ledger.grant(p), clock.now());
      }
      clock.advance(10);
    }
    expect([bals.big.n, bals.small.n]).toEqual([30, 10]);
  });
});

describe('the producer side', () => {
  it('a stale grant (older seq, same epoch) is ignored; a new epoch replaces at once', () => {
    const b = new CreditBalance();
    expect(b.onGrant({ n: 5, seq: 3, leaseMs: 1000, epoch: 'x' }, 0)).toBe(true);
    expect(b.onGrant({ n: 9, seq: 2, leaseMs: 1000, epoch: 'x' }, 0)).toBe(false);
    expect(b.n).toBe(5);
    expect(b.onGrant({ n: 2, seq: 0, leaseMs: 1000, epoch: 'restarted' }, 0)).toBe(true);
    expect(b.n).toBe(2);
  });

  it('a grant lapses on the producer before the consumer would let it go', () => {
    const b = new CreditBalance();
    b.onGrant({ n: 5, seq: 0, leaseMs: 1000, epoch: 'x' }, 0);
    expect(b.available(899)).toBe(5);
    expect(b.available(900)).toBe(0);
    expect(b.needsFetch(900)).toBe(true);
  });

  it('an uncredited endpoint is unmetered until it is asked again', () => {
    const b = new CreditBalance();
    b.uncredited(500);
    expect(b.available(499)).toBe(Infinity);
    expect(b.needsFetch(500)).toBe(true);
  });
});

describe('protocol headers', () => {
  it('round-trips a claim and a grant', () => {
    const claim = { id: 'orders-1', svc: 'orders', epoch: 'abc', ack: 12, want: 30 };
    expect(parseClaim(formatClaim(claim))).toEqual(claim);
    const grant = { n: 10, seq: 13, leaseMs: 10000, epoch: 'abc' };
    expect(parseGrant(formatGrant(grant))).toEqual(grant);
  });

  it.each([
    ['no id', 'svc="a", want=1'],
    ['bad id', 'id="a b", want=1'],
    ['negative want', 'id="a", want=-3'],
    ['huge want', 'id="a", want=99999999'],
    ['not a dictionary', 'garbage'],
  ])('a malformed claim (%s) reads as none: the request is uncredited', (_why, value) => {
    expect(parseClaim(value)).toBeUndefined();
  });

  it.each([
    ['no epoch', 'n=1, seq=0, lease=100'],
    ['negative n', 'n=-1, seq=0, lease=100, epoch="e"'],
    ['zero lease', 'n=1, seq=0, lease=0, epoch="e"'],
  ])('a malformed grant (%s) is ignored', (_why, value) => {
    expect(parseGrant(value)).toBeUndefined();
  });
});
