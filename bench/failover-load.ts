// Open-loop fixed-rate generator for the failover benchmark: like bench/fixed-rate.ts (requests
// scheduled at start + i/rate whatever happened to earlier ones, latency from the scheduled
// time; one undici Pool, keep-alive, no pipelining: bench/lib/open-loop.ts) but it keeps every
// request's record so the bench can cut the run into before / during / after-fault windows.
//
//   node bench/failover-load.ts --url URL --rate 1500 --seconds 12 --out FILE \
//     [--warmup-seconds 1] [--connections 512] [--host svc] [--drain-seconds 6]
//
// Prints `start <epoch ms>` (scheduled time of the first measured request) as soon as it is
// known, so the bench can time the fault against it, and `done` at the end. FILE gets JSON
// { start, intervalMs, scheduled: number[], end: number[], status: number[] }: epoch ms
// (performance.timeOrigin-based, comparable across processes on this machine); status 0 = error,
// -1 = unanswered when the drain bound ran out (its end is then the bound).
import { parseArgs } from 'node:util';
import { writeFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { loadArgs, loadSpec, openLoop } from './lib/open-loop.ts';
import { percentile } from './lib/stats.ts';

export interface LoadRecord {
  start: number;
  intervalMs: number;
  scheduled: number[];
  end: number[];
  status: number[];
  firstError: string | undefined;
  sendLagP99Ms: number;
}

const { values } = parseArgs({
  options: { ...loadArgs({ rate: '1500', seconds: '12', connections: '512', drainSeconds: '6' }), out: { type: 'string' } },
  strict: true,
});
if (values.url === undefined || values.out === undefined) throw new Error('--url and --out are required');
const spec = loadSpec({ ...values, url: values.url });
const { drainMs } = spec;

const gen = openLoop({ ...spec, timeoutMs: 0 });
const { warmCount, intervalMs } = gen;
const n = gen.measuredCount;
const epoch = (t: number): number => performance.timeOrigin + t;

const end = new Float64Array(n).fill(Number.NaN);
const status = new Int32Array(n).fill(-1);
let firstError: string | undefined;

const start = performance.now() + 50;
process.stdout.write(`start ${epoch(start + warmCount * intervalMs)}\n`);
const drained = await gen.run(start, drainMs, (k, _scheduledAt, st, err) => {
  if (k >= 0) {
    end[k] = performance.now();
    status[k] = st ?? 0; // 0 = error
  }
  if (err !== undefined) firstError ??= `${err.name}: ${err.message}`;
});

const tEnd = performance.now();
const rec: LoadRecord = {
  start: epoch(start + warmCount * intervalMs),
  intervalMs,
  scheduled: [],
  end: [],
  status: Array.from(status),
  firstError,
  sendLagP99Ms: percentile(Float64Array.from(gen.sendLag).sort(), 0.99),
};
for (let k = 0; k < n; k++) {
  rec.scheduled.push(epoch(start + (k + warmCount) * intervalMs));
  const e = end[k] as number;
  rec.end.push(epoch(Number.isNaN(e) ? tEnd : e));
}
writeFileSync(values.out, JSON.stringify(rec));
process.stdout.write('done\n');
await gen.close(drained);
process.exit(0);
