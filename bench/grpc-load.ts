// gRPC load generator for the benchmarks (grpc-js, plaintext, bench/lib/grpc-bench.ts's service).
//
//   --mode unary              closed loop: --concurrency calls in flight, each worker starts its
//                             next call when the last one ends, for --seconds
//   --mode unary --rate R     open loop at R calls/s (schedule of bench/lib/open-loop.ts, latency
//                             from the scheduled send time); prints a FixedRateResult
//   --mode stream             closed loop: --concurrency server-streaming calls in flight, each
//                             asking for --stream-messages messages of --message-bytes
//
// Calls are spread round-robin over --channels grpc-js channels, each with its own connection
// (a local subchannel pool; grpc-js would otherwise share one). --authority sets :authority,
// which is how a sidecar's outbound listener picks the upstream. Every run is bounded: at most
// --max-calls calls, --warmup-seconds + --seconds of sending, then at most --deadline-ms for the
// calls still in flight (each call carries that deadline).
//
// Usage:
//   node bench/grpc-load.ts --target 127.0.0.1:50051 --mode unary --seconds 5 [--authority bench]
//     [--warmup-seconds 1] [--channels 4] [--concurrency 64] [--rate R] [--max-calls N]
//     [--deadline-ms 10000] [--stream-messages 100] [--message-bytes 4096]
// Prints one JSON object on stdout. Run it pinned: `taskset -c 0 ...`.
import * as grpc from '@grpc/grpc-js';
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { summarizeFixedRate } from './lib/fixed-rate-result.ts';
import { BENCH_SERVICE, UNARY_REPLY_BYTES, encodeStreamRequest } from './lib/grpc-bench.ts';
import { runOpenLoop } from './lib/open-loop.ts';
import { percentile } from './lib/stats.ts';

/** Closed-loop result (unary or stream). Counts and rates are of the measured window. */
export interface GrpcSaturationResult {
  readonly mode: 'unary' | 'stream';
  readonly seconds: number;
  /** Calls that ended OK inside the window. */
  readonly calls: number;
  /** Messages (replies) received inside the window; = calls for unary. */
  readonly messages: number;
  readonly bytes: number;
  readonly callsPerSec: number;
  readonly messagesPerSec: number;
  readonly mbPerSec: number;
  /** Calls started inside the window: unary, call latency; stream, time to the first message. */
  readonly latencyMs: { readonly p50: number; readonly p99: number; readonly max: number };
  /** Stream only: call start to final status, of the calls started inside the window. */
  readonly streamMs?: { readonly p50: number; readonly p99: number };
  /** Final status of every call the run made (warm-up included), by gRPC status name. */
  readonly statuses: Record<string, number>;
  readonly failed: number;
  readonly firstError: string | undefined;
  /** Calls still in flight when the drain bound ran out. */
  readonly incomplete: number;
  /** Everything this process sent through the target, warm-up included: the per-call CPU divisor. */
  readonly totalCalls: number;
  readonly totalMessages: number;
}

const OPTIONS = {
  target: { type: 'string' },
  authority: { type: 'string' },
  mode: { type: 'string', default: 'unary' },
  seconds: { type: 'string', default: '5' },
  'warmup-seconds': { type: 'string', default: '1' },
  channels: { type: 'string', default: '4' },
  concurrency: { type: 'string', default: '64' },
  rate: { type: 'string' },
  'max-calls': { type: 'string', default: '2000000' },
  'deadline-ms': { type: 'string', default: '10000' },
  'stream-messages': { type: 'string', default: '100' },
  'message-bytes': { type: 'string', default: '4096' },
} as const;

function positive(name: string, v: string, allowZero = false): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0 || (!allowZero && n === 0)) throw new Error(`--${name} must be a ${allowZero ? 'non-negative' : 'positive'} number, got ${JSON.stringify(v)}`);
  return n;
}

function statusName(code: number): string {
  return grpc.status[code] ?? String(code);
}

function channels(target: string, authority: string | undefined, n: number): grpc.Client[] {
  const opts: grpc.ChannelOptions = {
    'grpc.use_local_subchannel_pool': 1,
    'grpc.max_receive_message_length': -1,
    ...(authority === undefined ? {} : { 'grpc.default_authority': authority }),
  };
  return Array.from({ length: n }, () => new grpc.Client(target, grpc.credentials.createInsecure(), opts));
}

