// The HTTP/2 and gRPC scenarios of the overhead benchmark (bench/run.ts), h2c with prior
// knowledge on every hop:
//   h2           bench/h2-upstream.ts behind each target; h2load for saturation,
//                bench/h2-fixed-rate.ts for latency at a fixed rate
//   grpc-unary   bench/grpc-peer.ts behind each target; bench/grpc-load.ts closed loop for
//                saturation, open loop (--rate) for latency
//   grpc-stream  the same peer; server-streaming calls, messages/s and MB/s, latency to the
//                first message of each call
// Every generator is bounded in time (and grpc-load in calls too) and runs pinned to the load core.
import path from 'node:path';
import type { FixedRateResult } from './lib/fixed-rate-result.ts';
import { grpcStatusName, grpcUnary, h2Get } from './lib/h2-probe.ts';
import { runLoad } from './lib/measure.ts';
import type { LoadRun } from './lib/measure.ts';
import { NODE, ROOT, firstLine } from './lib/procs.ts';
import type { GrpcSaturationResult } from './grpc-load.ts';
import type { Measured, Saturation, Scenario } from './overhead-rows.ts';
import { AUTHORITY, h2Targets } from './overhead-targets.ts';
import { P } from './overhead-params.ts';

const PROBE_MS = 5000;
/** grpc-load's per-call deadline, which also bounds its drain after the run. */
const GRPC_DEADLINE_MS = 10_000;

// ---------------------------------------------------------------------------------------------
// h2load

export interface H2loadResult {
  seconds: number;
  rps: number;
  mbPerSec: number;
  /** Completed (any status). */
  done: number;
  succeeded: number;
  failed: number;
  errored: number;
  timeout: number;
  non2xx: number;
}

export function parseH2load(out: string): H2loadResult {
  const fin = /finished in ([\d.]+)s, ([\d.]+) req\/s, ([\d.]+)([KMG]?)B\/s/.exec(out);
  const req = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(out);
  const codes = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(out);
  if (!fin || !req || !codes) throw new Error(`could not parse h2load output:\n${out}`);
  const scale = { '': 1e-6, K: 1e-3, M: 1, G: 1e3 }[fin[4] as '' | 'K' | 'M' | 'G'];
  return {
    seconds: Number(fin[1]),
    rps: Number(fin[2]),
    mbPerSec: Number(fin[3]) * scale,
    done: Number(req[3]),
    succeeded: Number(req[4]),
    failed: Number(req[5]),
    errored: Number(req[6]),
    timeout: Number(req[7]),
    non2xx: Number(codes[2]) + Number(codes[3]) + Number(codes[4]),
  };
}

async function h2load(port: number, seconds: number): Promise<Measured<H2loadResult>> {
  const args = [
    'h2load',
    '-t1',
    `-c${P.h2Clients}`,
    `-m${P.h2Streams}`,
    `-D${seconds}`,
    // A connection that goes quiet for this long is closed and its requests count as timeouts.
    '-N5',
    '-H',
    `:authority: ${AUTHORITY}`,
    `http://127.0.0.1:${port}/`,
  ];
  const run = await runLoad('h2load', args, seconds * 1000 + 15_000, P.loadCpu, P.nice);
  if (run.code !== 0) throw new Error(`h2load exited ${run.code}: ${run.stderr}\n${run.stdout}`);
  return { result: parseH2load(run.stdout), run };
}

function h2loadErrors(r: H2loadResult): string[] {
  const errs: string[] = [];
  if (r.non2xx > 0) errs.push(`h2load non-2xx ${r.non2xx}`);
  if (r.failed + r.errored + r.timeout > 0) errs.push(`h2load failed ${r.failed} / errored ${r.errored} / timeout ${r.timeout}`);
  return errs;
}

async function fixedRun(name: string, argv: string[], seconds: number): Promise<Measured<FixedRateResult>> {
  const run = await runLoad(name, argv, seconds * 1000 + 30_000, P.loadCpu, P.nice);
  if (run.code !== 0) throw new Error(`${name} exited ${run.code}: ${run.stderr}`);
  return { result: JSON.parse(firstLine(run.stdout)) as FixedRateResult, run };
}

const h2Probe = async (port: number): Promise<string | undefined> => {
  const r = await h2Get(port, AUTHORITY, PROBE_MS);
  if ('error' in r) return `HTTP/2 GET: ${r.error}`;
  return r.status === 200 ? undefined : `HTTP/2 GET answered ${r.status}`;
};

