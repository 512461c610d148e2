// Open-loop, fixed-rate HTTP load generator (wrk2 is not packaged here; wrk is closed-loop).
//
// Request i is *scheduled* at start + i/rate, independent of how earlier requests fared, and its
// latency is measured from that scheduled time to the end of the response body. A stalled
// target therefore shows up as queueing latency instead of silently lowering the send rate
// (no coordinated omission). Requests go through one undici Pool (HTTP/1.1 keep-alive, no
// pipelining, Pool.dispatch with a bare handler); when every connection is busy the Pool queues,
// and that wait counts too. The generator reports its own send lag so its health is visible.
//
// Usage:
//   node bench/fixed-rate.ts --url http://127.0.0.1:8080/ --rate 2000 --seconds 5 \
//     [--warmup-seconds 1] [--connections 64] [--host bench] [--drain-seconds 10]
// Prints one JSON object on stdout (FixedRateResult below). Run it pinned: `taskset -c 0 ...`.
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { Pool } from 'undici';

export interface FixedRateResult {
  readonly rate: number;
  readonly seconds: number;
  readonly warmupSeconds: number;
  /** Requests in the measured window (after warm-up). */
  readonly scheduled: number;
  readonly completed: number;
  /** Measured requests still unanswered when the drain bound ran out (counted as latency >= the bound). */
  readonly incomplete: number;
  readonly errors: number;
  readonly non2xx: number;
  readonly statuses: Record<string, number>;
  readonly firstError: string | undefined;
  /** Latency from scheduled send time to end of response body, ms. */
  readonly latencyMs: {
    readonly p50: number;
    readonly p90: number;
    readonly p99: number;
    readonly p999: number;
    readonly max: number;
    readonly mean: number;
  };
  /** How late the generator itself issued requests vs schedule (its own health), ms. */
  readonly sendLagMs: { readonly p99: number; readonly max: number };
  /** Measured requests over the span they were actually sent in (requests/s). */
  readonly achievedRate: number;
}

