// The DNS watcher with node's real resolver, pointed at a scripted DNS server on 127.0.0.1: the
// wire, the TTLs and the error codes are real; only the answers are ours. Waits are on events
// (onChange, query counts) with bounds, never on sleeps. The system resolver (getaddrinfo) is
// replaced by a stub except where a test is about it, so no query leaves this machine.
import { describe, expect, it } from 'vitest';
import { DNS_DEFAULTS, type DnsPolicy } from '../../src/policy/dns.ts';
import type { Endpoint } from '../../src/policy/types.ts';
import { nodeDns, type DnsFunctions } from '../../src/proxy/dns/resolve.ts';
import { DnsWatcher } from '../../src/proxy/dns/watcher.ts';
import { startDnsServer, type ScriptedDnsServer } from '../support/dns-server.ts';
import { closeAfterEach } from '../support/lifecycle.ts';

const track = closeAfterEach();

interface Watched {
  readonly w: DnsWatcher;
  readonly changes: (readonly Endpoint[])[];
  readonly lookups: string[];
  /** Resolves with the n-th change (1-based) once onChange has reported it. */
  change(n: number, timeoutMs?: number): Promise<string[]>;
}

const hostPorts = (es: readonly Endpoint[]): string[] => es.map((e) => `${e.host}:${e.port}`);

/**
 * A watcher on `server`, queries bounded to 200 ms. `systemLookup` keeps node's getaddrinfo;
 * otherwise a stub that knows no name stands in for it and records what it was asked.
 */
async function watch(
  server: ScriptedDnsServer,
  endpoints: readonly Endpoint[],
  policy: Partial<DnsPolicy> = {},
  systemLookup = false,
): Promise<Watched> {
  const lookups: string[] = [];
  const real = nodeDns({ servers: [server.server], timeoutMs: 200, tries: 1 });
  const dns: DnsFunctions = {
    ...real,
    lookup: systemLookup
      ? real.lookup
      : async (name) => {
          lookups.push(name);
          throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${name}`), { code: 'ENOTFOUND' });
        },
  };
  const changes: (readonly Endpoint[])[] = [];
  const waiters = new Set<() => void>();
  const w = new DnsWatcher({
    upstream: 'svc',
    endpoints,
    policy: { ...DNS_DEFAULTS, ...policy },
    dns,
    onChange: (es) => {
      changes.push(es);
      for (const f of [...waiters]) f();
    },
  });
  track({
    close: async () => {
      w.close();
      real.cancel?.();
    },
  });
  const change = (n: number, timeoutMs = 5000): Promise<string[]> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        const got = changes[n - 1];
        if (!got) return;
        waiters.delete(check);
        clearTimeout(t);
        resolve(hostPorts(got));
      };
      const t = setTimeout(() => {
        waiters.delete(check);
        reject(new Error(`no change #${n} within ${timeoutMs} ms (saw ${changes.length}, ${server.queries.length} queries)`));
      }, timeoutMs);
      waiters.add(check);
      check();
    });
  await w.ready;
  return { w, changes, lookups, change };
}

describe('scripted DNS server', () => {
  it('answers each fault the way node reports a real one', async () => {
    const server = track(
      await startDnsServer({
        'v4.test': { A: [{ address: '127.0.0.1', ttl: 7 }] },
        'split.test': { A: 'servfail', AAAA: [{ address: '::1', ttl: 3 }] },
        'refused.test': 'refused',
        'nodata.test': 'nodata',
        'drop.test': 'drop',
      }),
    );
    const dns = nodeDns({ servers: [server.server], timeoutMs: 100, tries: 1 });
    const code = (p: Promise<unknown>) => p.then(
      (v) => v,
      (e: { code?: string }) => e.code,
    );
    expect(await code(dns.resolve4('V4.test'))).toEqual([{ address: '127.0.0.1', ttl: 7 }]);
    expect(await code(dns.resolve6('v4.test'))).toBe('ENODATA');
    expect(await code(dns.resolve4('split.test'))).toBe('ESERVFAIL');
    expect(await code(dns.resolve6('split.test'))).toEqual([{ address: '::1', ttl: 3 }]);
    expect(await code(dns.resolve4('refused.test'))).toBe('EREFUSED');
    expect(await code(dns.resolve4('nodata.test'))).toBe('ENODATA');
    expect(await code(dns.resolve4('unknown.test'))).toBe('ENOTFOUND');
    expect(await code(dns.resolve4('drop.test'))).toBe('ETIMEOUT');
    expect(server.count()).toBe(8);
    expect(server.count('v4.test')).toBe(2);
    expect(server.queries.at(-1)).toEqual({ n: 8, name: 'drop.test', type: 'A', reply: 'drop' });
  });
});

