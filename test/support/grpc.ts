// A real @grpc/grpc-js server and client for tests, with messages as raw bytes (no .proto: the
// sidecar never looks inside messages, so neither do the tests). The server's behaviour is chosen
// per call, like the scripted HTTP upstream: fail with a status N times, delay, stream N messages,
// echo a stream back. It records every call, and close() ends everything it opened.
import * as grpc from '@grpc/grpc-js';
import { waiters } from './waiters.ts';

type SurfaceCall = grpc.ServerUnaryCall<Buffer, Buffer> | grpc.ServerWritableStream<Buffer, Buffer> | grpc.ServerReadableStream<Buffer, Buffer> | grpc.ServerDuplexStream<Buffer, Buffer>;

const raw = { serialize: (b: Buffer): Buffer => b, deserialize: (b: Buffer): Buffer => b };

function method(path: string, requestStream: boolean, responseStream: boolean): grpc.MethodDefinition<Buffer, Buffer> {
  return {
    path,
    requestStream,
    responseStream,
    requestSerialize: raw.serialize,
    requestDeserialize: raw.deserialize,
    responseSerialize: raw.serialize,
    responseDeserialize: raw.deserialize,
  };
}

/** The test service: one method of each kind. */
export const TEST_SERVICE = {
  unary: method('/sluice.test.Test/Unary', false, false),
  serverStream: method('/sluice.test.Test/ServerStream', false, true),
  clientStream: method('/sluice.test.Test/ClientStream', true, false),
  bidi: method('/sluice.test.Test/Bidi', true, true),
} as const;

export interface GrpcCall {
  readonly method: keyof typeof TEST_SERVICE;
  readonly metadata: Record<string, string>;
  /** Set once the call ends: the client cancelled it. */
  cancelled: boolean;
}

/** What the server does with a call; chosen per call by the script. */
export interface GrpcStep {
  /** End the call with this status (and message) instead of answering. */
  readonly fail?: { readonly code: grpc.status; readonly details?: string; readonly pushbackMs?: string };
  /** Send the response headers before failing, so the failure is not trailers-only. */
  readonly headersFirst?: boolean;
  /** Wait this long before answering (ends early if the call is cancelled). */
  readonly delayMs?: number;
  /** Server stream: how many messages, and how large each is. */
  readonly messages?: number;
  readonly messageBytes?: number;
  /** Server stream: fail with this status after the messages. */
  readonly failAfter?: grpc.status;
  /** Server stream: after the messages, neither end nor fail (a stream that outlives its deadline). */
  readonly hang?: boolean;
}

export interface TestGrpcServer {
  readonly port: number;
  readonly calls: readonly GrpcCall[];
  /** Server-stream messages written so far (acknowledged by grpc-js' write callback or queue). */
  readonly written: number;
  /** The server stream is waiting for 'drain': its writes are held back by flow control. */
  readonly blocked: boolean;
  setScript(steps: readonly GrpcStep[]): void;
  waitUntil(check: () => boolean, what: string, timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

function metadataOf(m: grpc.Metadata): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(m.getMap())) out[k] = String(v);
  return out;
}

function statusOf(step: NonNullable<GrpcStep['fail']>): Partial<grpc.StatusObject> {
  const metadata = new grpc.Metadata();
  if (step.pushbackMs !== undefined) metadata.set('grpc-retry-pushback-ms', step.pushbackMs);
  return { code: step.code, details: step.details ?? 'scripted failure', metadata };
}

