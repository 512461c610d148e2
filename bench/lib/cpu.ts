// CPU accounting for the benchmark drivers (bench/run.ts, bench/overload.ts), from /proc: the
// ticks a process tree used, busy ticks per core, how much of the bench cores other work took
// during a run, and a bounded wait for the cores to go idle before a measured phase.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { isAborting, processTree, readStat, sleep } from './procs.ts';

export const CLK_TCK = (() => {
  const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
  const n = Number(r.stdout?.trim());
  return Number.isInteger(n) && n > 0 ? n : 100;
})();

/** CPU ticks per PID for the tree under `roots`. */
export function treeTicks(roots: readonly number[]): Map<number, number> {
  const m = new Map<number, number>();
  for (const pid of processTree(roots)) {
    const st = readStat(pid);
    if (st !== undefined) m.set(pid, st.ticks);
  }
  return m;
}

export function ticksDelta(before: Map<number, number>, after: Map<number, number>): number {
  let sum = 0;
  for (const [pid, t] of after) sum += t - (before.get(pid) ?? 0);
  return sum;
}

/** Busy ticks (user+nice+system, not idle/iowait/irq/softirq/steal) per CPU from /proc/stat. */
export function cpuBusyTicks(): Map<string, number> {
  const m = new Map<string, number>();
  for (const line of readFileSync('/proc/stat', 'utf8').split('\n')) {
    const f = line.split(/\s+/);
    if (!/^cpu\d+$/.test(f[0] ?? '')) continue;
    m.set((f[0] as string).slice(3), Number(f[1]) + Number(f[2]) + Number(f[3]));
  }
  return m;
}

/**
 * Measures, over one load run, busy CPU on `cpus` that none of our processes used: other work
 * on the machine (tests, compilers) that competes with what is being measured. The returned
 * function takes the ticks of processes that already exited (a load generator) and gives the
 * other work's share, in % of one core.
 */
export function otherCpuMeter(cpus: readonly string[], ourRoots: readonly number[]): (exitedTicks: number) => number {
  const ours0 = treeTicks(ourRoots);
  const busy0 = cpuBusyTicks();
  const self0 = process.cpuUsage();
  const t0 = performance.now();
  return (exitedTicks) => {
    const busy1 = cpuBusyTicks();
    const ours1 = treeTicks(ourRoots);
    const self = process.cpuUsage(self0);
    const seconds = (performance.now() - t0) / 1000;
    let busy = 0;
    for (const cpu of cpus) busy += (busy1.get(cpu) ?? 0) - (busy0.get(cpu) ?? 0);
    const ours = ticksDelta(ours0, ours1) + exitedTicks + ((self.user + self.system) / 1e6) * CLK_TCK;
    return Math.max(0, ((busy - ours) / CLK_TCK / seconds) * 100);
  };
}

/**
 * Waits (bounded by `maxSeconds`) until `cpus` stay under 5% of a core busy for a second while
 * our processes are idle, so a phase does not start in the middle of someone else's test run.
 * Returns the seconds waited, or undefined if the machine never went quiet.
 */
export async function waitQuiet(cpus: readonly string[], maxSeconds: number): Promise<number | undefined> {
  const t0 = Date.now();
  const deadline = t0 + maxSeconds * 1000;
  do {
    const b0 = cpuBusyTicks();
    await sleep(1000);
    const b1 = cpuBusyTicks();
    let busy = 0;
    for (const cpu of cpus) busy += (b1.get(cpu) ?? 0) - (b0.get(cpu) ?? 0);
    if (busy / CLK_TCK < 0.05) return (Date.now() - t0) / 1000;
  } while (Date.now() < deadline && !isAborting());
  return undefined;
}
