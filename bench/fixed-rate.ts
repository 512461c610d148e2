// Open-loop, fixed-rate HTTP load generator (wrk2 is not packaged here; wrk is closed-loop).
//
// Request i is *scheduled* at start + i/rate, independent of how earlier requests fared, and its
// latency is measured from that scheduled time to the end of the response body (no coordinated
// omission; the schedule and undici dispatch live in bench/lib/open-loop.ts). The generator
// reports its own send lag so its health is visible.
//
// Usage:
//   node bench/fixed-rate.ts --url http://127.0.0.1:8080/ --rate 2000 --seconds 5 \
//     [--warmup-seconds 1] [--connections 64] [--host bench] [--drain-seconds 10]
// Prints one JSON object on stdout (FixedRateResult below). Run it pinned: `taskset -c 0 ...`.
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { loadArgs, loadSpec, openLoop } from './lib/open-loop.ts';
import { percentile } from './lib/stats.ts';

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

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: loadArgs({ rate: '2000', seconds: '5', connections: '64', drainSeconds: '10' }),
    strict: true,
  });
  if (values.url === undefined) throw new Error('--url is required');
  const spec = loadSpec({ ...values, url: values.url });
  const { rate, seconds, warmupSeconds, connections, drainMs } = spec;
  if (!(rate > 0) || !(seconds > 0) || !(warmupSeconds >= 0) || !(connections > 0)) {
    throw new Error('bad --rate/--seconds/--warmup-seconds/--connections');
  }

  const gen = openLoop({ ...spec, timeoutMs: drainMs + seconds * 1000 + warmupSeconds * 1000 });
  const { warmCount, measuredCount, intervalMs, sendLag } = gen;

  const latency = new Float64Array(measuredCount).fill(Number.NaN);
  let completed = 0;
  let errors = 0;
  let non2xx = 0;
  let firstError: string | undefined;
  const statuses: Record<string, number> = {};

  const start = performance.now() + 20;
  const drained = await gen.run(start, drainMs, (k, scheduledAt, status, err) => {
    if (k < 0) return; // warm-up: not recorded
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
  });

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
  await gen.close(drained);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`fixed-rate: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
