// The result every open-loop fixed-rate generator prints (bench/fixed-rate.ts over HTTP/1.1,
// bench/h2-fixed-rate.ts over HTTP/2, bench/grpc-load.ts --rate for unary gRPC), and the one
// place it is computed from the per-request records, so the three read alike in the tables.
import { percentile } from './stats.ts';

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
  /** Answered but not a success: HTTP status outside 2xx, or a gRPC status other than OK. */
  readonly non2xx: number;
  /** Answers by HTTP status, or by gRPC status name. */
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

/** What a generator collected over its measured window; `latency` is NaN where unanswered. */
export interface FixedRateRecords {
  rate: number;
  seconds: number;
  warmupSeconds: number;
  warmCount: number;
  intervalMs: number;
  /** performance.now() time request 0 (of the warm-up) was scheduled at. */
  start: number;
  latency: Float64Array;
  sendLag: Float64Array;
  completed: number;
  errors: number;
  non2xx: number;
  statuses: Record<string, number>;
  firstError: string | undefined;
}

/** Unanswered requests count at their (lower-bound) age `now`, so they sit at the top of the tail. */
export function summarizeFixedRate(r: FixedRateRecords, now: number): FixedRateResult {
  const measuredCount = r.latency.length;
  let incomplete = 0;
  for (let k = 0; k < measuredCount; k++) {
    if (Number.isNaN(r.latency[k] as number)) {
      incomplete++;
      r.latency[k] = now - (r.start + (k + r.warmCount) * r.intervalMs);
    }
  }
  const sorted = Float64Array.from(r.latency).sort();
  const lagSorted = Float64Array.from(r.sendLag).sort();
  let sum = 0;
  for (const v of sorted) sum += v;
  return {
    rate: r.rate,
    seconds: r.seconds,
    warmupSeconds: r.warmupSeconds,
    scheduled: measuredCount,
    completed: r.completed,
    incomplete,
    errors: r.errors,
    non2xx: r.non2xx,
    statuses: r.statuses,
    firstError: r.firstError,
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
          ((measuredCount - 1) * r.intervalMs + (r.sendLag[measuredCount - 1] as number) - (r.sendLag[0] as number))
        : Number.NaN,
  };
}