export const H2: Scenario = {
  id: 'h2',
  title: 'HTTP/2 (h2c)',
  groups: ['h2'],
  rowPrefix: 'h2-',
  server: { name: 'h2-upstream', script: 'h2-upstream.ts' },
  targets: h2Targets(h2Probe),
  columns: {
    throughput: 'saturation req/s',
    mbPerSec: false,
    p50: `p50 ms @${P.rate}/s`,
    p99: `p99 ms @${P.rate}/s`,
    unit: 'req',
    nonOk: 'non-2xx',
  },
  headerLines: () => [
    `- upstream: bench/h2-upstream.ts (node http2, h2c prior knowledge), 200 with a 100-byte body; requests are \`GET /\` with \`:authority: ${AUTHORITY}\``,
    `- saturation: \`h2load -t1 -c${P.h2Clients} -m${P.h2Streams} -D${P.satSeconds}\` (${P.h2Clients * P.h2Streams} streams in flight) after a ${P.warmupSeconds}s warm-up run of the same (BENCH_H2_CLIENTS, BENCH_H2_STREAMS)`,
    `- fixed rate: bench/h2-fixed-rate.ts, open loop at ${P.rate} req/s for ${P.fixedSeconds}s after ${P.fixedWarmupSeconds}s unrecorded, round-robin over ${P.h2Clients} connections, latency from the scheduled send time`,
  ],
  probe: h2Probe,
  warm: async (port) => {
    const warm = await h2load(port, P.warmupSeconds);
    if (warm.result.succeeded === 0) throw new Error(`warm-up completed no requests\n${warm.run.stdout}`);
  },
  saturate: async (port): Promise<Measured<Saturation>> => {
    const { result, run } = await h2load(port, P.satSeconds);
    return { result: { perSec: result.rps, handled: result.done, errors: h2loadErrors(result) }, run };
  },
  fixed: (port) =>
    fixedRun(
      'h2-fixed-rate',
      [
        NODE,
        path.join(ROOT, 'bench', 'h2-fixed-rate.ts'),
        '--url',
        `http://127.0.0.1:${port}/`,
        '--host',
        AUTHORITY,
        '--rate',
        String(P.rate),
        '--seconds',
        String(P.fixedSeconds),
        '--warmup-seconds',
        String(P.fixedWarmupSeconds),
        '--connections',
        String(P.h2Clients),
      ],
      P.fixedSeconds + P.fixedWarmupSeconds,
    ),
};

// ---------------------------------------------------------------------------------------------
// gRPC

function grpcArgs(port: number, mode: 'unary' | 'stream', extra: string[]): string[] {
  return [
    NODE,
    path.join(ROOT, 'bench', 'grpc-load.ts'),
    '--target',
    `127.0.0.1:${port}`,
    '--authority',
    AUTHORITY,
    '--mode',
    mode,
    '--channels',
    String(P.grpcChannels),
    '--deadline-ms',
    String(GRPC_DEADLINE_MS),
    ...(mode === 'stream'
      ? ['--concurrency', String(P.grpcStreamConcurrency), '--stream-messages', String(P.grpcStreamMessages), '--message-bytes', String(P.grpcMessageBytes)]
      : ['--concurrency', String(P.grpcConcurrency)]),
    ...extra,
  ];
}

/** Closed loop for `seconds` after `warmupSeconds` in-process (both bounded; so is the drain). */
async function grpcClosed(port: number, mode: 'unary' | 'stream', seconds: number, warmupSeconds: number): Promise<{ result: GrpcSaturationResult; run: LoadRun }> {
  const argv = grpcArgs(port, mode, ['--seconds', String(seconds), '--warmup-seconds', String(warmupSeconds)]);
  const run = await runLoad('grpc-load', argv, (seconds + warmupSeconds) * 1000 + GRPC_DEADLINE_MS + 20_000, P.loadCpu, P.nice);
  if (run.code !== 0) throw new Error(`grpc-load exited ${run.code}: ${run.stderr}`);
  return { result: JSON.parse(firstLine(run.stdout)) as GrpcSaturationResult, run };
}

function grpcErrors(r: GrpcSaturationResult): string[] {
  const errs: string[] = [];
  if (r.failed > 0) {
    const bad = Object.entries(r.statuses).filter(([k]) => k !== 'OK');
    errs.push(`grpc-load failed ${r.failed} (${bad.map(([k, v]) => `${k} ${v}`).join(', ')}; first: ${r.firstError ?? ''})`);
  }
  if (r.incomplete > 0) errs.push(`grpc-load unfinished ${r.incomplete}`);
  return errs;
}

const grpcProbe = async (port: number): Promise<string | undefined> => {
  const r = await grpcUnary(port, AUTHORITY, PROBE_MS);
  return r.code === 0 ? undefined : `gRPC Unary: ${grpcStatusName(r.code)}: ${r.details}`;
};

// One second of in-process warm-up before the measured window lets the generator's own JIT
// settle; the proxy handles those calls too, so they count in its CPU divisor (totalCalls).
const IN_PROCESS_WARMUP_SECONDS = 1;

