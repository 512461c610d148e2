// The DNS watcher's state machine with a fake clock, fake timers and a scripted resolver: when it
// asks again, what it keeps when DNS fails, when it lets addresses go, and what it reports.
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { DNS_DEFAULTS, type DnsPolicy } from '../../../src/policy/dns.ts';
import type { Endpoint } from '../../../src/policy/types.ts';
import { addressKey, chooseSubset, sortEndpoints } from '../../../src/proxy/dns/addresses.ts';
import { backoffMs } from '../../../src/proxy/dns/name-state.ts';
import type { DnsFunctions, TtlAddress } from '../../../src/proxy/dns/resolve.ts';
import { DnsWatcher, declareDnsMetrics, type DnsWatcherOptions, type Timers } from '../../../src/proxy/dns/watcher.ts';
import { FakeClock } from '../../support/fake-clock.ts';
import { metricSum, parsePrometheus } from '../../support/metrics.ts';

/** Timers on a FakeClock: advance() runs what falls due, in order, letting answers settle. */
class FakeTimers implements Timers {
  readonly clock: FakeClock;
  #pending: { atMs: number; seq: number; fn: () => void }[] = [];
  #seq = 0;

  constructor(clock: FakeClock) {
    this.clock = clock;
  }

  after(ms: number, fn: () => void): () => void {
    const t = { atMs: this.clock.now() + ms, seq: this.#seq++, fn };
    this.#pending.push(t);
    return () => {
      this.#pending = this.#pending.filter((x) => x !== t);
    };
  }

  /** Delay until the next timer fires; undefined when none is armed. */
  get nextInMs(): number | undefined {
    const next = this.#next();
    return next && next.atMs - this.clock.now();
  }

  async advance(ms: number): Promise<void> {
    const until = this.clock.now() + ms;
    for (let t = this.#next(); t && t.atMs <= until; t = this.#next()) {
      this.clock.set(Math.max(this.clock.now(), t.atMs));
      this.#pending = this.#pending.filter((x) => x !== t);
      t.fn();
      await settle();
    }
    this.clock.set(until);
  }

  #next() {
    return [...this.#pending].sort((a, b) => a.atMs - b.atMs || a.seq - b.seq)[0];
  }
}

/** Lets the scripted resolver's promises and the watcher's round run to the end. */
const settle = (): Promise<void> => new Promise((r) => setImmediate(r));

type Script = readonly TtlAddress[] | string | 'hang';

/** A resolver whose answers the test sets per name and type: records, an error code, or a hang. */
class FakeDns implements DnsFunctions {
  readonly calls: string[] = [];
  readonly #a = new Map<string, Script>();
  readonly #aaaa = new Map<string, Script>();
  readonly #lookup = new Map<string, readonly string[] | string>();
  readonly #hung: (() => void)[] = [];

  set(name: string, a: Script, aaaa: Script = 'ENODATA'): this {
    this.#a.set(name, a);
    this.#aaaa.set(name, aaaa);
    return this;
  }

  /** What the system resolver says (addresses or an error code); unset names are ENOTFOUND. */
  setLookup(name: string, answer: readonly string[] | string): this {
    this.#lookup.set(name, answer);
    return this;
  }

  count(prefix: string): number {
    return this.calls.filter((c) => c.startsWith(prefix)).length;
  }