function percentile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[idx] as number;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      url: { type: 'string' },
      rate: { type: 'string', default: '2000' },
      seconds: { type: 'string', default: '5' },
      'warmup-seconds': { type: 'string', default: '1' },
      connections: { type: 'string', default: '64' },
      host: { type: 'string' },
      'drain-seconds': { type: 'string', default: '10' },
    },
    strict: true,
  });
  if (values.url === undefined) throw new Error('--url is required');
  const url = new URL(values.url);
  const rate = Number(values.rate);
  const seconds = Number(values.seconds);
  const warmupSeconds = Number(values['warmup-seconds']);
  const connections = Number(values.connections);
  const drainMs = Number(values['drain-seconds']) * 1000;
  if (!(rate > 0) || !(seconds > 0) || !(warmupSeconds >= 0) || !(connections > 0)) {
    throw new Error('bad --rate/--seconds/--warmup-seconds/--connections');
  }

  const pool = new Pool(url.origin, {
    connections,
    pipelining: 1,
    keepAliveTimeout: 60_000,
    headersTimeout: drainMs + seconds * 1000 + warmupSeconds * 1000,
    bodyTimeout: drainMs + seconds * 1000 + warmupSeconds * 1000,
  });
  const path = url.pathname + url.search;
  const headers: Record<string, string> = {};
  if (values.host !== undefined) headers['host'] = values.host;

  const warmCount = Math.round(rate * warmupSeconds);
  const measuredCount = Math.round(rate * seconds);
  const total = warmCount + measuredCount;
  const intervalMs = 1000 / rate;

  const latency = new Float64Array(measuredCount).fill(Number.NaN);
  const sendLag = new Float64Array(measuredCount);
  let completed = 0;
  let errors = 0;
  let non2xx = 0;
  let firstError: string | undefined;
  const statuses: Record<string, number> = {};
  let outstanding = 0;

  let resolveDone: () => void = () => {};
  const allDone = new Promise<void>((r) => {
    resolveDone = r;
  });
  let scheduleDone = false;

  const record = (k: number, scheduledAt: number, status: number | undefined, err: Error | undefined): void => {
    outstanding--;
    if (k >= 0) {
      latency[k] = performance.now() - scheduledAt;
      if (err !== undefined) {
        errors++;
        firstError ??= `${err.name}: ${err.message}`;
      } else if (status !== undefined) {
        completed++;
        const s = String(status);
        statuses[s] = (statuses[s] ?? 0) + 1;
        if (status < 200 || status >= 300) non2xx++;
      }
    }
    if (scheduleDone && outstanding === 0) resolveDone();
  };

  // dispatch() with a plain handler rather than request(): undici's request() wraps every
  // exchange in an AsyncResource, a promise and a Readable body, which on this machine made
  // the generator itself pause 5-25 ms in young-generation GC at 2000 req/s and dominated p99.
  const dispatchOpts = { origin: url.origin, path, method: 'GET', headers };
  const fire = (i: number, scheduledAt: number, now: number): void => {
    const k = i - warmCount; // < 0 during warm-up: not recorded
    if (k >= 0) sendLag[k] = now - scheduledAt;
    outstanding++;
    let status: number | undefined;
    let finished = false;
    pool.dispatch(dispatchOpts, {
      onRequestStart() {}, // its presence selects undici's current handler API
      onResponseStart(_controller, statusCode) {
        status = statusCode;
      },
      onResponseData() {},
      onResponseEnd() {
        if (finished) return;
        finished = true;
        record(k, scheduledAt, status, undefined);
      },
      onResponseError(_controller, err) {
        if (finished) return;
        finished = true;
        record(k, scheduledAt, undefined, err);
      },
    });
  };

  const start = performance.now() + 20;
  let next = 0;
  // Spin on setImmediate (the load core is dedicated to us): every turn polls I/O, so responses
  // are timestamped promptly, and sends are issued within one loop turn of their schedule.
  await new Promise<void>((resolve) => {
    const pump = (): void => {
      const now = performance.now();
      while (next < total) {
        const at = start + next * intervalMs;
        if (at > now) break;
        fire(next, at, now);
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

  // Unanswered requests count at their (lower-bound) age now, so they sit at the top of the tail.
  let incomplete = 0;
  const nowEnd = performance.now();
  for (let k = 0; k < measuredCount; k++) {
    if (Number.isNaN(latency[k] as number)) {
      incomplete++;
      latency[k] = nowEnd - (start + (k + warmCount) * intervalMs);
    }
  }
  const sorted = Float64Array.from(latency).sort();
  const lagSorted = Float64Array.from(sendLag).sort();
  let sum = 0;
  for (const v of sorted) sum += v;

  const result: FixedRateResult = {
    rate,
    seconds,
    warmupSeconds,
    scheduled: measuredCount,
    completed,
    incomplete,
    errors,
    non2xx,
    statuses,
    firstError,
    latencyMs: {
      p50: percentile(sorted, 0.5),
      p90: percentile(sorted, 0.9),
      p99: percentile(sorted, 0.99),
      p999: percentile(sorted, 0.999),
      max: sorted.length > 0 ? (sorted[sorted.length - 1] as number) : Number.NaN,
      mean: sorted.length > 0 ? sum / sorted.length : Number.NaN,
    },
    sendLagMs: {
      p99: percentile(lagSorted, 0.99),
      max: lagSorted.length > 0 ? (lagSorted[lagSorted.length - 1] as number) : Number.NaN,
    },
    achievedRate:
      measuredCount > 1
        ? ((measuredCount - 1) * 1000) /
          ((measuredCount - 1) * intervalMs + (sendLag[measuredCount - 1] as number) - (sendLag[0] as number))
        : Number.NaN,
  };
  process.stdout.write(JSON.stringify(result) + '\n');
  if (drained) await pool.close();
  else await pool.destroy();
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`fixed-rate: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
