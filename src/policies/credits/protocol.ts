// The credit protocol between a producer's outbound sidecar and a consumer's inbound sidecar: two
// headers and one path, written as RFC 8941 dictionaries so they read the same in any tool.
//
//   request   sluice-credit: id="orders-7f9c", svc="orders", epoch="3kq1v0", ack=12, want=30
//   response  sluice-credit-grant: n=10, seq=13, lease=10000, epoch="3kq1v0"
//   fetch     GET /.sluice/v1/credits   (the inbound port; answered by the sidecar, never the app)
//
// `n` is a window: requests the producer may have in flight to this consumer. `seq` orders a
// consumer's grants to one producer (a stale, reordered grant is ignored); `epoch` names the
// consumer's ledger, so a restarted consumer's grants replace the old ones at once. `ack` is the
// grant the producer acts on now: only once a shrink is acknowledged does the consumer give the
// difference to someone else. `want` is the producer's demand (in flight + waiting + refused).
// `lease` (ms): the grant lapses unless renewed; any request or answer renews it, so a producer
// that vanishes never keeps capacity.

export const CREDIT_HEADER = 'sluice-credit';
export const GRANT_HEADER = 'sluice-credit-grant';
export const CREDITS_PATH = '/.sluice/v1/credits';

/** Ids, service names and epochs: a token of at most 128 characters. */
const TOKEN = /^[A-Za-z0-9._:-]{1,128}$/;
/** Counts in the protocol are bounded: a window over a million in flight is nonsense. */
const MAX_COUNT = 1_000_000;

export interface CreditClaim {
  readonly id: string;
  readonly svc: string;
  /** The epoch and seq of the grant the producer acts on; '' / -1 before its first. */
  readonly epoch: string;
  readonly ack: number;
  readonly want: number;
}

export interface Grant {
  readonly n: number;
  readonly seq: number;
  readonly leaseMs: number;
  readonly epoch: string;
}

export function formatClaim(c: CreditClaim): string {
  return `id="${c.id}", svc="${c.svc}", epoch="${c.epoch}", ack=${c.ack}, want=${c.want}`;
}

export function formatGrant(g: Grant): string {
  return `n=${g.n}, seq=${g.seq}, lease=${g.leaseMs}, epoch="${g.epoch}"`;
}

/** key=value members of a dictionary; string values unquoted. Unknown members are ignored. */
function members(value: string): Map<string, string> | undefined {
  const out = new Map<string, string>();
  for (const part of value.split(',')) {
    const eq = part.indexOf('=');
    if (eq < 0) return undefined;
    const key = part.slice(0, eq).trim();
    let v = part.slice(eq + 1).trim();
    if (v.length >= 2 && v.startsWith('"') && v.endsWith('"')) v = v.slice(1, -1);
    out.set(key, v);
  }
  return out;
}

function count(v: string | undefined, min: number): number | undefined {
  if (v === undefined || !/^-?\d{1,7}$/.test(v)) return undefined;
  const n = Number(v);
  return n >= min && n <= MAX_COUNT ? n : undefined;
}

function seqOf(v: string | undefined): number | undefined {
  if (v === undefined || !/^-?\d{1,15}$/.test(v)) return undefined;
  const n = Number(v);
  return n >= -1 && Number.isSafeInteger(n) ? n : undefined;
}

/** A request's claim, or undefined when the header is malformed (then the request is uncredited). */
export function parseClaim(value: string): CreditClaim | undefined {
  const m = members(value);
  if (m === undefined) return undefined;
  const id = m.get('id');
  const svc = m.get('svc') ?? '';
  const epoch = m.get('epoch') ?? '';
  const ack = seqOf(m.get('ack') ?? '-1');
  const want = count(m.get('want') ?? '1', 0);
  if (id === undefined || !TOKEN.test(id) || (svc !== '' && !TOKEN.test(svc))) return undefined;
  if ((epoch !== '' && !TOKEN.test(epoch)) || ack === undefined || want === undefined) return undefined;
  return { id, svc, epoch, ack, want };
}

export function parseGrant(value: string): Grant | undefined {
  const m = members(value);
  if (m === undefined) return undefined;
  const n = count(m.get('n'), 0);
  const seq = seqOf(m.get('seq'));
  const leaseMs = count(m.get('lease'), 1);
  const epoch = m.get('epoch');
  if (n === undefined || seq === undefined || seq < 0 || leaseMs === undefined) return undefined;
  if (epoch === undefined || !TOKEN.test(epoch)) return undefined;
  return { n, seq, leaseMs, epoch };
}

/**
 * Removes `name` from a flat header list (all occurrences) and returns the first value. Header
 * names in the list are as received, so the match ignores case.
 */
export function takeHeader(headers: string[], name: string): string | undefined {
  let found: string | undefined;
  for (let i = 0; i < headers.length; ) {
    const h = headers[i] as string;
    if (h.length === name.length && h.toLowerCase() === name) {
      found ??= headers[i + 1];
      headers.splice(i, 2);
    } else i += 2;
  }
  return found;
}