  /** Settles every hung query (with ECANCELLED) now. */
  release(): void {
    for (const r of this.#hung.splice(0)) r();
  }

  resolve4(name: string) {
    this.calls.push(`A ${name}`);
    return this.#answer(this.#a.get(name) ?? 'ENOTFOUND');
  }

  resolve6(name: string) {
    this.calls.push(`AAAA ${name}`);
    return this.#answer(this.#aaaa.get(name) ?? 'ENOTFOUND');
  }

  async lookup(name: string, family: 0 | 4 | 6) {
    this.calls.push(`lookup ${name} ${family}`);
    const answer = this.#lookup.get(name) ?? 'ENOTFOUND';
    if (typeof answer === 'string') throw Object.assign(new Error(answer), { code: answer });
    return answer
      .map((address) => ({ address, family: address.includes(':') ? 6 : 4 }))
      .filter((a) => family === 0 || a.family === family);
  }

  #answer(script: Script): Promise<readonly TtlAddress[]> {
    if (script === 'hang') {
      return new Promise((_, reject) => this.#hung.push(() => reject(Object.assign(new Error('cancelled'), { code: 'ECANCELLED' }))));
    }
    if (typeof script === 'string') return Promise.reject(Object.assign(new Error(script), { code: script }));
    return Promise.resolve(script);
  }
}

const rec = (ttl: number, ...addresses: string[]): TtlAddress[] => addresses.map((address) => ({ address, ttl }));
const ep = (host: string, port = 80): Endpoint => ({ host, port });
const hosts = (es: readonly Endpoint[]): string[] => es.map((e) => (e.port === 80 ? e.host : `${e.host}:${e.port}`));

const watchers: DnsWatcher[] = [];
afterEach(() => {
  for (const w of watchers.splice(0)) w.close();
});

function setup(endpoints: readonly Endpoint[], dns: FakeDns, over: Partial<DnsPolicy> = {}, extra: Partial<DnsWatcherOptions> = {}) {
  const clock = new FakeClock(0);
  const timers = new FakeTimers(clock);
  const changes: string[][] = [];
  const w = new DnsWatcher({
    upstream: 'svc',
    endpoints,
    policy: { ...DNS_DEFAULTS, ...over },
    onChange: (es) => changes.push(hosts(es)),
    dns,
    clock,
    timers,
    ...extra,
  });
  watchers.push(w);
  return { w, clock, timers, changes };
}

describe('DnsWatcher: first resolution', () => {
  it('passes IP literals through untouched, sorted, without asking DNS or arming a timer', async () => {
    const dns = new FakeDns();
    const { w, timers, changes } = setup([ep('10.0.0.9'), ep('::1', 8080), ep('10.0.0.10'), ep('10.0.0.9')], dns);
    expect(hosts(await w.ready)).toEqual(['10.0.0.9', '10.0.0.10', '::1:8080']);
    expect(dns.calls).toEqual([]);
    expect(timers.nextInMs).toBeUndefined();
    expect(changes).toEqual([]);
  });

  it('resolves A and AAAA, merges with literals, one entry per address, no onChange for the first set', async () => {
    const dns = new FakeDns().set('db', rec(5, '10.0.0.2', '10.0.0.1'), rec(5, '::2'));
    const { w, changes } = setup([ep('db'), ep('10.0.0.1'), ep('127.0.0.1')], dns);
    expect(hosts(await w.ready)).toEqual(['10.0.0.1', '10.0.0.2', '127.0.0.1', '::2']);
    expect(w.endpoints).toEqual(await w.ready);
    expect(dns.calls.sort()).toEqual(['A db', 'AAAA db']);
    expect(changes).toEqual([]);
  });

  it('resolves a name once for every port it is configured with', async () => {
    const dns = new FakeDns().set('db', rec(5, '10.0.0.1'));
    const { w } = setup([ep('db', 9000), ep('DB', 8080), ep('db.', 8080)], dns);
    expect(hosts(await w.ready)).toEqual(['10.0.0.1:8080', '10.0.0.1:9000']);
    expect(dns.count('A ')).toBe(1);
  });

  it('is ready even when the first resolution fails, with what it knows', async () => {
    const dns = new FakeDns().set('db', 'ESERVFAIL', 'ESERVFAIL').setLookup('db', 'EAI_AGAIN');
    const { w, timers, changes } = setup([ep('db'), ep('10.0.0.5')], dns);
    expect(hosts(await w.ready)).toEqual(['10.0.0.5']);
    expect(timers.nextInMs).toBe(1000);
    dns.set('db', rec(5, '10.0.0.1'));
    await timers.advance(1000);
    expect(changes).toEqual([['10.0.0.1', '10.0.0.5']]);
  });

  it('resolves only the family asked for', async () => {
    const dns = new FakeDns().set('db', rec(5, '10.0.0.1'), rec(5, '::1'));
    const v6 = setup([ep('db')], dns, { family: 'ipv6' });
    expect(hosts(await v6.w.ready)).toEqual(['::1']);
    expect(dns.calls).toEqual(['AAAA db']);
    dns.calls.length = 0;
    const v4 = setup([ep('db'), ep('::5')], dns, { family: 'ipv4' });
    expect(hosts(await v4.w.ready)).toEqual(['10.0.0.1', '::5']); // a literal passes whatever the family
    expect(dns.calls).toEqual(['A db']);
  });
});

describe('DnsWatcher: refresh on TTL', () => {
  it('asks again when the shortest TTL expires and reports the new set', async () => {
    const dns = new FakeDns().set('db', rec(7, '10.0.0.1'), rec(3, '::1'));
    const { w, timers, changes } = setup([ep('db')], dns);
    await w.ready;
    expect(timers.nextInMs).toBe(3000);
    dns.set('db', rec(7, '10.0.0.1', '10.0.0.2'), rec(3, '::1'));
    await timers.advance(2999);
    expect(dns.count('A ')).toBe(1);
    await timers.advance(1);
    expect(dns.count('A ')).toBe(2);
    expect(changes).toEqual([['10.0.0.1', '10.0.0.2', '::1']]);
  });

  it('reports nothing when the answer is the same set in another order', async () => {
    const dns = new FakeDns().set('db', rec(2, '10.0.0.1', '10.0.0.2'));
    const { w, timers, changes } = setup([ep('db')], dns);
    await w.ready;
    dns.set('db', rec(2, '10.0.0.2', '10.0.0.1'));
    await timers.advance(10_000);
    expect(dns.count('A ')).toBe(6);
    expect(changes).toEqual([]);
  });

  it.each([
    ['a TTL of 0 waits minTtlMs', 0, 1000],
    ['a TTL inside the range is kept', 12, 12000],
    ['a TTL of a day waits maxTtlMs', 86400, 30000],
  ])('%s', async (_name, ttl, expectedMs) => {
    const dns = new FakeDns().set('db', rec(ttl, '10.0.0.1'));
    const { w, timers } = setup([ep('db')], dns);
    await w.ready;
    expect(timers.nextInMs).toBe(expectedMs);
  });

  it('keeps one schedule per name under one timer', async () => {
    const dns = new FakeDns().set('fast', rec(1, '10.0.0.1')).set('slow', rec(10, '10.0.0.2'));
    const { w, timers } = setup([ep('fast'), ep('slow')], dns);
    await w.ready;
    await timers.advance(10_000);
    expect(dns.count('A fast')).toBe(11);
    expect(dns.count('A slow')).toBe(2);
  });

  it('never has two queries for a name in flight: a slow answer holds the next refresh', async () => {
    const dns = new FakeDns().set('db', rec(1, '10.0.0.1'));
    const { w, timers } = setup([ep('db')], dns);
    await w.ready;
    dns.set('db', 'hang', 'hang');
    await timers.advance(60_000);
    expect(dns.count('A ')).toBe(2);
    expect(timers.nextInMs).toBeUndefined();
    dns.set('db', rec(1, '10.0.0.1'));
    dns.release(); // the hung query fails with ECANCELLED: a failure, retried after 1 s
    await settle();
    expect(timers.nextInMs).toBe(1000);
  });
});

describe('DnsWatcher: failures', () => {
  it('keeps the last good set on failure and backs off, doubling up to maxTtlMs', async () => {
    const dns = new FakeDns().set('db', rec(5, '10.0.0.1'));
    const { w, timers, changes } = setup([ep('db')], dns, { failureRetryMs: 1000, maxTtlMs: 6000 });
    await w.ready;
    dns.set('db', 'ETIMEOUT', 'ETIMEOUT');
    const waits: (number | undefined)[] = [];
    await timers.advance(5000);
    for (let i = 0; i < 5; i++) {
      waits.push(timers.nextInMs);
      await timers.advance(timers.nextInMs!);
    }
    expect(waits).toEqual([1000, 2000, 4000, 6000, 6000]);
    expect(hosts(w.endpoints)).toEqual(['10.0.0.1']);
    expect(changes).toEqual([]);
    expect(dns.count('lookup')).toBe(0); // a timeout does not fall back to getaddrinfo

    dns.set('db', rec(5, '10.0.0.2'));
    await timers.advance(timers.nextInMs!);
    expect(changes).toEqual([['10.0.0.2']]);
    expect(timers.nextInMs).toBe(5000); // success resets the back-off
  });

  it('a failed family keeps its last addresses while the other is refreshed', async () => {
    const dns = new FakeDns().set('db', rec(20, '10.0.0.1'), rec(20, '::1'));
    const { w, timers, changes } = setup([ep('db')], dns);
    await w.ready;
    dns.set('db', rec(20, '10.0.0.2'), 'ESERVFAIL');
    await timers.advance(20_000);
    expect(changes).toEqual([['10.0.0.2', '::1']]);
    expect(timers.nextInMs).toBe(1000); // back soon for the family that failed
    dns.set('db', rec(20, '10.0.0.2'), rec(20, '::2'));
    await timers.advance(1000);
    expect(changes.at(-1)).toEqual(['10.0.0.2', '::2']);
    expect(timers.nextInMs).toBe(20_000);
  });

  it('a DNS failure with a not-found from the system resolver is still a failure', async () => {
    const dns = new FakeDns().set('db', rec(5, '10.0.0.1'));
    const { w, timers, changes } = setup([ep('db')], dns);
    await w.ready;
    dns.set('db', 'ESERVFAIL', 'ENODATA');
    await timers.advance(5000);
    await timers.advance(1000);
    await timers.advance(2000);
    expect(hosts(w.endpoints)).toEqual(['10.0.0.1']);
    expect(changes).toEqual([]);
    expect(dns.count('lookup')).toBe(3);
  });
});

describe('DnsWatcher: names with no address', () => {
  it('lets the addresses go only when a second query confirms the name is gone', async () => {
    const dns = new FakeDns().set('db', rec(5, '10.0.0.1'));
    const { w, timers, changes } = setup([ep('db'), ep('10.9.9.9')], dns);
    await w.ready;
    dns.set('db', 'ENOTFOUND', 'ENOTFOUND');
    await timers.advance(5000);
    expect(changes).toEqual([]); // one NXDOMAIN could be a hiccup
    expect(timers.nextInMs).toBe(1000);
    await timers.advance(1000);
    expect(changes).toEqual([['10.9.9.9']]);
    expect(timers.nextInMs).toBe(5000); // refreshMs: an empty answer has no TTL
    dns.set('db', rec(5, '10.0.0.3'));
    await timers.advance(5000);
    expect(changes.at(-1)).toEqual(['10.0.0.3', '10.9.9.9']);
  });

  it('an answer between two empty ones starts the confirmation over', async () => {
    const dns = new FakeDns().set('db', rec(1, '10.0.0.1'));
    const { w, timers, changes } = setup([ep('db')], dns);
    await w.ready;
    dns.set('db', 'ENODATA', 'ENODATA');
    await timers.advance(1000);
    dns.set('db', rec(1, '10.0.0.1'));
    await timers.advance(1000);
    dns.set('db', 'ENODATA', 'ENODATA');
    await timers.advance(1000);
    expect(changes).toEqual([]);
    await timers.advance(1000);
    expect(changes).toEqual([[]]);
  });

  it('a failure between two empty answers does not reset the confirmation', async () => {
    const dns = new FakeDns().set('db', rec(1, '10.0.0.1'));
    const { w, timers, changes } = setup([ep('db')], dns);
    await w.ready;
    dns.set('db', 'ENOTFOUND', 'ENOTFOUND');
    await timers.advance(1000);
    dns.set('db', 'ESERVFAIL', 'ESERVFAIL');
    await timers.advance(1000);
    dns.set('db', 'ENOTFOUND', 'ENOTFOUND');
    await timers.advance(1000);
    expect(changes).toEqual([[]]);
  });

  it('a name that never had an address is empty at once', async () => {
    const dns = new FakeDns();
    const { w, timers } = setup([ep('nowhere')], dns, { refreshMs: 200_000 });
    expect(await w.ready).toEqual([]);
    expect(timers.nextInMs).toBe(30_000); // refreshMs clamped to maxTtlMs
  });
});

describe('DnsWatcher: system resolver fallback', () => {
  it('asks getaddrinfo when DNS has no address, and re-resolves on refreshMs', async () => {
    const dns = new FakeDns().setLookup('localhost', ['127.0.0.1', '::1']);
    const { w, timers, changes } = setup([ep('localhost', 8080)], dns, { refreshMs: 4000 });
    expect(hosts(await w.ready)).toEqual(['127.0.0.1:8080', '::1:8080']);
    expect(dns.calls.slice(-1)).toEqual(['lookup localhost 0']);
    expect(timers.nextInMs).toBe(4000);
    dns.setLookup('localhost', ['127.0.0.1']);
    await timers.advance(4000);
    expect(changes).toEqual([['127.0.0.1:8080']]);
  });

  it('asks getaddrinfo for the configured family only', async () => {
    const dns = new FakeDns().set('app', 'EREFUSED', 'EREFUSED').setLookup('app', ['10.1.1.1', '::1']);
    const { w } = setup([ep('app')], dns, { family: 'ipv4' });
    expect(hosts(await w.ready)).toEqual(['10.1.1.1']);
    expect(dns.calls).toEqual(['A app', 'lookup app 4']);
  });

  it('does not ask getaddrinfo when DNS answered', async () => {
    const dns = new FakeDns().set('db', rec(5, '10.0.0.1')).setLookup('db', ['10.0.0.99']);
    const { w } = setup([ep('db')], dns);
    expect(hosts(await w.ready)).toEqual(['10.0.0.1']);
    expect(dns.count('lookup')).toBe(0);
  });
});

describe('DnsWatcher: bounds', () => {
  const many = Array.from({ length: 20 }, (_, i) => `10.0.0.${i + 1}`);

  it('keeps at most maxEndpoints addresses per name, the same ones whatever the answer order', async () => {
    const dns = new FakeDns().set('db', rec(5, ...many)).set('other', rec(5, '10.1.0.1', '10.1.0.2'));
    const { w, timers, changes } = setup([ep('db'), ep('other')], dns, { maxEndpoints: 5 });
    const first = await w.ready;
    expect(first.filter((e) => e.host.startsWith('10.0.'))).toHaveLength(5);
    expect(first.filter((e) => e.host.startsWith('10.1.'))).toHaveLength(2);
    dns.set('db', rec(5, ...[...many].reverse()));
    await timers.advance(5000);
    expect(changes).toEqual([]);
    // An address that was not chosen leaving changes nothing either.
    const unchosen = many.filter((a) => !first.some((e) => e.host === a));
    dns.set('db', rec(5, ...many.filter((a) => a !== unchosen[0])));
    await timers.advance(5000);
    expect(changes).toEqual([]);
  });

  it('chooses by seed: a different seed, a different subset of the same size', () => {
    const a = chooseSubset(many, 5, 'pod-a');
    expect(a).toHaveLength(5);
    expect(chooseSubset([...many].reverse(), 5, 'pod-a').sort()).toEqual([...a].sort());
    const seeds = ['pod-b', 'pod-c', 'pod-d', 'pod-e'].map((s) => chooseSubset(many, 5, s).sort().join());
    expect(seeds.some((s) => s !== [...a].sort().join())).toBe(true);
    expect(chooseSubset(['10.0.0.1', '10.0.0.1'], 5, '')).toEqual(['10.0.0.1']);
  });

  it('sorts numerically, IPv4 first, and treats two spellings of an address as one', () => {
    expect(hosts(sortEndpoints([ep('10.0.0.10'), ep('::1'), ep('10.0.0.9'), ep('0:0::1'), ep('10.0.0.9', 81), ep('2001:db8::1')]))).toEqual([
      '10.0.0.9',
      '10.0.0.9:81',
      '10.0.0.10',
      '::1',
      '2001:db8::1',
    ]);
    expect(addressKey('::ffff:10.0.0.1')).toBe(addressKey('::ffff:a00:1'));
  });

  it('backs off without overflowing', () => {
    const p = { ...DNS_DEFAULTS, failureRetryMs: 1000, maxTtlMs: 30000 };
    expect([1, 2, 3, 5, 6, 1000].map((n) => backoffMs(n, p))).toEqual([1000, 2000, 4000, 16000, 30000, 30000]);
    expect(backoffMs(3, { ...p, failureRetryMs: 60000 })).toBe(60000); // a retry longer than maxTtlMs is kept
  });
});

describe('DnsWatcher: lifecycle', () => {
  it('close() stops the timer and ignores answers in flight', async () => {
    const dns = new FakeDns().set('db', rec(1, '10.0.0.1'));
    const { w, timers, changes } = setup([ep('db')], dns);
    await w.ready;
    dns.set('db', 'hang', 'hang');
    await timers.advance(1000);
    w.close();
    dns.set('db', rec(1, '10.0.0.2'));
    dns.release();
    await settle();
    await timers.advance(60_000);
    expect(changes).toEqual([]);
    expect(timers.nextInMs).toBeUndefined();
    expect(dns.count('A ')).toBe(2);
  });

  it('ready settles when closed before the first answer', async () => {
    const dns = new FakeDns().set('db', 'hang', 'hang');
    const { w } = setup([ep('db'), ep('10.0.0.1')], dns);
    w.close();
    expect(hosts(await w.ready)).toEqual(['10.0.0.1']);
  });

  it('an onChange that throws does not stop the refreshes', async () => {
    const dns = new FakeDns().set('db', rec(1, '10.0.0.1'));
    const errors: unknown[] = [];
    const log = { info() {}, warn() {}, error: (o: unknown) => void errors.push(o) };
    const { w, timers } = setup([ep('db')], dns, {}, {
      onChange: () => {
        throw new Error('boom');
      },
      log,
    });
    await w.ready;
    dns.set('db', rec(1, '10.0.0.2'));
    await timers.advance(1000);
    dns.set('db', rec(1, '10.0.0.3'));
    await timers.advance(1000);
    expect(hosts(w.endpoints)).toEqual(['10.0.0.3']);
    expect(errors).toHaveLength(2);
  });

  it('rejects a policy that would spin or never refresh', () => {
    const dns = new FakeDns();
    expect(() => setup([], dns, { minTtlMs: 0 })).toThrow('dns minTtlMs must be an integer >= 1, got 0');
    expect(() => setup([], dns, { refreshMs: Number.NaN })).toThrow('dns refreshMs must be an integer >= 1, got NaN');
    expect(() => setup([], dns, { minTtlMs: 5000, maxTtlMs: 1000 })).toThrow('dns maxTtlMs must be >= minTtlMs (5000), got 1000');
  });

  it('counts outcomes per upstream', async () => {
    const registry = new Registry();
    const metrics = declareDnsMetrics(registry);
    expect(declareDnsMetrics(registry).resolutions).toBe(metrics.resolutions);
    const dns = new FakeDns().set('db', rec(1, '10.0.0.1')).setLookup('local', ['127.0.0.1']);
    const { w, timers } = setup([ep('db'), ep('local')], dns, {}, { metrics });
    await w.ready;
    dns.set('db', 'ESERVFAIL', 'ESERVFAIL');
    await timers.advance(1000);
    const samples = parsePrometheus(await registry.metrics());
    const count = (outcome: string) => metricSum(samples, 'sluice_dns_resolutions_total', { upstream: 'svc', outcome });
    expect([count('resolved'), count('system'), count('failed')]).toEqual([1, 1, 1]);
  });
});
