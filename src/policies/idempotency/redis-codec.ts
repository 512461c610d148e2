// How a key's state is written in Redis: one string value per key, binary-safe, so a claim, a
// completion and a release are each one atomic command on one key.
//
//   in flight:    'I' JSON{o: owner, f: fingerprint}
//   completed:    'D' u32be(meta length) JSON{f, s: status, h: headers, t: trailers, n: no body} body
//   unreplayable: 'X' JSON{f}
//
// The body goes in raw after the metadata (no base64: a 1 MiB body costs 1 MiB in Redis, not 1.33).
// Key names carry a format version, so a future format never reads this one.
import { createHash } from 'node:crypto';
import type { HeaderMap, StoredResponse, Trailers } from './stored-response.ts';

export type SharedState =
  | { readonly kind: 'in-flight'; readonly fingerprint: string }
  | { readonly kind: 'done'; readonly fingerprint: string; readonly response: StoredResponse }
  | { readonly kind: 'unreplayable'; readonly fingerprint: string };

const IN_FLIGHT = 0x49; // 'I'
const DONE = 0x44; // 'D'
const UNREPLAYABLE = 0x58; // 'X'

/**
 * The Redis key for an Idempotency-Key: hashed, so its length is fixed and any bytes a client
 * sends stay out of key names (and out of KEYS patterns an operator may run).
 */
export function redisKey(prefix: string, key: string): string {
  return `${prefix}:idempotency:v1:${createHash('sha256').update(key).digest('base64url')}`;
}

export function encodeInFlight(owner: string, fingerprint: string): Buffer {
  return tagged(IN_FLIGHT, Buffer.from(JSON.stringify({ o: owner, f: fingerprint })));
}

export function encodeUnreplayable(fingerprint: string): Buffer {
  return tagged(UNREPLAYABLE, Buffer.from(JSON.stringify({ f: fingerprint })));
}

export function encodeDone(fingerprint: string, r: StoredResponse): Buffer {
  const meta = Buffer.from(JSON.stringify({ f: fingerprint, s: r.statusCode, h: r.headers, t: r.trailers, n: r.body === null }));
  const head = Buffer.allocUnsafe(5);
  head[0] = DONE;
  head.writeUInt32BE(meta.length, 1);
  return Buffer.concat([head, meta, r.body ?? Buffer.alloc(0)]);
}

/** The state a value stands for; undefined for a value this version did not write. */
export function decodeShared(value: Buffer): SharedState | undefined {
  try {
    switch (value[0]) {
      case IN_FLIGHT: {
        const m = JSON.parse(value.toString('utf8', 1)) as { f?: unknown };
        return typeof m.f === 'string' ? { kind: 'in-flight', fingerprint: m.f } : undefined;
      }
      case UNREPLAYABLE: {
        const m = JSON.parse(value.toString('utf8', 1)) as { f?: unknown };
        return typeof m.f === 'string' ? { kind: 'unreplayable', fingerprint: m.f } : undefined;
      }
      case DONE: {
        if (value.length < 5) return undefined;
        const metaEnd = 5 + value.readUInt32BE(1);
        if (metaEnd > value.length) return undefined;
        const m = JSON.parse(value.toString('utf8', 5, metaEnd)) as { f?: unknown; s?: unknown; h?: unknown; t?: unknown; n?: unknown };
        if (typeof m.f !== 'string' || typeof m.s !== 'number' || !isFields(m.h) || !(m.t === null || isFields(m.t))) return undefined;
        const response: StoredResponse = {
          statusCode: m.s,
          headers: m.h as HeaderMap,
          trailers: m.t as Trailers | null,
          // A copy: the reply buffer may be a view of a larger one the client reads into.
          body: m.n === true ? null : Buffer.from(value.subarray(metaEnd)),
        };
        return { kind: 'done', fingerprint: m.f, response };
      }
      default:
        return undefined;
    }
  } catch {
    return undefined;
  }
}

function isFields(v: unknown): boolean {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  for (const value of Object.values(v)) {
    if (typeof value === 'string') continue;
    if (!Array.isArray(value) || !value.every((x) => typeof x === 'string')) return false;
  }
  return true;
}

function tagged(tag: number, payload: Buffer): Buffer {
  const out = Buffer.allocUnsafe(1 + payload.length);
  out[0] = tag;
  payload.copy(out, 1);
  return out;
}
