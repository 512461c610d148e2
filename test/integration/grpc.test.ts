// gRPC through a producer sidecar (outbound) and a consumer sidecar (inbound) to a real grpc-js
// server, with a real grpc-js client: every kind of call, retries judged by grpc-status,
// deadlines in gRPC's own header, and local decisions spoken back as gRPC statuses.
import { afterEach, describe, expect, it } from 'vitest';
import { callUnary, grpc, grpcClient, startGrpcServer, type GrpcStep, type TestClient, type TestGrpcServer } from '../support/grpc.ts';
import { closeSession, h2Connect } from '../support/h2.ts';
import { metricSum } from '../support/metrics.ts';
import { startTestSidecar, upstream, type SpecOverrides, type TestSidecar } from '../support/sidecar.ts';

const open: { close(): unknown }[] = [];
afterEach(async () => {
  for (const o of open.splice(0).reverse()) await o.close();
});

interface Path {
  readonly server: TestGrpcServer;
  readonly consumer: TestSidecar;
  readonly producer: TestSidecar;
  readonly client: TestClient;
}

/** client -> producer outbound -> consumer inbound -> grpc server; `upstreamExtra` shapes the producer's upstream. */
async function path(script: readonly GrpcStep[] = [], upstreamExtra: SpecOverrides = {}, producerSpec: SpecOverrides = {}): Promise<Path> {
  const server = await startGrpcServer(script);
  open.push(server);
  const consumer = await startTestSidecar({ inbound: { app: { address: '127.0.0.1', port: server.port } } });
  open.push(consumer);
  const producer = await startTestSidecar({
    ...producerSpec,
    outbound: { upstreams: [upstream('greeter', `127.0.0.1:${consumer.inboundPort}`, upstreamExtra)] },
  });
  open.push(producer);
  const client = grpcClient(producer.outboundPort, 'greeter');
  open.push(client);
  return { server, consumer, producer, client };
}

function collect(stream: grpc.ClientReadableStream<Buffer>): Promise<{ messages: Buffer[]; error: grpc.ServiceError | undefined }> {
  const messages: Buffer[] = [];
  return new Promise((resolve) => {
    stream.on('data', (m: Buffer) => messages.push(m));
    stream.on('error', (error: grpc.ServiceError) => resolve({ messages, error }));
    stream.on('end', () => resolve({ messages, error: undefined }));
  });
}

describe('gRPC through two sidecars', () => {
  it('carries a unary call', async () => {
    const { client, server } = await path();
    const r = await callUnary(client, Buffer.from('hello'));
    expect(r.error).toBeUndefined();
    expect(r.value?.toString()).toBe('echo:hello');
    expect(server.calls).toHaveLength(1);
  });

  it('carries a server stream of 100,000 messages in order', async () => {
    const { client } = await path([{ messages: 100_000, messageBytes: 16 }]);
    const { messages, error } = await collect(client.serverStream(Buffer.from('go')));
    expect(error?.message).toBeUndefined();
    expect(messages).toHaveLength(100_000);
    for (let i = 0; i < messages.length; i += 9973) expect(messages[i]?.readUInt32BE(0)).toBe(i);
    expect(messages.at(-1)?.readUInt32BE(0)).toBe(99_999);
  }, 60_000);

  it('carries a client stream and a bidirectional stream', async () => {
    const { client } = await path();
    const summary = await new Promise<Buffer | undefined>((resolve, reject) => {
      const call = client.clientStream(new grpc.Metadata(), {}, (err, v) => (err ? reject(err) : resolve(v)));
      for (let i = 0; i < 500; i++) call.write(Buffer.alloc(1000, i % 256));
      call.end();
    });
    expect(JSON.parse(summary?.toString() ?? '{}')).toEqual({ count: 500, bytes: 500_000 });

    const bidi = client.bidi();
    const echoes: string[] = [];
    const done = new Promise<void>((resolve, reject) => {
      bidi.on('data', (m: Buffer) => {
        echoes.push(m.toString());
        // Each message goes out only once the previous echo came back: a real conversation.
        if (echoes.length < 50) bidi.write(Buffer.from(`m${echoes.length}`));
        else bidi.end();
      });
      bidi.on('end', resolve);
      bidi.on('error', reject);
    });
    bidi.write(Buffer.from('m0'));
    await done;
    expect(echoes).toEqual(Array.from({ length: 50 }, (_, i) => `echo:m${i}`));
  });

  it('carries a large message both ways', async () => {
    const { client } = await path();
    const big = Buffer.alloc(3 * 1024 * 1024, 0x5a);
    const r = await callUnary(client, big);
    expect(r.error).toBeUndefined();
    expect(r.value?.length).toBe(big.length + 5);
  });
});

