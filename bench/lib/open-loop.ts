// Core of the open-loop generators (bench/fixed-rate.ts, bench/failover-load.ts; the schedule
// also drives bench/overload-load.ts).
//
// Request i is *scheduled* at start + i*intervalMs, independent of how earlier requests fared;
// callers measure latency from that scheduled time, so a stalled target shows up as queueing
// latency instead of silently lowering the send rate (no coordinated omission). Requests go
// through one undici Pool (HTTP/1.1 keep-alive, no pipelining, Pool.dispatch with a bare
// handler); when every connection is busy the Pool queues, and that wait counts too.
import { performance } from 'node:perf_hooks';
import { Pool } from 'undici';

/** util.parseArgs options both generators take, with each one's defaults. */
export function loadArgs(d: { rate: string; seconds: string; connections: string; drainSeconds: string }) {
  return {
    url: { type: 'string' },
    rate: { type: 'string', default: d.rate },
    seconds: { type: 'string', default: d.seconds },
    'warmup-seconds': { type: 'string', default: '1' },
    connections: { type: 'string', default: d.connections },
    host: { type: 'string' },
    'drain-seconds': { type: 'string', default: d.drainSeconds },
  } as const;
}

/** The parsed values of loadArgs() as numbers (url checked by the caller). */
export function loadSpec(values: {
  url: string;
  rate: string;
  seconds: string;
  'warmup-seconds': string;
  connections: string;
  host?: string | undefined;
  'drain-seconds': string;
}): Omit<OpenLoopSpec, 'timeoutMs'> & { drainMs: number } {
  return {
    url: new URL(values.url),
    rate: Number(values.rate),
    seconds: Number(values.seconds),
    warmupSeconds: Number(values['warmup-seconds']),
    connections: Number(values.connections),
    host: values.host,
    drainMs: Number(values['drain-seconds']) * 1000,
  };
}

export interface OpenLoopSpec {
  url: URL;
  rate: number;
  seconds: number;
  warmupSeconds: number;
  connections: number;
  host: string | undefined;
  /** undici headers/body timeout, ms (0 = none). */
  timeoutMs: number;
}

export interface OpenLoop {
  readonly pool: Pool;
  /** Unrecorded warm-up requests, sent first. */
  readonly warmCount: number;
  /** Recorded requests, after the warm-up. */
  readonly measuredCount: number;
  readonly intervalMs: number;
  /** How late each recorded request was issued vs its schedule, ms (the generator's own health). */
  readonly sendLag: Float64Array;
  /**
   * Sends all requests on schedule from `start` (performance.now() time), then waits up to
   * drainMs for the outstanding ones. `onDone(k, scheduledAt, status, err)` gets k = i - warmCount
   * (< 0 during warm-up). Resolves true if all were answered.
   */
  run(start: number, drainMs: number, onDone: (k: number, scheduledAt: number, status: number | undefined, err: Error | undefined) => void): Promise<boolean>;
  /** Closes the pool gracefully if everything drained, else destroys it. */
  close(drained: boolean): Promise<void>;
}

/**
 * Calls fire(i, scheduledAt, now) for i = 0 .. total-1, request i scheduled at start + i*intervalMs
 * (performance.now() time); resolves after the last. It spins on setImmediate (the load core is
 * dedicated to the generator): every turn polls I/O, so responses are timestamped promptly, and
 * sends are issued within one loop turn of their schedule.
 */
export function runSchedule(
  start: number,
  total: number,
  intervalMs: number,
  fire: (i: number, scheduledAt: number, now: number) => void,
): Promise<void> {
  let next = 0;
  return new Promise<void>((resolve) => {
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
}

/** Sends request i; calls done when it ended, with its outcome (later calls are ignored). */
export type Send<R> = (i: number, done: (outcome: R) => void) => void;

/** An HTTP exchange's outcome: its status, or the error that ended it. */
export interface HttpOutcome {
  readonly status: number | undefined;
  readonly err: Error | undefined;
}

/**
 * The open loop itself: request i is sent through `send` at start + i*intervalMs (runSchedule),
 * `sent` hears when it went out, `ended` when it ended (once each, whatever the client calls
 * back). Resolves true if every request ended within drainMs after the last was sent.
 */
export async function runOpenLoop<R>(
  o: { readonly start: number; readonly total: number; readonly intervalMs: number; readonly drainMs: number },
  send: Send<R>,
  sent: (i: number, scheduledAt: number, now: number) => void,
  ended: (i: number, scheduledAt: number, outcome: R) => void,
): Promise<boolean> {
  let outstanding = 0;
  let scheduleDone = false;
  let resolveDone: () => void = () => {};
  const allDone = new Promise<void>((r) => {
    resolveDone = r;
  });
  await runSchedule(o.start, o.total, o.intervalMs, (i, scheduledAt, now) => {
    sent(i, scheduledAt, now);
    outstanding++;
    let finished = false;
    send(i, (outcome) => {
      if (finished) return;
      finished = true;
      outstanding--;
      ended(i, scheduledAt, outcome);
      if (scheduleDone && outstanding === 0) resolveDone();
    });
  });
  scheduleDone = true;
  if (outstanding === 0) resolveDone();
  let timer: NodeJS.Timeout | undefined;
  const drained = await Promise.race([
    allDone.then(() => true),
    new Promise<boolean>((r) => {
      timer = setTimeout(() => r(false), o.drainMs);
    }),
  ]);
  if (timer !== undefined) clearTimeout(timer);
  return drained;
}

export function openLoop(spec: OpenLoopSpec): OpenLoop {
  const { url, rate } = spec;
  const pool = new Pool(url.origin, {
    connections: spec.connections,
    pipelining: 1,
    keepAliveTimeout: 60_000,
    headersTimeout: spec.timeoutMs,
    bodyTimeout: spec.timeoutMs,
  });
  const headers: Record<string, string> = {};
  if (spec.host !== undefined) headers['host'] = spec.host;
  const warmCount = Math.round(rate * spec.warmupSeconds);
  const measuredCount = Math.round(rate * spec.seconds);
  const total = warmCount + measuredCount;
  const intervalMs = 1000 / rate;
  const sendLag = new Float64Array(measuredCount);

  // dispatch() with a plain handler rather than request(): undici's request() wraps every
  // exchange in an AsyncResource, a promise and a Readable body, which on this machine made
  // the generator itself pause 5-25 ms in young-generation GC at 2000 req/s and dominated p99.
  const dispatchOpts = { origin: url.origin, path: url.pathname + url.search, method: 'GET', headers };
  const send: Send<HttpOutcome> = (_i, done) => {
    let status: number | undefined;
    pool.dispatch(dispatchOpts, {
      onRequestStart() {}, // its presence selects undici's current handler API
      onResponseStart(_controller, statusCode) {
        status = statusCode;
      },
      onResponseData() {},
      onResponseEnd() {
        done({ status, err: undefined });
      },
      onResponseError(_controller, err) {
        done({ status: undefined, err });
      },
    });
  };
  const run: OpenLoop['run'] = (start, drainMs, onDone) =>
    runOpenLoop({ start, total, intervalMs, drainMs }, send, (i, scheduledAt, now) => {
      const k = i - warmCount; // < 0 during warm-up: not recorded
      if (k >= 0) sendLag[k] = now - scheduledAt;
    }, (i, scheduledAt, { status, err }) => onDone(i - warmCount, scheduledAt, err === undefined ? status : undefined, err));

  return {
    pool,
    warmCount,
    measuredCount,
    intervalMs,
    sendLag,
    run,
    close: async (drained) => {
      if (drained) await pool.close();
      else await pool.destroy();
    },
  };
}