const GRPC_PEER = { name: 'grpc-peer', script: 'grpc-peer.ts' };

export const GRPC_UNARY: Scenario = {
  id: 'grpc-unary',
  title: 'gRPC unary',
  groups: ['grpc', 'grpc-unary'],
  rowPrefix: 'grpc-unary-',
  server: GRPC_PEER,
  targets: h2Targets(grpcProbe),
  columns: {
    throughput: 'saturation calls/s',
    mbPerSec: false,
    p50: `p50 ms @${P.rate}/s`,
    p99: `p99 ms @${P.rate}/s`,
    unit: 'call',
    nonOk: 'non-OK',
  },
  headerLines: () => [
    `- gRPC peer: bench/grpc-peer.ts (grpc-js server, generic service, raw Buffer messages): \`/bench.Bench/Unary\` answers 100 bytes; \`/bench.Bench/Stream\` streams what is asked; the client sets \`grpc.default_authority: ${AUTHORITY}\``,
    `- gRPC unary saturation: bench/grpc-load.ts, grpc-js client, ${P.grpcConcurrency} calls in flight over ${P.grpcChannels} channels (one connection each), ${P.satSeconds}s after ${IN_PROCESS_WARMUP_SECONDS}s unrecorded in the same process, after a ${P.warmupSeconds}s warm-up run (BENCH_GRPC_CONCURRENCY, BENCH_GRPC_CHANNELS)`,
    `- gRPC unary fixed rate: bench/grpc-load.ts --rate ${P.rate}, open loop for ${P.fixedSeconds}s after ${P.fixedWarmupSeconds}s unrecorded, latency from the scheduled send time`,
  ],
  probe: grpcProbe,
  warm: async (port) => {
    const warm = await grpcClosed(port, 'unary', P.warmupSeconds, 0);
    if (warm.result.calls === 0) throw new Error(`warm-up completed no calls: ${grpcErrors(warm.result).join('; ')}`);
  },
  saturate: async (port): Promise<Measured<Saturation>> => {
    const { result, run } = await grpcClosed(port, 'unary', P.satSeconds, IN_PROCESS_WARMUP_SECONDS);
    return { result: { perSec: result.callsPerSec, handled: result.totalCalls, errors: grpcErrors(result) }, run };
  },
  fixed: (port) =>
    fixedRun(
      'grpc-load',
      grpcArgs(port, 'unary', ['--rate', String(P.rate), '--seconds', String(P.fixedSeconds), '--warmup-seconds', String(P.fixedWarmupSeconds)]),
      P.fixedSeconds + P.fixedWarmupSeconds + GRPC_DEADLINE_MS / 1000,
    ),
};

export const GRPC_STREAM: Scenario = {
  id: 'grpc-stream',
  title: 'gRPC server streaming',
  groups: ['grpc', 'grpc-stream'],
  rowPrefix: 'grpc-stream-',
  server: GRPC_PEER,
  targets: h2Targets(grpcProbe, {
    rowId: 'grpc-stream-haproxy',
    why: 'haproxy 2.6 ends a share of multiplexed server-streaming calls without their trailers',
  }),
  columns: {
    throughput: 'messages/s',
    mbPerSec: true,
    p50: 'first message p50 ms',
    p99: 'first message p99 ms',
    unit: 'msg',
    nonOk: 'non-OK',
  },
  headerLines: () => [
    `- gRPC server streaming: bench/grpc-load.ts --mode stream, ${P.grpcStreamConcurrency} calls in flight over ${P.grpcChannels} channels, each ${P.grpcStreamMessages} messages of ${P.grpcMessageBytes} bytes, ${P.satSeconds}s after ${IN_PROCESS_WARMUP_SECONDS}s unrecorded, after a ${P.warmupSeconds}s warm-up run; latency is call start to first message, at saturation (BENCH_GRPC_STREAM_CONCURRENCY, BENCH_GRPC_STREAM_MESSAGES, BENCH_GRPC_MESSAGE_BYTES)`,
  ],
  probe: grpcProbe,
  warm: async (port) => {
    const warm = await grpcClosed(port, 'stream', P.warmupSeconds, 0);
    if (warm.result.messages === 0) throw new Error(`warm-up received no messages: ${grpcErrors(warm.result).join('; ')}`);
  },
  saturate: async (port): Promise<Measured<Saturation>> => {
    const { result, run } = await grpcClosed(port, 'stream', P.satSeconds, IN_PROCESS_WARMUP_SECONDS);
    return {
      result: {
        perSec: result.messagesPerSec,
        mbPerSec: result.mbPerSec,
        handled: result.totalMessages,
        latencyMs: { p50: result.latencyMs.p50, p99: result.latencyMs.p99 },
        errors: grpcErrors(result),
      },
      run,
    };
  },
};