async function ready(clients: grpc.Client[], timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  await Promise.all(
    clients.map(
      (c) => new Promise<void>((resolve, reject) => c.waitForReady(deadline, (err) => (err ? reject(new Error(`channel not ready: ${err.message}`)) : resolve()))),
    ),
  );
}

const UNARY_REQUEST = Buffer.alloc(UNARY_REPLY_BYTES, 'q');

function unaryCall(client: grpc.Client, deadlineMs: number, done: (code: number, details: string | undefined) => void): void {
  const m = BENCH_SERVICE.unary;
  client.makeUnaryRequest(m.path, m.requestSerialize, m.responseDeserialize, UNARY_REQUEST, { deadline: Date.now() + deadlineMs }, (err) => {
    if (err) done(err.code, err.details);
    else done(grpc.status.OK, undefined);
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: OPTIONS, strict: true });
  if (values.target === undefined) throw new Error('--target host:port is required');
  if (values.mode !== 'unary' && values.mode !== 'stream') throw new Error(`--mode must be unary or stream, got ${JSON.stringify(values.mode)}`);
  const mode = values.mode;
  const seconds = positive('seconds', values.seconds);
  const warmupSeconds = positive('warmup-seconds', values['warmup-seconds'], true);
  const nChannels = positive('channels', values.channels);
  const concurrency = positive('concurrency', values.concurrency);
  const maxCalls = positive('max-calls', values['max-calls']);
  const deadlineMs = positive('deadline-ms', values['deadline-ms']);
  const streamReq = encodeStreamRequest({
    messages: positive('stream-messages', values['stream-messages']),
    bytes: positive('message-bytes', values['message-bytes']),
  });
  if (values.rate !== undefined && mode !== 'unary') throw new Error('--rate is for --mode unary only');

  const clients = channels(values.target, values.authority, nChannels);
  try {
    await ready(clients, Math.min(deadlineMs, 5000));
    const result =
      values.rate === undefined
        ? await closedLoop({ clients, mode, seconds, warmupSeconds, concurrency, maxCalls, deadlineMs, streamReq })
        : await openLoop(clients, positive('rate', values.rate), seconds, warmupSeconds, maxCalls, deadlineMs);
    process.stdout.write(JSON.stringify(result) + '\n');
  } finally {
    for (const c of clients) c.close();
  }
}

interface ClosedLoopSpec {
  clients: grpc.Client[];
  mode: 'unary' | 'stream';
  seconds: number;
  warmupSeconds: number;
  concurrency: number;
  maxCalls: number;
  deadlineMs: number;
  streamReq: Buffer;
}

