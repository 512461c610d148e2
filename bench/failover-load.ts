// Open-loop fixed-rate generator for the failover benchmark: like bench/fixed-rate.ts (requests
// scheduled at start + i/rate whatever happened to earlier ones, latency from the scheduled
// time; one undici Pool, keep-alive, no pipelining) but it keeps every request's record so the
// bench can cut the run into before / during / after-fault windows.
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
import { Pool } from 'undici';

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
  options: {
    url: { type: 'string' },
    rate: { type: 'string', default: '1500' },
    seconds: { type: 'string', default: '12' },
    'warmup-seconds': { type: 'string', default: '1' },
    connections: { type: 'string', default: '512' },
    host: { type: 'string' },
    'drain-seconds': { type: 'string', default: '6' },
    out: { type: 'string' },
  },
  strict: true,
});
if (values.url === undefined || values.out === undefined) throw new Error('--url and --out are required');
const url = new URL(values.url);
const rate = Number(values.rate);
const seconds = Number(values.seconds);
const warmupSeconds = Number(values['warmup-seconds']);
const connections = Number(values.connections);
const drainMs = Number(values['drain-seconds']) * 1000;

const pool = new Pool(url.origin, {
  connections,
  pipelining: 1,
  keepAliveTimeout: 60_000,
  headersTimeout: 0,
  bodyTimeout: 0,
});
const headers: Record<string, string> = {};
if (values.host !== undefined) headers['host'] = values.host;
const dispatchOpts = { origin: url.origin, path: url.pathname + url.search, method: 'GET', headers };

const warmCount = Math.round(rate * warmupSeconds);
const n = Math.round(rate * seconds);
const total = warmCount + n;
const intervalMs = 1000 / rate;
const epoch = (t: number): number => performance.timeOrigin + t;

const end = new Float64Array(n).fill(Number.NaN);
const status = new Int32Array(n).fill(-1);
const lag = new Float64Array(n);
let firstError: string | undefined;
let outstanding = 0;
let scheduleDone = false;
let resolveDone: () => void = () => {};
const allDone = new Promise<void>((r) => {
  resolveDone = r;
});

const fire = (i: number, scheduledAt: number, t: number): void => {
  const k = i - warmCount;
  if (k >= 0) lag[k] = t - scheduledAt;
  outstanding++;
  let st = 0;
  let finished = false;
  const finish = (s: number, err?: Error): void => {
    if (finished) return;
    finished = true;
    outstanding--;
    if (k >= 0) {
      end[k] = performance.now();
      status[k] = s;
    }
    if (err !== undefined) firstError ??= `${err.name}: ${err.message}`;
    if (scheduleDone && outstanding === 0) resolveDone();
  };
  pool.dispatch(dispatchOpts, {
    onRequestStart() {},
    onResponseStart(_c, statusCode) {
      st = statusCode;
    },
    onResponseData() {},
    onResponseEnd() {
      finish(st);
    },
    onResponseError(_c, err) {
      finish(0, err);
    },
  });
};

const start = performance.now() + 50;
process.stdout.write(`start ${epoch(start + warmCount * intervalMs)}\n`);
let next = 0;
await new Promise<void>((resolve) => {
  const pump = (): void => {
    const t = performance.now();
    while (next < total) {
      const at = start + next * intervalMs;
      if (at > t) break;
      fire(next, at, t);
      next++;
    }
    if (next < total) setImmediate(pump);
    else resolve();
  };
  pump();
});
scheduleDone = true;
if (outstanding === 0) resolveDone();
let timer: NodeJS.Timeout | undefined;
const drained = await Promise.race([
  allDone.then(() => true),
  new Promise<boolean>((r) => {
    timer = setTimeout(() => r(false), drainMs);
  }),
]);
if (timer !== undefined) clearTimeout(timer);

const tEnd = performance.now();
const rec: LoadRecord = {
  start: epoch(start + warmCount * intervalMs),
  intervalMs,
  scheduled: [],
  end: [],
  status: Array.from(status),
  firstError,
  sendLagP99Ms: Float64Array.from(lag).sort()[Math.max(0, Math.ceil(0.99 * n) - 1)] ?? Number.NaN,
};
for (let k = 0; k < n; k++) {
  rec.scheduled.push(epoch(start + (k + warmCount) * intervalMs));
  const e = end[k] as number;
  rec.end.push(epoch(Number.isNaN(e) ? tEnd : e));
}
writeFileSync(values.out, JSON.stringify(rec));
process.stdout.write('done\n');
if (drained) await pool.close();
else await pool.destroy();
process.exit(0);
