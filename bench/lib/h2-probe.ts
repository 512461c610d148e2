// One HTTP/2 request and one gRPC call, bounded in time, for readiness checks and for the
// pre-flight of each HTTP/2 row: a target that does not speak h2c fails its row at once with
// what came back, instead of the load generators timing out on it.
import * as grpc from '@grpc/grpc-js';
import http2 from 'node:http2';
import { BENCH_SERVICE } from './grpc-bench.ts';

/** GET `path` over h2c with prior knowledge. Resolves with the status, or an error message. */
export function h2Get(port: number, authority: string, timeoutMs: number, path = '/'): Promise<{ status: number } | { error: string }> {
  return new Promise((resolve) => {
    let settled = false;
    const session = http2.connect(`http://127.0.0.1:${port}`);
    const done = (r: { status: number } | { error: string }): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      session.destroy();
      resolve(r);
    };
    const timer = setTimeout(() => done({ error: `no HTTP/2 response within ${timeoutMs} ms` }), timeoutMs);
    session.on('error', (err) => done({ error: `session: ${err.message}` }));
    session.on('close', () => done({ error: 'the connection closed before a response' }));
    const stream = session.request({ ':method': 'GET', ':path': path, ':authority': authority }, { endStream: true });
    let status: number | undefined;
    stream.on('response', (h) => {
      status = Number(h[':status']);
    });
    stream.on('data', () => {});
    stream.on('end', () => done(status === undefined ? { error: 'stream ended without headers' } : { status }));
    stream.on('error', (err) => done({ error: `stream: ${err.message}` }));
  });
}

/** One Unary call. Resolves with the gRPC status code and details. */
export function grpcUnary(port: number, authority: string, timeoutMs: number): Promise<{ code: number; details: string }> {
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), {
    'grpc.default_authority': authority,
    'grpc.use_local_subchannel_pool': 1,
  });
  const m = BENCH_SERVICE.unary;
  return new Promise((resolve) => {
    client.makeUnaryRequest(m.path, m.requestSerialize, m.responseDeserialize, Buffer.alloc(1), { deadline: Date.now() + timeoutMs }, (err) => {
      client.close();
      resolve(err ? { code: err.code, details: err.details } : { code: grpc.status.OK, details: '' });
    });
  });
}

export function grpcStatusName(code: number): string {
  return grpc.status[code] ?? String(code);
}