describe('gRPC retries', () => {
  it('retries UNAVAILABLE twice to success', async () => {
    const unavailable = { fail: { code: grpc.status.UNAVAILABLE } };
    const { client, server, producer } = await path([unavailable, unavailable, {}]);
    const r = await callUnary(client, Buffer.from('x'));
    expect(r.error).toBeUndefined();
    expect(r.value?.toString()).toBe('echo:x');
    expect(server.calls).toHaveLength(3);
    expect(metricSum(await producer.metrics(), 'sluice_retries_total', { upstream: 'greeter', reason: 'grpc_unavailable' })).toBe(2);
  });

  it('retries UNAVAILABLE that comes after response headers, while no message reached the client', async () => {
    const { client, server } = await path([{ fail: { code: grpc.status.UNAVAILABLE }, headersFirst: true }, {}]);
    const r = await callUnary(client, Buffer.from('x'));
    expect(r.error).toBeUndefined();
    expect(server.calls).toHaveLength(2);
  });

  it('does not retry once a message reached the client', async () => {
    const { client, server } = await path([{ messages: 3, failAfter: grpc.status.UNAVAILABLE }, {}]);
    const { messages, error } = await collect(client.serverStream(Buffer.from('go')));
    expect(messages).toHaveLength(3);
    expect(error?.code).toBe(grpc.status.UNAVAILABLE);
    expect(server.calls).toHaveLength(1);
  });

  it('does not retry codes outside retryOnGrpcStatuses', async () => {
    const { client, server } = await path([{ fail: { code: grpc.status.INTERNAL, details: 'boom' } }, {}]);
    const r = await callUnary(client, Buffer.from('x'));
    expect(r.error?.code).toBe(grpc.status.INTERNAL);
    expect(r.error?.details).toBe('boom');
    expect(server.calls).toHaveLength(1);
  });

  it('retries the codes a route lists', async () => {
    const { client, server } = await path([{ fail: { code: grpc.status.RESOURCE_EXHAUSTED } }, {}], {
      retry: { retryOnGrpcStatuses: ['UNAVAILABLE', 'RESOURCE_EXHAUSTED'] },
    });
    const r = await callUnary(client, Buffer.from('x'));
    expect(r.error).toBeUndefined();
    expect(server.calls).toHaveLength(2);
  });

  it('honours grpc-retry-pushback-ms: a malformed or negative one means do not retry', async () => {
    const { client, server, producer } = await path([{ fail: { code: grpc.status.UNAVAILABLE, pushbackMs: '-1' } }, {}]);
    const r = await callUnary(client, Buffer.from('x'));
    expect(r.error?.code).toBe(grpc.status.UNAVAILABLE);
    expect(server.calls).toHaveLength(1);
    expect(metricSum(await producer.metrics(), 'sluice_retries_refused_total', { upstream: 'greeter', why: 'retry_after' })).toBe(1);
  });

  it('honours grpc-retry-pushback-ms: waits as long as the server asks before retrying', async () => {
    const { client, server } = await path([{ fail: { code: grpc.status.UNAVAILABLE, pushbackMs: '150' } }, {}]);
    const r = await callUnary(client, Buffer.from('x'));
    expect(r.error).toBeUndefined();
    expect(server.calls).toHaveLength(2);
    // The retry could not have started before the pushback: a lower bound, never flaky.
    expect(r.elapsedMs).toBeGreaterThanOrEqual(150);
  });
});