async function closedLoop(s: ClosedLoopSpec): Promise<GrpcSaturationResult> {
  const t0 = performance.now();
  const windowStart = t0 + s.warmupSeconds * 1000;
  const windowEnd = windowStart + s.seconds * 1000;
  const inWindow = (t: number): boolean => t >= windowStart && t < windowEnd;
  const latency: number[] = [];
  const streamMs: number[] = [];
  const statuses: Record<string, number> = {};
  let calls = 0;
  let messages = 0;
  let bytes = 0;
  let failed = 0;
  let firstError: string | undefined;
  let issued = 0;
  let totalCalls = 0;
  let totalMessages = 0;
  let inFlight = 0;

  const ended = (started: number, code: number, details: string | undefined): void => {
    inFlight--;
    const now = performance.now();
    const name = statusName(code);
    statuses[name] = (statuses[name] ?? 0) + 1;
    if (code === grpc.status.OK) {
      totalCalls++;
      if (inWindow(now)) calls++;
      if (s.mode === 'stream' && inWindow(started)) streamMs.push(now - started);
    } else {
      failed++;
      firstError ??= `${name}: ${details ?? ''}`;
    }
  };

  const oneUnary = (client: grpc.Client): Promise<void> =>
    new Promise((resolve) => {
      const started = performance.now();
      unaryCall(client, s.deadlineMs, (code, details) => {
        const now = performance.now();
        if (code === grpc.status.OK) {
          totalMessages++;
          if (inWindow(now)) {
            messages++;
            bytes += UNARY_REPLY_BYTES;
          }
          if (inWindow(started)) latency.push(now - started);
        }
        ended(started, code, details);
        resolve();
      });
    });

  const oneStream = (client: grpc.Client): Promise<void> =>
    new Promise((resolve) => {
      const started = performance.now();
      let first = true;
      const m = BENCH_SERVICE.stream;
      const call = client.makeServerStreamRequest(m.path, m.requestSerialize, m.responseDeserialize, s.streamReq, {
        deadline: Date.now() + s.deadlineMs,
      });
      call.on('data', (b: Buffer) => {
        const now = performance.now();
        totalMessages++;
        if (first) {
          first = false;
          if (inWindow(started)) latency.push(now - started);
        }
        if (inWindow(now)) {
          messages++;
          bytes += b.length;
        }
      });
      call.on('error', () => {}); // the final status below carries it
      call.on('status', (st: grpc.StatusObject) => {
        ended(started, st.code, st.details);
        resolve();
      });
    });

  const worker = async (w: number): Promise<void> => {
    const client = s.clients[w % s.clients.length] as grpc.Client;
    while (performance.now() < windowEnd && issued < s.maxCalls) {
      issued++;
      inFlight++;
      await (s.mode === 'unary' ? oneUnary(client) : oneStream(client));
    }
  };
  const workers = Promise.all(Array.from({ length: s.concurrency }, (_, w) => worker(w)));
  let timer: NodeJS.Timeout | undefined;
  const drainBound = new Promise<void>((r) => (timer = setTimeout(r, (s.warmupSeconds + s.seconds) * 1000 + s.deadlineMs + 1000)));
  await Promise.race([workers, drainBound]);
  if (timer !== undefined) clearTimeout(timer);

  // The window may have been cut short by --max-calls: rates are over the part that ran.
  const seconds = (Math.min(performance.now(), windowEnd) - windowStart) / 1000;
  const lat = Float64Array.from(latency).sort();
  const str = Float64Array.from(streamMs).sort();
  return {
    mode: s.mode,
    seconds,
    calls,
    messages,
    bytes,
    callsPerSec: calls / seconds,
    messagesPerSec: messages / seconds,
    mbPerSec: bytes / 1e6 / seconds,
    latencyMs: { p50: percentile(lat, 0.5), p99: percentile(lat, 0.99), max: lat.length > 0 ? (lat[lat.length - 1] as number) : Number.NaN },
    ...(s.mode === 'stream' ? { streamMs: { p50: percentile(str, 0.5), p99: percentile(str, 0.99) } } : {}),
    statuses,
    failed,
    firstError,
    incomplete: inFlight,
    totalCalls,
    totalMessages,
  };
}

async function openLoop(clients: grpc.Client[], rate: number, seconds: number, warmupSeconds: number, maxCalls: number, deadlineMs: number) {
  const warmCount = Math.round(rate * warmupSeconds);
  const measuredCount = Math.round(rate * seconds);
  if (warmCount + measuredCount > maxCalls) throw new Error(`--rate × (--warmup-seconds + --seconds) = ${warmCount + measuredCount} calls is over --max-calls ${maxCalls}`);
  const intervalMs = 1000 / rate;
  const latency = new Float64Array(measuredCount).fill(Number.NaN);
  const sendLag = new Float64Array(measuredCount);
  const statuses: Record<string, number> = {};
  let completed = 0;
  let non2xx = 0;
  let firstError: string | undefined;
  const start = performance.now() + 20;
  await runOpenLoop<{ code: number; details: string | undefined }>(
    { start, total: warmCount + measuredCount, intervalMs, drainMs: deadlineMs + 1000 },
    (i, done) => unaryCall(clients[i % clients.length] as grpc.Client, deadlineMs, (code, details) => done({ code, details })),
    (i, scheduledAt, now) => {
      const k = i - warmCount; // < 0 during warm-up: not recorded
      if (k >= 0) sendLag[k] = now - scheduledAt;
    },
    (i, scheduledAt, { code, details }) => {
      const k = i - warmCount;
      if (k < 0) return;
      latency[k] = performance.now() - scheduledAt;
      completed++;
      const name = statusName(code);
      statuses[name] = (statuses[name] ?? 0) + 1;
      if (code !== grpc.status.OK) {
        non2xx++;
        firstError ??= `${name}: ${details ?? ''}`;
      }
    },
  );
  return summarizeFixedRate(
    { rate, seconds, warmupSeconds, warmCount, intervalMs, start, latency, sendLag, completed, errors: 0, non2xx, statuses, firstError },
    performance.now(),
  );
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`grpc-load: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
