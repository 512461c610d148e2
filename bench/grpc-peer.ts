// gRPC benchmark peer: grpc-js server, plaintext (h2c), serving bench/lib/grpc-bench.ts:
// Unary answers every call with 100 bytes; Stream writes the requested number of messages,
// respecting the stream's backpressure.
// Usage: node bench/grpc-peer.ts [port]   (port 0 or omitted = any free port)
// Prints `listening <port>` on stdout once bound; exits on SIGTERM/SIGINT.
import * as grpc from '@grpc/grpc-js';
import { BENCH_SERVICE, UNARY_REPLY_BYTES, decodeStreamRequest } from './lib/grpc-bench.ts';

const REPLY = Buffer.alloc(UNARY_REPLY_BYTES, 'x');
/** One payload per message size, reused: the peer should cost as little as it can. */
const payloads = new Map<number, Buffer>();

const server = new grpc.Server({
  // The client side decides concurrency; the peer must not cap it below what it sends.
  'grpc.max_concurrent_streams': 1000,
  'grpc.max_send_message_length': -1,
});

server.addService(BENCH_SERVICE, {
  unary: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
    callback(null, REPLY);
  },
  stream: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
    const req = decodeStreamRequest(call.request);
    if (req === undefined) {
      call.emit('error', { code: grpc.status.INVALID_ARGUMENT, details: 'want uint32 messages, uint32 bytes, within bounds' });
      return;
    }
    let payload = payloads.get(req.bytes);
    if (payload === undefined) {
      payload = Buffer.alloc(req.bytes, 'y');
      payloads.set(req.bytes, payload);
    }
    const body = payload;
    let left = req.messages;
    let cancelled = false;
    call.on('cancelled', () => {
      cancelled = true;
    });
    const pump = (): void => {
      while (left > 0 && !cancelled) {
        left--;
        if (!call.write(body)) {
          call.once('drain', pump);
          return;
        }
      }
      if (!cancelled) call.end();
    };
    pump();
  },
});

const port = Number(process.argv[2] ?? 0);
server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (err, bound) => {
  if (err !== null) {
    process.stderr.write(`grpc-peer: ${err.message}\n`);
    process.exit(1);
  }
  process.stdout.write(`listening ${bound}\n`);
});

const stop = (): void => {
  server.forceShutdown();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
