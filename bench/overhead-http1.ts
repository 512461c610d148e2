// The HTTP/1.1 scenario of the overhead benchmark (bench/run.ts): bench/upstream.ts behind each
// target, `wrk` for saturation, bench/fixed-rate.ts for latency at a fixed rate.
import path from 'node:path';
import type { FixedRateResult } from './lib/fixed-rate-result.ts';
import { runLoad } from './lib/measure.ts';
import { NODE, ROOT, firstLine, httpGet } from './lib/procs.ts';
import type { Measured, Saturation, Scenario } from './overhead-rows.ts';
import { AUTHORITY, http1Targets } from './overhead-targets.ts';
import { sinkSummary } from './lib/otlp-sink.ts';
import { P } from './overhead-params.ts';

export interface WrkResult {
  requests: number;
  seconds: number;
  rps: number;
  p50Ms: number | undefined;
  p99Ms: number | undefined;
  non2xx: number;
  socketErrors: { connect: number; read: number; write: number; timeout: number };
  raw: string;
}

function wrkDurationMs(v: string, unit: string): number {
  const n = Number(v);
  switch (unit) {
    case 'us':
      return n / 1000;
    case 'ms':
      return n;
    case 's':
      return n * 1000;
    case 'm':
      return n * 60_000;
    case 'h':
      return n * 3_600_000;
    default:
      return Number.NaN;
  }
}

export function parseWrk(out: string): WrkResult {
  const req = /(\d+) requests in ([\d.]+)(us|ms|s|m|h)/.exec(out);
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(out);
  if (!req || !rps) throw new Error(`could not parse wrk output:\n${out}`);
  const pct = (q: string): number | undefined => {
    const m = new RegExp(`^\\s*${q}%\\s+([\\d.]+)(us|ms|s|m|h)`, 'm').exec(out);
    return m ? wrkDurationMs(m[1] as string, m[2] as string) : undefined;
  };
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(out);
  return {
    requests: Number(req[1]),
    seconds: wrkDurationMs(req[2] as string, req[3] as string) / 1000,
    rps: Number(rps[1]),
    p50Ms: pct('50'),
    p99Ms: pct('99'),
    non2xx: non2xx ? Number(non2xx[1]) : 0,
    socketErrors: sock
      ? { connect: Number(sock[1]), read: Number(sock[2]), write: Number(sock[3]), timeout: Number(sock[4]) }
      : { connect: 0, read: 0, write: 0, timeout: 0 },
    raw: out,
  };
}

async function wrk(port: number, seconds: number): Promise<Measured<WrkResult>> {
  const args = ['wrk', '-t1', `-c${P.connections}`, `-d${seconds}s`, '--latency', '-H', `Host: ${AUTHORITY}`, `http://127.0.0.1:${port}/`];
  const run = await runLoad('wrk', args, seconds * 1000 + 15_000, P.loadCpu, P.nice);
  if (run.code !== 0) throw new Error(`wrk exited ${run.code}: ${run.stderr}\n${run.stdout}`);
  return { result: parseWrk(run.stdout), run };
}

function wrkErrors(r: WrkResult): string[] {
  const errs: string[] = [];
  const s = r.socketErrors;
  if (r.non2xx > 0) errs.push(`wrk non-2xx ${r.non2xx}`);
  if (s.connect + s.read + s.write + s.timeout > 0) errs.push(`wrk socket c${s.connect}/r${s.read}/w${s.write}/t${s.timeout}`);
  return errs;
}

export const HTTP1: Scenario = {
  id: 'http1',
  title: 'HTTP/1.1',
  groups: ['http1'],
  rowPrefix: '',
  server: { name: 'upstream', script: 'upstream.ts' },
  targets: http1Targets(),
  columns: {
    throughput: 'saturation req/s',
    mbPerSec: false,
    p50: `p50 ms @${P.rate}/s`,
    p99: `p99 ms @${P.rate}/s`,
    unit: 'req',
    nonOk: 'non-2xx',
  },
  headerLines: () => [
    `- upstream: bench/upstream.ts (node http), 200 with a 100-byte body, keep-alive; requests are \`GET /\` with \`Host: ${AUTHORITY}\``,
    `- saturation: \`wrk -t1 -c${P.connections} -d${P.satSeconds}s --latency\` after a ${P.warmupSeconds}s warm-up run of the same (BENCH_SECONDS, BENCH_WARMUP_SECONDS, BENCH_CONNECTIONS)`,
    `- fixed rate: bench/fixed-rate.ts, open loop at ${P.rate} req/s for ${P.fixedSeconds}s after ${P.fixedWarmupSeconds}s unrecorded, up to ${P.connections} connections, latency from the scheduled send time (BENCH_RATE, BENCH_FIXED_SECONDS, BENCH_FIXED_WARMUP_SECONDS)`,
    `- tracing rows: the outbound sidecar with OTEL_TRACES_SAMPLER=parentbased_traceidratio and OTEL_TRACES_SAMPLER_ARG 0.1 or 1 (wrk sends no traceparent, so each request is a root), OTLP/HTTP protobuf to a sink in the bench runner every second (OTEL_BSP_SCHEDULE_DELAY=1000)${sinkSummary() === undefined ? '' : `; the sink received ${sinkSummary()}`}; the other sluice rows run with tracing off`,
  ],
  probe: async (port) => {
    const r = await httpGet(`http://127.0.0.1:${port}/`, 5000, AUTHORITY);
    return r.status === 200 ? undefined : `HTTP/1.1 GET answered ${r.status === 0 ? 'nothing (error or timeout)' : `${r.status}: ${r.body.slice(0, 300)}`}`;
  },
  warm: async (port) => {
    const warm = await wrk(port, P.warmupSeconds);
    if (warm.result.requests === 0) throw new Error(`warm-up completed no requests\n${warm.result.raw}`);
  },
  saturate: async (port): Promise<Measured<Saturation>> => {
    const { result, run } = await wrk(port, P.satSeconds);
    return { result: { perSec: result.rps, handled: result.requests, errors: wrkErrors(result) }, run };
  },
  fixed: async (port): Promise<Measured<FixedRateResult>> => {
    const args = [
      NODE,
      path.join(ROOT, 'bench', 'fixed-rate.ts'),
      '--url',
      `http://127.0.0.1:${port}/`,
      '--rate',
      String(P.rate),
      '--seconds',
      String(P.fixedSeconds),
      '--warmup-seconds',
      String(P.fixedWarmupSeconds),
      '--connections',
      String(P.connections),
      '--host',
      AUTHORITY,
    ];
    const run = await runLoad('fixed-rate', args, (P.fixedSeconds + P.fixedWarmupSeconds) * 1000 + 30_000, P.loadCpu, P.nice);
    if (run.code !== 0) throw new Error(`fixed-rate exited ${run.code}: ${run.stderr}`);
    return { result: JSON.parse(firstLine(run.stdout)) as FixedRateResult, run };
  },
};