describe('gRPC deadlines and local replies', () => {
  it('ends a call whose deadline is shorter than the server delay with DEADLINE_EXCEEDED, on time', async () => {
    const { client, server } = await path([{ delayMs: 10_000 }]);
    const r = await callUnary(client, Buffer.from('x'), { deadline: Date.now() + 300 });
    expect(r.error?.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    expect(r.elapsedMs).toBeLessThan(3000);
    // The deadline travelled: the server's call was cancelled, not left running.
    await server.waitUntil(() => server.calls[0]?.cancelled === true, 'the server call cancelled');
  });

  it("forwards grpc-timeout shortened by the time spent, capped by the policy's timeout", async () => {
    const { client, server } = await path([{}], { timeouts: { requestMs: 2000 } });
    const r = await callUnary(client, Buffer.from('x'), { deadline: Date.now() + 60_000 });
    expect(r.error).toBeUndefined();
    // grpc-js keeps the deadline off the metadata; the sidecars' own header shows what was forwarded.
    const forwarded = Number(server.calls[0]?.metadata['sluice-timeout-ms']);
    expect(forwarded).toBeGreaterThan(0);
    expect(forwarded).toBeLessThanOrEqual(2000);
  });

  it("answers the sidecar's own timeout with a DEADLINE_EXCEEDED the client reads", async () => {
    const { client } = await path([{ delayMs: 10_000 }], { timeouts: { requestMs: 300, perTryMs: 'off' } });
    const r = await callUnary(client, Buffer.from('x'));
    expect(r.error?.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    expect(r.error?.metadata.get('sluice-error')).toEqual(['deadline-exceeded']);
  });

  it('ends a stream that outlives the deadline with DEADLINE_EXCEEDED in its trailers', async () => {
    const { client } = await path([{ messages: 2, hang: true }], { timeouts: { requestMs: 400, perTryMs: 'off' } });
    const { messages, error } = await collect(client.serverStream(Buffer.from('go')));
    expect(messages).toHaveLength(2);
    expect(error?.code).toBe(grpc.status.DEADLINE_EXCEEDED);
  });

  it('gives UNAVAILABLE, readable by the client, when the breaker is open', async () => {
    const internal = { fail: { code: grpc.status.INTERNAL } };
    const { client, server } = await path([internal, internal, internal, internal], {
      retry: { maxAttempts: 1 },
      circuitBreaker: { minRequests: 4, failureRatio: 0.5, openMs: 60_000 },
    });
    for (let i = 0; i < 4; i++) expect((await callUnary(client, Buffer.from('x'))).error?.code).toBe(grpc.status.INTERNAL);
    const r = await callUnary(client, Buffer.from('x'));
    expect(r.error?.code).toBe(grpc.status.UNAVAILABLE);
    expect(r.error?.metadata.get('sluice-error')).toEqual(['circuit-open']);
    expect(server.calls).toHaveLength(4);
  });

  it('gives RESOURCE_EXHAUSTED for a rate limit', async () => {
    const { client, server } = await path([], { rateLimits: [{ name: 'calls', requestsPerSecond: 1, burst: 1 }] });
    expect((await callUnary(client, Buffer.from('a'))).error).toBeUndefined();
    const r = await callUnary(client, Buffer.from('b'));
    expect(r.error?.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(r.error?.metadata.get('sluice-error')).toEqual(['rate-limited']);
    expect(server.calls).toHaveLength(1);
  });

  it('gives UNAVAILABLE when the upstream cannot be reached', async () => {
    const server = await startGrpcServer();
    open.push(server);
    const producer = await startTestSidecar({ outbound: { upstreams: [upstream('greeter', '127.0.0.1:1', { retry: { maxAttempts: 1 } })] } });
    open.push(producer);
    const client = grpcClient(producer.outboundPort, 'greeter');
    open.push(client);
    const r = await callUnary(client, Buffer.from('x'));
    expect(r.error?.code).toBe(grpc.status.UNAVAILABLE);
    expect(r.error?.metadata.get('sluice-error')).toEqual(['connect-failure']);
  });
});

/**
 * Waits until the server's stream is held back for good: blocked on 'drain' with nothing more
 * written over several looks. Returns how many messages it wrote by then.
 */
async function heldBack(server: TestGrpcServer): Promise<number> {
  let last = -1;
  let still = 0;
  for (let look = 0; look < 150; look++) {
    await new Promise((r) => setTimeout(r, 100));
    still = server.blocked && server.written === last ? still + 1 : 0;
    last = server.written;
    if (still >= 3) return last;
  }
  throw new Error(`the server stream was never held back (wrote ${server.written} messages)`);
}

describe('gRPC flow control', () => {
  it('ends the stream of a client that stopped reading once its deadline passed, not never', async () => {
    const { server, producer } = await path([{ messages: 16_384, messageBytes: 64 * 1024 }], { timeouts: { requestMs: 500, perTryMs: 'off' } });
    const session = await h2Connect(producer.outboundPort);
    open.push({ close: () => closeSession(session) });
    const stream = session.request({
      ':method': 'POST',
      ':path': '/sluice.test.Test/ServerStream',
      ':authority': 'greeter',
      'content-type': 'application/grpc',
      te: 'trailers',
    });
    stream.on('error', () => undefined);
    // One gRPC message (5-byte prefix + 2 bytes), then the client reads nothing more.
    stream.end(Buffer.from([0, 0, 0, 0, 2, 0x67, 0x6f]));
    stream.once('data', () => stream.pause());
    const closed = new Promise<void>((resolve) => stream.once('close', () => resolve()));
    await closed;
    // The sidecar gave up on it: the stream is closed although the client never read on.
    expect(stream.readableEnded).toBe(false);
    await server.waitUntil(() => server.calls[0]?.cancelled === true, 'the server call cancelled');
  }, 15_000);

  it("keeps a slow reader's server stream bounded by the windows: the server is held back, not buffered for", async () => {
    const messageBytes = 64 * 1024;
    // 1 GiB if everything were buffered; flow control must stop the server long before.
    const { client, server } = await path([{ messages: 16_384, messageBytes }]);
    const call = client.serverStream(Buffer.from('go'));
    let received = 0;
    call.on('data', () => {
      received++;
      // Read one message, then stop reading entirely.
      call.pause();
    });
    call.on('error', () => undefined);
    const heldAt = await heldBack(server);
    // Every byte the server wrote is in some window or socket buffer between it and the client:
    // HTTP/2 windows and TCP buffers on three hops, a few MiB, not the 1 GiB stream.
    expect(heldAt * messageBytes).toBeLessThan(48 * 1024 * 1024);
    expect(received).toBe(1);
    call.cancel();
    await server.waitUntil(() => server.calls[0]?.cancelled === true, 'the server call cancelled');
  }, 30_000);
});

describe('gRPC and endpoint health', () => {
  it('ejects an endpoint that answers UNAVAILABLE, judged by grpc-status under an HTTP 200', async () => {
    const unavailable: GrpcStep = { fail: { code: grpc.status.UNAVAILABLE } };
    const bad = await startGrpcServer(Array.from({ length: 50 }, () => unavailable));
    const good = await startGrpcServer();
    open.push(bad, good);
    const producer = await startTestSidecar({
      outbound: {
        upstreams: [
          upstream('greeter', [`127.0.0.1:${bad.port}`, `127.0.0.1:${good.port}`], {
            protocol: 'http2',
            loadBalancer: { algorithm: 'round-robin' },
            outlierDetection: { consecutiveFailures: 3, maxEjectionPercent: 0.5, baseEjectionMs: 30_000, probeIntervalMs: 'off' },
          }),
        ],
      },
    });
    open.push(producer);
    const client = grpcClient(producer.outboundPort, 'greeter');
    open.push(client);
    // Every call succeeds: a try that met the bad endpoint is retried on the good one.
    for (let i = 0; i < 10; i++) expect((await callUnary(client, Buffer.from('x'))).error).toBeUndefined();
    expect(metricSum(await producer.metrics(), 'sluice_outlier_ejections_total', { upstream: 'greeter', reason: 'consecutive_failures', mode: 'enforce' })).toBe(1);
    const seen = bad.calls.length;
    for (let i = 0; i < 10; i++) expect((await callUnary(client, Buffer.from('y'))).error).toBeUndefined();
    // Ejected: the bad endpoint gets nothing more.
    expect(bad.calls).toHaveLength(seen);
  });
});

describe('gRPC under backpressure', () => {
  it('refuses a call the consumer granted no credit for with UNAVAILABLE, before the wire', async () => {
    const hold: GrpcStep = { delayMs: 60_000 };
    const server = await startGrpcServer([hold, hold, hold, hold]);
    open.push(server);
    const consumer = await startTestSidecar({
      inbound: {
        app: { address: '127.0.0.1', port: server.port },
        admission: { adaptive: 'off', maxConcurrency: 4, queue: { maxWaiting: 0, maxWaitMs: 0 } },
        credits: { leaseMs: 1000 },
      },
    });
    open.push(consumer);
    const producer = await startTestSidecar({
      outbound: { upstreams: [upstream('greeter', `127.0.0.1:${consumer.inboundPort}`, { retry: 'off', credits: { maxWaitMs: 20 } })] },
    });
    open.push(producer);
    const client = grpcClient(producer.outboundPort, 'greeter');
    open.push(client);
    const held = Array.from({ length: 4 }, () => callUnary(client, Buffer.from('hold')));
    await server.waitUntil(() => server.calls.length === 4, 'four calls held at the server');
    const refused = await callUnary(client, Buffer.from('one too many'));
    expect(refused.error?.code).toBe(grpc.status.UNAVAILABLE);
    expect(refused.error?.metadata.get('sluice-error')).toEqual(['no-credit']);
    expect(server.calls).toHaveLength(4);
    client.close();
    await Promise.all(held);
  });
});
