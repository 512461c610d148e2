// A DNS server on 127.0.0.1 (UDP, port 0) whose answers a test sets per name and changes between
// queries: A/AAAA records with TTLs, NXDOMAIN, SERVFAIL, REFUSED, an empty answer (NODATA) or no
// reply at all. It counts every query, so a test waits for "the second A query for x" instead of
// sleeping. Point a node:dns Resolver at it with `resolver.setServers([dns.server])`.
//
// The wire format is written here rather than taken from an npm package (dns-packet is the
// well-kept one): the subset a stub resolver needs is one question in, a few A/AAAA records out,
// about a hundred lines, and it keeps package.json free of a dependency only tests would use.
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { isIPv4, isIPv6 } from 'node:net';
import { waiters } from './waiters.ts';

export interface DnsRecord {
  readonly address: string;
  /** Seconds, as on the wire. */
  readonly ttl: number;
}

/** How a query is refused. `nodata`: NOERROR with no records; `drop`: no reply at all. */
export type DnsFault = 'nxdomain' | 'servfail' | 'refused' | 'nodata' | 'drop';

/**
 * The answer for one name: a fault for every type, or per type. A type left out of the map
 * answers NODATA (the name exists, it has no such records), as a real server would.
 */
export type DnsAnswer = DnsFault | { readonly A?: readonly DnsRecord[] | DnsFault; readonly AAAA?: readonly DnsRecord[] | DnsFault };

export type QueryType = 'A' | 'AAAA' | `TYPE${number}`;

export interface DnsQuery {
  /** 1-based, in arrival order. */
  readonly n: number;
  /** Lower-case, without the trailing dot. */
  readonly name: string;
  readonly type: QueryType;
  /** What was sent back: a record count, a fault, or `malformed` for a query that did not parse. */
  readonly reply: number | DnsFault | 'malformed';
}

export interface ScriptedDnsServer {
  readonly port: number;
  /** "127.0.0.1:<port>", as Resolver.setServers wants it. */
  readonly server: string;
  readonly queries: readonly DnsQuery[];
  /** Sets the answer for a name (case-insensitive); names never set answer NXDOMAIN. */
  set(name: string, answer: DnsAnswer): void;
  /** Queries seen so far, for one name and optionally one type. */
  count(name?: string, type?: QueryType): number;
  /** Resolves once `check` holds; re-checked on every query. */
  waitUntil(check: () => boolean, what: string, timeoutMs?: number): Promise<void>;
  /** Resolves once at least `n` queries for `name` (and `type`, if given) have arrived. */
  waitForQueries(n: number, name: string, type?: QueryType, timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

const TYPE_A = 1;
const TYPE_AAAA = 28;
const CLASS_IN = 1;
const RCODE = { noerror: 0, servfail: 2, nxdomain: 3, refused: 5 } as const;
/** Classic UDP limit; answers in tests are far smaller, and a bigger one is a broken test. */
const MAX_UDP = 512;

export async function startDnsServer(zone: Record<string, DnsAnswer> = {}): Promise<ScriptedDnsServer> {
  const answers = new Map<string, DnsAnswer>();
  for (const [name, answer] of Object.entries(zone)) answers.set(normalize(name), answer);
  const queries: DnsQuery[] = [];
  const wait = waiters('dns server', () => `${queries.length} queries`);
  const socket: Socket = createSocket('udp4');

  socket.on('message', (msg: Buffer, from: RemoteInfo) => {
    const q = parseQuery(msg);
    const n = queries.length + 1;
    if (!q) {
      queries.push({ n, name: '', type: 'TYPE0', reply: 'malformed' });
    } else {
      const answer = answers.get(q.name) ?? 'nxdomain';
      const perType = typeof answer === 'string' ? answer : (q.type === TYPE_A ? answer.A : q.type === TYPE_AAAA ? answer.AAAA : undefined);
      const records = perType ?? 'nodata';
      const type = typeName(q.type);
      if (records === 'drop') {
        queries.push({ n, name: q.name, type, reply: 'drop' });
      } else {
        const reply = buildReply(msg, q, records);
        queries.push({ n, name: q.name, type, reply: typeof records === 'string' ? records : records.length });
        socket.send(reply, from.port, from.address);
      }
    }
    wait.poke();
  });

  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(0, '127.0.0.1', () => {
      socket.off('error', reject);
      resolve();
    });
  });
  // A late packet after a test failed must not crash the run.
  socket.on('error', () => {});
  const port = socket.address().port;