describe('DnsWatcher with a real resolver', () => {
  it('re-resolves a name after its TTL and reports the new set', async () => {
    const server = track(await startDnsServer({ 'svc.test': { A: [{ address: '127.0.0.2', ttl: 1 }] } }));
    const { w, change, lookups } = await watch(server, [{ host: 'svc.test', port: 8080 }]);
    expect(hostPorts(w.endpoints)).toEqual(['127.0.0.2:8080']);
    expect(server.count('svc.test', 'A')).toBe(1);
    expect(server.count('svc.test', 'AAAA')).toBe(1); // answered NODATA: a v4-only name is fine

    server.set('svc.test', { A: [{ address: '127.0.0.4', ttl: 1 }, { address: '127.0.0.3', ttl: 1 }] });
    expect(await change(1)).toEqual(['127.0.0.3:8080', '127.0.0.4:8080']);
    expect(server.count('svc.test', 'A')).toBe(2);
    expect(lookups).toEqual([]);
  });

  it('a name with an A and an AAAA record gives two endpoints on the same port', async () => {
    const server = track(
      await startDnsServer({ 'both.test': { A: [{ address: '127.0.0.1', ttl: 1 }], AAAA: [{ address: '::1', ttl: 1 }] } }),
    );
    const { w } = await watch(server, [{ host: 'both.test', port: 9000 }]);
    expect(hostPorts(w.endpoints)).toEqual(['127.0.0.1:9000', '::1:9000']);
  });

  it('keeps the last good set through SERVFAIL and picks up the answer once DNS is back', async () => {
    const server = track(await startDnsServer({ 'svc.test': { A: [{ address: '127.0.0.2', ttl: 1 }] } }));
    const { w, changes, change } = await watch(server, [{ host: 'svc.test', port: 80 }], { failureRetryMs: 100 });
    server.set('svc.test', 'servfail');
    // The refresh at 1 s fails, then retries after 100 and 200 ms: three failed queries.
    await server.waitForQueries(4, 'svc.test', 'A');
    expect(hostPorts(w.endpoints)).toEqual(['127.0.0.2:80']);
    expect(changes).toEqual([]);

    server.set('svc.test', { A: [{ address: '127.0.0.5', ttl: 1 }] });
    expect(await change(1)).toEqual(['127.0.0.5:80']);
  });

  it('keeps the last good set when the server stops answering, without falling back to getaddrinfo', async () => {
    const server = track(await startDnsServer({ 'svc.test': { A: [{ address: '127.0.0.2', ttl: 1 }] } }));
    const { w, changes, lookups } = await watch(server, [{ host: 'svc.test', port: 80 }], { failureRetryMs: 100 });
    server.set('svc.test', 'drop');
    // A fourth query means the second and third timed out and were retried.
    await server.waitForQueries(4, 'svc.test', 'A');
    expect(hostPorts(w.endpoints)).toEqual(['127.0.0.2:80']);
    expect(changes).toEqual([]);
    expect(lookups).toEqual([]);
  });

  it('lets a name go once a second NXDOMAIN confirms it, keeping configured addresses', async () => {
    const server = track(await startDnsServer({ 'gone.test': { A: [{ address: '127.0.0.2', ttl: 1 }] } }));
    const { w, change, lookups } = await watch(
      server,
      [
        { host: 'gone.test', port: 80 },
        { host: '127.0.0.9', port: 80 },
      ],
      { failureRetryMs: 100 },
    );
    expect(hostPorts(w.endpoints)).toEqual(['127.0.0.2:80', '127.0.0.9:80']);
    server.set('gone.test', 'nxdomain');
    expect(await change(1)).toEqual(['127.0.0.9:80']);
    expect(server.count('gone.test', 'A')).toBe(3); // the good answer, the NXDOMAIN, its confirmation
    expect(lookups).toEqual(['gone.test', 'gone.test']); // each NXDOMAIN was checked with the system
  });

  it('resolves a name DNS does not know through the system resolver (/etc/hosts)', async () => {
    const server = track(await startDnsServer());
    const { w } = await watch(server, [{ host: 'localhost', port: 7000 }], { family: 'ipv4' }, true);
    expect(hostPorts(w.endpoints)).toEqual(['127.0.0.1:7000']);
    expect(server.count('localhost', 'A')).toBe(1); // asked DNS first: NXDOMAIN
  });
});
