// Measuring one load run for the overhead benchmark (bench/run.ts): a load generator pinned to
// the load core that reports its own CPU, the proxy's CPU and memory from /proc, and a bounded
// wait for the bench cores to go idle before a measured phase.
import { readFileSync } from 'node:fs';
import { waitQuiet } from './cpu.ts';
import { Proc, fmt, pinned, processTree, sleep } from './procs.ts';

export interface LoadRun {
  stdout: string;
  stderr: string;
  code: number | null;
  /** CPU ticks used by the generator process. */
  ticks: number;
  /** From start to exit, ms. */
  wallMs: number;
}

// Run through `sh` so the wrapper can report the generator's own CPU (its children's
// utime+stime) for the "other CPU" noise estimate and the generator-bound note.
const WRAP = '"$@"; rc=$?; read -r s < /proc/$$/stat; echo "SLUICE_BENCH_STAT $s" >&2; exit $rc';

/** Runs `argv` pinned to `cpu`; kills it (by PID) and throws if it outlives `timeoutMs`. */
export async function runLoad(name: string, argv: string[], timeoutMs: number, cpu: string, nice: number | undefined): Promise<LoadRun> {
  const [cmd, args] = pinned(cpu, 'sh', ['-c', WRAP, 'sh', ...argv], nice);
  const t0 = Date.now();
  const p = new Proc(name, cmd, args);
  const timedOut = await Promise.race([p.exited.then(() => false), sleep(timeoutMs).then(() => true)]);
  if (timedOut) {
    await p.stop(1000);
    throw new Error(`${name}: did not finish within ${timeoutMs} ms\n${p.describe()}`);
  }
  const wallMs = Date.now() - t0;
  let ticks = 0;
  const m = /SLUICE_BENCH_STAT (.*)$/m.exec(p.stderr);
  if (m) {
    const s = m[1] as string;
    const rest = s.slice(s.lastIndexOf(')') + 2).split(' ');
    ticks = Number(rest[13]) + Number(rest[14]); // cutime(16) + cstime(17)
  }
  const stderr = p.stderr.replace(/^SLUICE_BENCH_STAT .*\n?/m, '');
  return { stdout: p.stdout, stderr, code: p.exitCode, ticks, wallMs };
}

export function statusKiB(pid: number, field: 'VmHWM' | 'VmRSS'): number | undefined {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** Samples the summed VmRSS of the trees under `roots` every 250 ms; stop() gives the peak, KiB. */
export function rssSampler(roots: readonly number[]): { stop(): number } {
  let peak = 0;
  const timer = setInterval(() => {
    let sum = 0;
    for (const pid of processTree(roots)) sum += statusKiB(pid, 'VmRSS') ?? 0;
    peak = Math.max(peak, sum);
  }, 250);
  return {
    stop: () => {
      clearInterval(timer);
      return peak;
    },
  };
}

/** Peak RSS (VmHWM) of each proc's tree, KiB, and the sum. */
export function peakRss(procs: readonly Proc[]): { sumKiB: number; parts: string[] } {
  const parts: string[] = [];
  let sumKiB = 0;
  for (const proc of procs) {
    let kib = 0;
    for (const pid of processTree([proc.pid])) kib += statusKiB(pid, 'VmHWM') ?? 0;
    sumKiB += kib;
    parts.push(`${proc.name} ${fmt(kib / 1024, 1)}`);
  }
  return { sumKiB, parts };
}

/**
 * Before a measured phase: waits up to `maxSeconds` for `cpus` to go idle. Returns false (and
 * says so on stderr) if they did not, so the row can note that it started on a busy machine.
 */
export async function settle(cpus: readonly string[], maxSeconds: number, label: string, phase: string): Promise<boolean> {
  if (maxSeconds <= 0) return true;
  const waited = await waitQuiet(cpus, maxSeconds);
  if (waited === undefined) {
    process.stderr.write(`[bench] ${label}: CPUs still busy with other work after ${maxSeconds}s; starting ${phase} anyway\n`);
    return false;
  }
  if (waited > 1.5) process.stderr.write(`[bench] ${label}: waited ${fmt(waited, 0)}s for other work to stop\n`);
  return true;
}