export async function startGrpcServer(script: readonly GrpcStep[] = []): Promise<TestGrpcServer> {
  const server = new grpc.Server();
  const calls: GrpcCall[] = [];
  const wait = waiters('grpc server', () => `${calls.length} calls`);
  const timers = new Set<NodeJS.Timeout>();
  let steps = script;
  let written = 0;
  let blocked = false;

  function begin(name: keyof typeof TEST_SERVICE, call: SurfaceCall): GrpcStep {
    const record: GrpcCall = { method: name, metadata: metadataOf(call.metadata), cancelled: false };
    calls.push(record);
    (call as NodeJS.EventEmitter).on('cancelled', () => {
      record.cancelled = true;
      wait.poke();
    });
    wait.poke();
    return steps[calls.length - 1] ?? {};
  }

  function later(ms: number | undefined, call: SurfaceCall, then: () => void): void {
    if (ms === undefined) return then();
    const timer = setTimeout(() => {
      timers.delete(timer);
      if (!call.cancelled) then();
    }, ms);
    timers.add(timer);
  }

  server.addService(TEST_SERVICE, {
    unary(call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) {
      const step = begin('unary', call);
      later(step.delayMs, call, () => {
        if (step.fail) {
          if (step.headersFirst) call.sendMetadata(new grpc.Metadata());
          callback(statusOf(step.fail));
        } else callback(null, Buffer.concat([Buffer.from('echo:'), call.request]));
      });
    },
    serverStream(call: grpc.ServerWritableStream<Buffer, Buffer>) {
      const step = begin('serverStream', call);
      later(step.delayMs, call, () => {
        if (step.fail) {
          if (step.headersFirst) call.sendMetadata(new grpc.Metadata());
          call.emit('error', statusOf(step.fail));
          return;
        }
        const total = step.messages ?? 1;
        const message = Buffer.alloc(step.messageBytes ?? 16, 0x61);
        let i = 0;
        const pump = (): void => {
          while (i < total && !call.cancelled) {
            // The index in the first bytes lets the client check order.
            const m = Buffer.from(message);
            m.writeUInt32BE(i, 0);
            i++;
            written++;
            if (!call.write(m)) {
              blocked = true;
              wait.poke();
              call.once('drain', () => {
                blocked = false;
                pump();
              });
              return;
            }
          }
          if (call.cancelled || step.hang) return;
          if (step.failAfter !== undefined) call.emit('error', { code: step.failAfter, details: 'failed after messages' });
          else call.end();
        };
        pump();
      });
    },
    clientStream(call: grpc.ServerReadableStream<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) {
      begin('clientStream', call);
      let count = 0;
      let bytes = 0;
      call.on('data', (m: Buffer) => {
        count++;
        bytes += m.length;
      });
      call.on('end', () => callback(null, Buffer.from(JSON.stringify({ count, bytes }))));
    },
    bidi(call: grpc.ServerDuplexStream<Buffer, Buffer>) {
      begin('bidi', call);
      call.on('data', (m: Buffer) => call.write(Buffer.concat([Buffer.from('echo:'), m])));
      call.on('end', () => call.end());
    },
  });

  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );

  return {
    port,
    calls,
    get written() {
      return written;
    },
    get blocked() {
      return blocked;
    },
    setScript(next) {
      steps = next;
    },
    waitUntil: (check, what, timeoutMs) => wait.waitUntil(check, what, timeoutMs),
    async close() {
      for (const t of timers) clearTimeout(t);
      timers.clear();
      wait.clear();
      server.forceShutdown();
    },
  };
}

export type TestClient = grpc.Client & {
  unary: (req: Buffer, metadata: grpc.Metadata, options: grpc.CallOptions, cb: grpc.requestCallback<Buffer>) => grpc.ClientUnaryCall;
  serverStream: (req: Buffer, metadata?: grpc.Metadata, options?: grpc.CallOptions) => grpc.ClientReadableStream<Buffer>;
  clientStream: (metadata: grpc.Metadata, options: grpc.CallOptions, cb: grpc.requestCallback<Buffer>) => grpc.ClientWritableStream<Buffer>;
  bidi: (metadata?: grpc.Metadata, options?: grpc.CallOptions) => grpc.ClientDuplexStream<Buffer, Buffer>;
};

const Client = grpc.makeGenericClientConstructor(TEST_SERVICE, 'Test');

/**
 * A client of the test service at 127.0.0.1:port. `authority` is the :authority it sends (the
 * upstream's host name when it goes through an outbound listener). No retries of its own: what
 * is retried is the sidecar's doing.
 */
export function grpcClient(port: number, authority?: string, options: grpc.ChannelOptions = {}): TestClient {
  return new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), {
    'grpc.enable_retries': 0,
    ...(authority === undefined ? {} : { 'grpc.default_authority': authority }),
    ...options,
  }) as unknown as TestClient;
}

export interface UnaryResult {
  readonly error: grpc.ServiceError | undefined;
  readonly value: Buffer | undefined;
  /** Wall time of the call, ms. */
  readonly elapsedMs: number;
}

/** One unary call; resolves with the outcome, never rejects. */
export function callUnary(client: TestClient, body: Buffer, options: grpc.CallOptions = {}, metadata = new grpc.Metadata()): Promise<UnaryResult> {
  const started = performance.now();
  return new Promise((resolve) => {
    client.unary(body, metadata, options, (error, value) =>
      resolve({ error: error ?? undefined, value: value ?? undefined, elapsedMs: performance.now() - started }),
    );
  });
}

export { grpc };
