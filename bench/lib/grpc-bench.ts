// The gRPC service the benchmarks call (bench/grpc-peer.ts serves it, bench/grpc-load.ts calls
// it): a generic grpc-js service with raw Buffer messages, so no .proto and no protobuf cost
// sits between the proxy and what is measured.
//
//   /bench.Bench/Unary   any request -> one reply of UNARY_REPLY_BYTES
//   /bench.Bench/Stream  StreamRequest -> `messages` replies of `bytes` each, then OK
import type { ServiceDefinition } from '@grpc/grpc-js';

const raw = (b: Buffer): Buffer => b;

export const BENCH_SERVICE = {
  unary: {
    path: '/bench.Bench/Unary',
    requestStream: false,
    responseStream: false,
    requestSerialize: raw,
    requestDeserialize: raw,
    responseSerialize: raw,
    responseDeserialize: raw,
  },
  stream: {
    path: '/bench.Bench/Stream',
    requestStream: false,
    responseStream: true,
    requestSerialize: raw,
    requestDeserialize: raw,
    responseSerialize: raw,
    responseDeserialize: raw,
  },
} as const satisfies ServiceDefinition;

/** Same size as the HTTP upstreams' body, so unary and h2 rows move comparable bytes. */
export const UNARY_REPLY_BYTES = 100;

/** The peer refuses stream requests above these (every buffer is bounded). */
export const MAX_STREAM_MESSAGES = 1_000_000;
export const MAX_MESSAGE_BYTES = 4 * 1024 * 1024;

/** Server-streaming request: how many messages of how many bytes. */
export interface StreamRequest {
  messages: number;
  bytes: number;
}

export function encodeStreamRequest(r: StreamRequest): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32BE(r.messages, 0);
  b.writeUInt32BE(r.bytes, 4);
  return b;
}

/** Undefined when the request is malformed or out of bounds. */
export function decodeStreamRequest(b: Buffer): StreamRequest | undefined {
  if (b.length !== 8) return undefined;
  const r = { messages: b.readUInt32BE(0), bytes: b.readUInt32BE(4) };
  if (r.messages < 1 || r.messages > MAX_STREAM_MESSAGES || r.bytes < 1 || r.bytes > MAX_MESSAGE_BYTES) return undefined;
  return r;
}
