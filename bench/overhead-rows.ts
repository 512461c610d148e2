// One row of the overhead benchmark (bench/run.ts), whatever the protocol: start the target,
// check one request gets through, warm up, a saturation run with the proxy's CPU and memory
// measured, a fixed-rate run for latency, stop the target. A scenario (HTTP/1.1 with wrk,
// HTTP/2 with h2load, gRPC unary, gRPC server streaming) says how to load a target; a target
// (direct, sluice, nginx, haproxy) says how to start what sits between load and upstream.
import type { FixedRateResult } from './lib/fixed-rate-result.ts';
import { CLK_TCK, otherCpuMeter, ticksDelta, treeTicks } from './lib/cpu.ts';
import type { LoadRun } from './lib/measure.ts';
import { peakRss, rssSampler, settle } from './lib/measure.ts';
import type { Proc } from './lib/procs.ts';
import { P } from './overhead-params.ts';

export interface Target {
  /** Where the load goes (127.0.0.1). */
  port: number;
  /** Root processes of the proxy under test (their descendants count too); empty for direct. */
  procs: Proc[];
  /** How peak RSS is combined across `procs`, for the notes. */
  rssNote?: string;
}

export interface TargetSpec {
  /** Row id in BENCH_ROWS, after the scenario's prefix. */
  id: string;
  label: string;
  /** Undefined when the row can run; otherwise why it is skipped. */
  skip(): string | undefined;
  start(tmp: string, serverPort: number): Promise<Target>;
}

/** A saturation run's figures, in the scenario's units (requests, calls or messages). */
export interface Saturation {
  perSec: number;
  mbPerSec?: number;
  /** Units the target handled over the generator's whole run: the proxy-CPU divisor. */
  handled: number;
  /** Latency measured in this run, for a scenario without a fixed-rate phase. */
  latencyMs?: { p50: number; p99: number };
  /** Failures the generator reported, each already worded for the errors column. */
  errors: string[];
}

export interface Measured<T> {
  result: T;
  run: LoadRun;
}

export interface Scenario {
  id: string;
  title: string;
  /** BENCH_ROWS entries that select every row of this scenario. */
  groups: string[];
  /** Row ids in BENCH_ROWS are this prefix + the target's id. */
  rowPrefix: string;
  /** The upstream process: `bench/<script> <port>` printing `listening <port>`. */
  server: { name: string; script: string };
  targets: TargetSpec[];
  columns: {
    throughput: string;
    /** A MB/s column after throughput. */
    mbPerSec: boolean;
    p50: string;
    p99: string;
    /** What proxy CPU is divided by: req, call, msg. */
    unit: string;
    /** How the fixed-rate errors column names answers that are not a success. */
    nonOk: string;
  };
  headerLines(): string[];
  /** One request through the target: undefined if it succeeded, else what came back. */
  probe(port: number): Promise<string | undefined>;
  warm(port: number): Promise<void>;
  saturate(port: number): Promise<Measured<Saturation>>;
  /** Open-loop latency run; without it the table shows the saturation run's latency. */
  fixed?(port: number): Promise<Measured<FixedRateResult>>;
}

export interface RowResult {
  label: string;
  skipped?: string;
  error?: string;
  sat?: Saturation;
  fixed?: FixedRateResult;
  cpuUsPerUnit?: number;
  rssMiB?: number;
  rssDetail?: string;
  /** Busy CPU on the two bench cores not used by our processes, during each run, % of one core. */
  otherCpuSatPct?: number;
  otherCpuFixedPct?: number;
  /** The load generator's own CPU over the saturation run, % of its core. */
  generatorCpuPct?: number;
  /** Phases that started while the bench CPUs were still busy with other work. */
  notQuiet?: string[];
}

export function selected(sc: Scenario, t: TargetSpec): boolean {
  return P.rows.length === 0 || P.rows.includes(sc.rowPrefix + t.id) || sc.groups.some((g) => P.rows.includes(g));
}

async function quiet(label: string, phase: string, res: RowResult): Promise<void> {
  if (!(await settle([P.loadCpu, P.serverCpu], P.quietWaitSeconds, label, phase))) (res.notQuiet ??= []).push(phase);
}

export async function runRow(sc: Scenario, spec: TargetSpec, tmp: string, server: Proc, serverPort: number): Promise<RowResult> {
  const label = `${sc.title}: ${spec.label}`;
  const res: RowResult = { label: spec.label };
  const why = spec.skip();
  if (why !== undefined) return { ...res, skipped: why };
  let target: Target | undefined;
  try {
    process.stderr.write(`[bench] ${label}: starting\n`);
    target = await spec.start(tmp, serverPort);
    const roots = target.procs.map((p) => p.pid);

    // A target that cannot carry this protocol fails here, with what it answered, rather than
    // after every load run has timed out against it.
    const refused = await sc.probe(target.port);
    if (refused !== undefined) throw new Error(`one request through ${spec.label} failed: ${refused}`);

    process.stderr.write(`[bench] ${label}: warm-up ${P.warmupSeconds}s\n`);
    await sc.warm(target.port);

    await quiet(label, 'saturation', res);
    process.stderr.write(`[bench] ${label}: saturation ${P.satSeconds}s\n`);
    const proxy0 = treeTicks(roots);
    const satNoise = otherCpuMeter([P.loadCpu, P.serverCpu], [...roots, server.pid]);
    const rss = rssSampler(roots);
    let sat: Measured<Saturation>;
    let peakRssKiB = 0;
    try {
      sat = await sc.saturate(target.port);
    } finally {
      peakRssKiB = rss.stop();
    }
    res.otherCpuSatPct = satNoise(sat.run.ticks);
    res.generatorCpuPct = (sat.run.ticks / CLK_TCK / (sat.run.wallMs / 1000)) * 100;
    const proxy1 = treeTicks(roots);
    res.sat = sat.result;
    if (roots.length > 0 && sat.result.handled > 0) {
      res.cpuUsPerUnit = (ticksDelta(proxy0, proxy1) * (1e6 / CLK_TCK)) / sat.result.handled;
    }

    if (sc.fixed !== undefined) {
      await quiet(label, 'fixed rate', res);
      process.stderr.write(`[bench] ${label}: fixed rate ${P.rate}/s for ${P.fixedSeconds}s\n`);
      const fixedNoise = otherCpuMeter([P.loadCpu, P.serverCpu], [...roots, server.pid]);
      const fixed = await sc.fixed(target.port);
      res.otherCpuFixedPct = fixedNoise(fixed.run.ticks);
      res.fixed = fixed.result;
    }

    if (roots.length > 0) {
      const hwm = peakRss(target.procs);
      res.rssMiB = Math.max(hwm.sumKiB, peakRssKiB) / 1024;
      if (target.procs.length > 1 || target.rssNote !== undefined) res.rssDetail = `${target.rssNote ?? ''}: ${hwm.parts.join(' + ')}`;
    }
    for (const p of target.procs) {
      if (!p.alive) throw new Error(`${p.name} died during the run\n${p.describe()}`);
    }
  } catch (err) {
    res.error = err instanceof Error ? err.message : String(err);
    process.stderr.write(`[bench] ${label}: FAILED: ${res.error}\n`);
  } finally {
    if (target !== undefined) await Promise.all(target.procs.map((p) => p.stop()));
  }
  return res;
}
