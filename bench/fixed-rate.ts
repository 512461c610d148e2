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
// Prints one JSON object on stdout (FixedRateResult, bench/lib/fixed-rate-result.ts). Run it pinned: `taskset -c 0 ...`.
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { loadArgs, loadSpec, openLoop } from './lib/open-loop.ts';
import { summarizeFixedRate } from './lib/fixed-rate-result.ts';

export type { FixedRateResult } from './lib/fixed-rate-result.ts';

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

  const result = summarizeFixedRate(
    { rate, seconds, warmupSeconds, warmCount, intervalMs, start, latency, sendLag, completed, errors, non2xx, statuses, firstError },
    performance.now(),
  );
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