  function count(name?: string, type?: QueryType): number {
    const want = name === undefined ? undefined : normalize(name);
    return queries.filter((q) => (want === undefined || q.name === want) && (type === undefined || q.type === type)).length;
  }

  const waitUntil = wait.waitUntil;


  return {
    port,
    server: `127.0.0.1:${port}`,
    queries,
    set(name, answer) {
      answers.set(normalize(name), answer);
    },
    count,
    waitUntil,
    waitForQueries(n, name, type, timeoutMs) {
      return waitUntil(() => count(name, type) >= n, `${n} ${type ? `${type} ` : ''}queries for ${name}`, timeoutMs);
    },
    close() {
      wait.clear();
      return new Promise<void>((resolve) => socket.close(() => resolve()));
    },
  };
}

function normalize(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}

function typeName(type: number): QueryType {
  return type === TYPE_A ? 'A' : type === TYPE_AAAA ? 'AAAA' : `TYPE${type}`;
}

interface Query {
  readonly name: string;
  readonly type: number;
  /** Offset just past the question (name, type, class): the question is echoed byte for byte. */
  readonly questionEnd: number;
}

/** Header and first question of a standard query; undefined when it is not one. */
function parseQuery(msg: Buffer): Query | undefined {
  if (msg.length < 12) return undefined;
  const flags = msg.readUInt16BE(2);
  if (flags & 0x8000 || msg.readUInt16BE(4) !== 1) return undefined; // a response, or not one question
  const labels: string[] = [];
  let at = 12;
  for (;;) {
    const len = msg[at];
    if (len === undefined || len > 63) return undefined; // truncated, or a pointer (never in a query)
    at++;
    if (len === 0) break;
    if (at + len > msg.length) return undefined;
    labels.push(msg.toString('latin1', at, at + len));
    at += len;
  }
  if (at + 4 > msg.length) return undefined;
  return { name: normalize(labels.join('.')), type: msg.readUInt16BE(at), questionEnd: at + 4 };
}

/** Header + the question as received (c-ares checks it matches, case included) + answers. */
function buildReply(msg: Buffer, q: Query, records: readonly DnsRecord[] | Exclude<DnsFault, 'drop'>): Buffer {
  const rcode = typeof records === 'string' ? (records === 'nodata' ? RCODE.noerror : RCODE[records]) : RCODE.noerror;
  const rrs = typeof records === 'string' ? [] : records.map((r) => answerRecord(q.type, r));
  const question = msg.subarray(12, q.questionEnd);
  const header = Buffer.alloc(12);
  header.writeUInt16BE(msg.readUInt16BE(0), 0); // id
  // QR, the query's opcode and RD, AA, RA.
  const queryFlags = msg.readUInt16BE(2);
  header.writeUInt16BE(0x8000 | (queryFlags & 0x7900) | 0x0400 | 0x0080 | rcode, 2);
  header.writeUInt16BE(1, 4);
  header.writeUInt16BE(rrs.length, 6);
  const reply = Buffer.concat([header, question, ...rrs]);
  if (reply.length > MAX_UDP) throw new Error(`dns server: answer for ${q.name} is ${reply.length} bytes, over ${MAX_UDP}; use fewer records`);
  return reply;
}

function answerRecord(type: number, r: DnsRecord): Buffer {
  const v4 = isIPv4(r.address);
  if (!v4 && !isIPv6(r.address)) throw new Error(`dns server: ${JSON.stringify(r.address)} is not an IP address`);
  if ((type === TYPE_A) !== v4) throw new Error(`dns server: ${r.address} listed as ${typeName(type)} record`);
  const data = v4 ? Buffer.from(r.address.split('.').map(Number)) : ipv6Bytes(r.address);
  const rr = Buffer.alloc(12 + data.length);
  rr.writeUInt16BE(0xc00c, 0); // name: pointer to the question's name
  rr.writeUInt16BE(type, 2);
  rr.writeUInt16BE(CLASS_IN, 4);
  rr.writeUInt32BE(r.ttl, 6);
  rr.writeUInt16BE(data.length, 10);
  data.copy(rr, 12);
  return rr;
}

function ipv6Bytes(address: string): Buffer {
  const [head = '', tail] = address.split('::');
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const groups = [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}
