// One resolution of one name: the DNS resolver first, for its TTLs, then the system resolver
// when DNS gave no address. The I/O edge of the DNS watcher; the functions are injected so the
// watcher's state machine is tested without a network.
//
// Why both. `Resolver.resolve4/6` (c-ares, `ares_query`) reports TTLs but sends the name to the
// servers exactly as written: it reads neither /etc/hosts nor the `search` domains of
// /etc/resolv.conf. `dns.lookup` (getaddrinfo) honours both, which a pod needs for `localhost`,
// hostAliases and short service names (`db`, `db.team`), but reports no TTL. Envoy's STRICT_DNS
// and LOGICAL_DNS use c-ares `ares_getaddrinfo`, which does both and keeps TTLs; its getaddrinfo
// resolver gives up on TTLs and re-resolves on a fixed 60 s. Linkerd resolves with the system
// configuration (search domains included) and honours the answer's `valid_until`. Node offers
// neither in one call, so: ask DNS, and when it has no address for the name, ask the system, and
// re-resolve that answer on the policy's `refreshMs` instead of a TTL. Names that DNS answers
// (FQDNs, headless services written in full) keep their TTLs; the cost for the rest is one
// NXDOMAIN per family per refresh. A DNS timeout is the one case that does not fall back:
// getaddrinfo would wait on the same unreachable servers, on a libuv threadpool thread (there
// are four, shared with file and crypto work), with no way to cancel it.
import { promises as dns } from 'node:dns';

/** Which address families to resolve; addresses written as IP literals pass whatever this says. */
export type DnsFamily = 'any' | 'ipv4' | 'ipv6';

export interface TtlAddress {
  readonly address: string;
  /** Seconds. */
  readonly ttl: number;
}

export interface ResolvedAddress {
  readonly address: string;
  readonly family: 4 | 6;
}

/** The resolver functions the watcher uses; each rejects with a node:dns error (`code`). */
export interface DnsFunctions {
  /** A records with their TTLs. NXDOMAIN rejects with ENOTFOUND, no records with ENODATA. */
  resolve4(name: string): Promise<readonly TtlAddress[]>;
  resolve6(name: string): Promise<readonly TtlAddress[]>;
  /** The system resolver (getaddrinfo): /etc/hosts and search domains, no TTL. 0 = any family. */
  lookup(name: string, family: 0 | 4 | 6): Promise<readonly { readonly address: string; readonly family: number }[]>;
  /** Gives up queries in flight (they reject); called by the watcher that created these functions. */
  cancel?(): void;
}

export interface NodeDnsOptions {
  /** DNS servers (`ip` or `ip:port`); default: those of /etc/resolv.conf. */
  readonly servers?: readonly string[];
  /** First query timeout (ms), doubled on each try by c-ares; default 1000. */
  readonly timeoutMs?: number;
  /** Tries per server; default 2. */
  readonly tries?: number;
}

/**
 * node:dns with bounded queries: c-ares defaults (4 tries, seconds each) would hold a refresh for
 * long enough that the next TTL is already due. One Resolver per caller, so cancel() is private.
 */
export function nodeDns(options: NodeDnsOptions = {}): DnsFunctions {
  const resolver = new dns.Resolver({ timeout: options.timeoutMs ?? 1000, tries: options.tries ?? 2 });
  if (options.servers) resolver.setServers([...options.servers]);
  return {
    resolve4: (name) => resolver.resolve4(name, { ttl: true }),
    resolve6: (name) => resolver.resolve6(name, { ttl: true }),
    lookup: (name, family) => dns.lookup(name, { all: true, family }),
    cancel: () => resolver.cancel(),
  };
}

/** What one resolution of a name found. Error codes are node:dns codes (ESERVFAIL, ETIMEOUT...). */
export type NameAnswer =
  /** DNS answered every family asked, with records for at least one. */
  | { readonly kind: 'resolved'; readonly addresses: readonly ResolvedAddress[]; readonly ttlMs: number }
  /** DNS answered one family and failed the other; that family's last addresses should stay. */
  | {
      readonly kind: 'partial';
      readonly addresses: readonly ResolvedAddress[];
      readonly ttlMs: number;
      readonly failedFamily: 4 | 6;
      readonly error: string;
    }
  /** DNS had no address, the system resolver had some. No TTL. */
  | { readonly kind: 'system'; readonly addresses: readonly ResolvedAddress[] }
  /** Both said the name has no address (NXDOMAIN or no records): an answer, not a failure. */
  | { readonly kind: 'empty' }
  | { readonly kind: 'failed'; readonly error: string };

/** The name does not exist, or has no records of the type: DNS answered, with nothing. */
const NO_ADDRESS = new Set(['ENOTFOUND', 'ENODATA']);

type FamilyResult =
  | { readonly ok: true; readonly family: 4 | 6; readonly records: readonly TtlAddress[] }
  | { readonly ok: false; readonly family: 4 | 6; readonly code: string };

export async function resolveName(name: string, family: DnsFamily, fns: DnsFunctions): Promise<NameAnswer> {
  const families: (4 | 6)[] = family === 'ipv4' ? [4] : family === 'ipv6' ? [6] : [4, 6];
  const results = await Promise.all(families.map((f) => query(name, f, fns)));

  const answered = results.filter((r) => r.ok && r.records.length > 0) as Extract<FamilyResult, { ok: true }>[];
  const failed = results.filter((r) => !r.ok && !NO_ADDRESS.has(r.code)) as Extract<FamilyResult, { ok: false }>[];
  if (answered.length > 0) {
    const addresses = answered.flatMap((r) => r.records.map((a) => ({ address: a.address, family: r.family })));
    // The shortest TTL of all records: the first to expire decides when to ask again.
    const ttlMs = Math.min(...answered.flatMap((r) => r.records.map((a) => a.ttl * 1000)));
    const bad = failed[0];
    return bad ? { kind: 'partial', addresses, ttlMs, failedFamily: bad.family, error: bad.code } : { kind: 'resolved', addresses, ttlMs };
  }

  const dnsError = failed[0]?.code;
  if (failed.some((r) => r.code === 'ETIMEOUT' || r.code === 'ECANCELLED')) return { kind: 'failed', error: dnsError! };
  try {
    const found = await fns.lookup(name, family === 'ipv4' ? 4 : family === 'ipv6' ? 6 : 0);
    const addresses = found
      .filter((a) => (a.family === 4 || a.family === 6) && families.includes(a.family))
      .map((a) => ({ address: a.address, family: a.family as 4 | 6 }));
    if (addresses.length > 0) return { kind: 'system', addresses };
  } catch (err) {
    const code = codeOf(err);
    if (!NO_ADDRESS.has(code)) return { kind: 'failed', error: code };
  }
  // Only a name that both DNS and the system say is absent is empty; a DNS failure stays one.
  return dnsError === undefined ? { kind: 'empty' } : { kind: 'failed', error: dnsError };
}

async function query(name: string, family: 4 | 6, fns: DnsFunctions): Promise<FamilyResult> {
  try {
    const records = await (family === 4 ? fns.resolve4(name) : fns.resolve6(name));
    return { ok: true, family, records };
  } catch (err) {
    return { ok: false, family, code: codeOf(err) };
  }
}

function codeOf(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : 'EUNKNOWN';
}
