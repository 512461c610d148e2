// Open-loop load for the overload benchmark (bench/overload.ts): producers whose clients give up
// after a deadline and retry refusals, the way real callers do.
//
//   node --expose-gc bench/overload-load.ts --urls URL1,URL2 [--host app] [--connections 1024]
//     [--timeout-ms 1000] [--max-retries 2] [--backoff-ms 50] [--fast-ms 10]
//
// Prints `control <port>` once ready, then runs one load level per `GET /run?rate=R&seconds=S`
// on that loopback port and answers it with the level's OverloadLoadResult as JSON. It stays up
// between levels so its pools, connections and JIT stay warm (exits on SIGTERM).
//
// One producer per URL, each with its own undici Pool (keep-alive, no pipelining); request i goes
// to producer i mod N. Requests are scheduled at start + i/rate whatever happened to earlier ones
// (bench/lib/open-loop.ts runSchedule), and latency runs from the scheduled time, so there is no
// coordinated omission. Each request carries `x-bench-id` and `x-bench-giveup-at` (epoch ms of
// its deadline, scheduled time + timeout) for the app's wasted-work count.
//
// Per request: the client gives up (aborts the attempt in flight) `timeout-ms` after the
// scheduled time: "timed out". A 503, a 429 or a connection error is a refusal: retried after
// backoff-ms × 2^n × a jitter in [0.5, 1.5), at most max-retries times, and only if the retry
// would start before the deadline (a Retry-After under a second is honoured as a floor; one of a
// second or more is ignored: it would outlast the deadline). A request whose last attempt was
// refused is "refused"; "fast" when that refusal came within fast-ms of the attempt's send.
// Any other answer ends the request as it is.
import http from 'node:http';
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { Pool } from 'undici';
import type { Dispatcher } from 'undici';
import { runSchedule } from './lib/open-loop.ts';
import { listenLoopback, replyJson } from './lib/serve.ts';
import { percentile } from './lib/stats.ts';

export interface OverloadLoadResult {
  readonly rate: number;
  readonly seconds: number;
  readonly producers: number;
  /** Requests scheduled (the offered load). */
  readonly offered: number;
  readonly ok: number;
  readonly refused: number;
  readonly refusedFast: number;
  readonly timedOut: number;
  /** Ended with another status or error; by status code or error code. */
  readonly other: Record<string, number>;
  /** Requests sent by the clients, retries included. */
  readonly attempts: number;
  /** Of those, the ones undici wrote to a connection (the rest gave up queued in the Pool). */
  readonly wireAttempts: number;
  /** Refused attempts by kind (503, 429, conn). */
  readonly refusals: Record<string, number>;
  /** Of 2xx requests: latency from scheduled send to end of body, ms. */
  readonly okLatencyMs: { readonly p50: number; readonly p99: number; readonly max: number };
  /** Of 2xx requests answered on their first attempt: the latency of admitted work without client retries. */
  readonly firstTryOkP99Ms: number;
  /** Of refused requests: how long their last attempt took to be refused, ms. */
  readonly refusalMs: { readonly p50: number; readonly p99: number };
  /** How late the generator issued first attempts vs the schedule (its own health), ms. */
  readonly sendLagMs: { readonly p99: number; readonly max: number };
  /** Requests not ended when the drain bound ran out (should be 0: every request has a deadline). */
  readonly unfinished: number;
  readonly firstError: string | undefined;
}

const { values } = parseArgs({
  options: {
    urls: { type: 'string' },
    host: { type: 'string' },
    connections: { type: 'string', default: '1024' },
    'timeout-ms': { type: 'string', default: '1000' },
    'max-retries': { type: 'string', default: '2' },
    'backoff-ms': { type: 'string', default: '50' },
    'fast-ms': { type: 'string', default: '10' },
  },
  strict: true,
});
if (values.urls === undefined) throw new Error('--urls is required');
const urls = values.urls.split(',').map((u) => new URL(u));
const connections = Number(values.connections);
const timeoutMs = Number(values['timeout-ms']);
const maxRetries = Number(values['max-retries']);
const backoffMs = Number(values['backoff-ms']);
const fastMs = Number(values['fast-ms']);
for (const [k, v] of Object.entries({ connections, timeoutMs, backoffMs, fastMs })) {
  if (!(v > 0)) throw new Error(`--${k} must be positive, got ${v}`);
}
if (!Number.isInteger(maxRetries) || maxRetries < 0) throw new Error(`--max-retries must be an integer >= 0, got ${maxRetries}`);

// At 5× most requests end in an abort, and undici makes an error for each: their stack traces
// were a tenth of this process's CPU, and nothing reads them.
Error.stackTraceLimit = 0;

const pools = urls.map(
  (u) => new Pool(u.origin, { connections, pipelining: 1, keepAliveTimeout: 60_000, headersTimeout: 0, bodyTimeout: 0, connect: { timeout: timeoutMs } }),
);

// ---------------------------------------------------------------------------------------------
// One level: per-request state and the level's counters

interface Counts {
  ok: number;
  refused: number;
  refusedFast: number;
  timedOut: number;
  attempts: number;
  wireAttempts: number;
  /** Requests of this level not ended yet. */
  open: number;
  other: Record<string, number>;
  refusals: Record<string, number>;
  okLatency: number[];
  firstTryOkLatency: number[];
  refusalLatency: number[];
  firstError: string | undefined;
  scheduleDone: boolean;
  allEnded: () => void;
}

interface Req {
  readonly c: Counts;
  readonly i: number;
  readonly producer: number;
  readonly scheduledAt: number;
  readonly deadline: number;
  readonly giveUpAt: string;
  /** Attempts sent so far; the current attempt's number. */
  attempts: number;
  attemptSentAt: number;
  /** The current attempt's controller once undici started it. */
  ctrl: Dispatcher.DispatchController | undefined;
  retryTimer: NodeJS.Timeout | undefined;
  deadlineTimer: NodeJS.Timeout | undefined;
  done: boolean;
}

const GAVE_UP = new Error('client deadline');

function end(req: Req): void {
  req.done = true;
  if (req.deadlineTimer !== undefined) clearTimeout(req.deadlineTimer);
  if (req.retryTimer !== undefined) clearTimeout(req.retryTimer);
  const c = req.c;
  c.open--;
  if (c.scheduleDone && c.open === 0) c.allEnded();
}

function onDeadline(req: Req): void {
  if (req.done) return;
  req.c.timedOut++;
  end(req);
  // Still queued in the Pool: its onRequestStart sees `done` and aborts it there.
  req.ctrl?.abort(GAVE_UP);
}

// ---------------------------------------------------------------------------------------------
// Attempts

function send(req: Req): void {
  req.retryTimer = undefined;
  if (req.done) return;
  const n = ++req.attempts;
  req.c.attempts++;
  req.attemptSentAt = performance.now();
  req.ctrl = undefined;
  const url = urls[req.producer] as URL;
  const headers: Record<string, string> = { 'x-bench-id': `${req.i}.${n}`, 'x-bench-giveup-at': req.giveUpAt };
  if (values.host !== undefined) headers['host'] = values.host;
  let status = 0;
  let retryAfterMs: number | undefined;
  const stale = (): boolean => req.done || req.attempts !== n;
  (pools[req.producer] as Pool).dispatch(
    { origin: url.origin, path: url.pathname + url.search, method: 'GET', headers },
    {
      onRequestStart(ctrl) {
        if (stale()) return ctrl.abort(GAVE_UP);
        req.ctrl = ctrl;
        req.c.wireAttempts++;
      },
      onResponseStart(_ctrl, statusCode, h) {
        status = statusCode;
        const ra = h['retry-after'];
        const s = typeof ra === 'string' ? Number(ra) : Number.NaN;
        if (Number.isFinite(s) && s >= 0) retryAfterMs = s * 1000;
      },
      onResponseData() {},
      onResponseEnd() {
        if (!stale()) attemptEnded(req, status, undefined, retryAfterMs);
      },
      onResponseError(_ctrl, err) {
        if (!stale()) attemptEnded(req, 0, err, undefined);
      },
    },
  );
}

function attemptEnded(req: Req, status: number, err: Error | undefined, retryAfterMs: number | undefined): void {
  const c = req.c;
  req.ctrl = undefined;
  const now = performance.now();
  // An answer after the deadline whose timer has not fired yet: the client had given up.
  if (now >= req.deadline) return onDeadline(req);
  if (status >= 200 && status < 300) {
    c.ok++;
    c.okLatency.push(now - req.scheduledAt);
    if (req.attempts === 1) c.firstTryOkLatency.push(now - req.scheduledAt);
    return end(req);
  }
  const kind = err !== undefined ? 'conn' : status === 503 || status === 429 ? String(status) : undefined;
  if (err !== undefined) c.firstError ??= `${err.name}: ${(err as NodeJS.ErrnoException).code ?? ''} ${err.message}`;
  if (kind === undefined) {
    c.other[String(status)] = (c.other[String(status)] ?? 0) + 1;
    return end(req);
  }
  c.refusals[kind] = (c.refusals[kind] ?? 0) + 1;
  if (req.attempts <= maxRetries) {
    let delay = backoffMs * 2 ** (req.attempts - 1) * (0.5 + Math.random());
    if (retryAfterMs !== undefined && retryAfterMs < 1000) delay = Math.max(delay, retryAfterMs);
    if (now + delay < req.deadline) {
      req.retryTimer = setTimeout(send, delay, req);
      return;
    }
  }
  c.refused++;
  c.refusalLatency.push(now - req.attemptSentAt);
  if (now - req.attemptSentAt < fastMs) c.refusedFast++;
  end(req);
}

// ---------------------------------------------------------------------------------------------
// A level, then the control listener

const epochOf = (t: number): number => performance.timeOrigin + t;

async function runLevel(rate: number, seconds: number): Promise<OverloadLoadResult> {
  const total = Math.round(rate * seconds);
  const sendLag = new Float64Array(total);
  let allEnded: () => void = () => {};
  const allDone = new Promise<void>((r) => {
    allEnded = r;
  });
  const c: Counts = {
    ok: 0,
    refused: 0,
    refusedFast: 0,
    timedOut: 0,
    attempts: 0,
    wireAttempts: 0,
    open: 0,
    other: {},
    refusals: {},
    okLatency: [],
    firstTryOkLatency: [],
    refusalLatency: [],
    firstError: undefined,
    scheduleDone: false,
    allEnded,
  };
  // A major GC in the middle of a level would stall the schedule: collect the last level's
  // garbage before this one starts (node --expose-gc; skipped without it).
  (globalThis as { gc?: () => void }).gc?.();
  const start = performance.now() + 20;
  await runSchedule(start, total, 1000 / rate, (i, scheduledAt, now) => {
    sendLag[i] = now - scheduledAt;
    const deadline = scheduledAt + timeoutMs;
    const req: Req = {
      c,
      i,
      producer: i % pools.length,
      scheduledAt,
      deadline,
      giveUpAt: String(Math.round(epochOf(deadline))),
      attempts: 0,
      attemptSentAt: now,
      ctrl: undefined,
      retryTimer: undefined,
      deadlineTimer: undefined,
      done: false,
    };
    c.open++;
    req.deadlineTimer = setTimeout(onDeadline, Math.max(0, deadline - now), req);
    send(req);
  });
  c.scheduleDone = true;
  if (c.open === 0) allEnded();
  let bound: NodeJS.Timeout | undefined;
  await Promise.race([allDone, new Promise<void>((r) => (bound = setTimeout(r, timeoutMs + 5000)))]);
  if (bound !== undefined) clearTimeout(bound);
  const lat = Float64Array.from(c.okLatency).sort();
  const refusal = Float64Array.from(c.refusalLatency).sort();
  const lag = sendLag.sort();
  const last = (a: Float64Array): number => (a.length > 0 ? (a[a.length - 1] as number) : Number.NaN);
  return {
    rate,
    seconds,
    producers: pools.length,
    offered: total,
    ok: c.ok,
    refused: c.refused,
    refusedFast: c.refusedFast,
    timedOut: c.timedOut,
    other: c.other,
    attempts: c.attempts,
    wireAttempts: c.wireAttempts,
    refusals: c.refusals,
    okLatencyMs: { p50: percentile(lat, 0.5), p99: percentile(lat, 0.99), max: last(lat) },
    firstTryOkP99Ms: percentile(Float64Array.from(c.firstTryOkLatency).sort(), 0.99),
    refusalMs: { p50: percentile(refusal, 0.5), p99: percentile(refusal, 0.99) },
    sendLagMs: { p99: percentile(lag, 0.99), max: last(lag) },
    unfinished: c.open,
    firstError: c.firstError,
  };
}

let running = false;
const control = http.createServer((req, res) => {
  const u = new URL(req.url ?? '/', 'http://x');
  if (u.pathname !== '/run') return replyJson(res, 404, {});
  const rate = Number(u.searchParams.get('rate'));
  const seconds = Number(u.searchParams.get('seconds'));
  if (!(rate > 0) || !(seconds > 0) || rate * seconds > 1_000_000) return replyJson(res, 400, { error: 'bad rate or seconds' });
  if (running) return replyJson(res, 409, { error: 'a level is running' });
  running = true;
  runLevel(rate, seconds).then(
    (r) => replyJson(res, 200, r),
    (err: unknown) => replyJson(res, 500, { error: String(err) }),
  ).finally(() => {
    running = false;
  });
});
control.requestTimeout = 0;
process.stdout.write(`control ${await listenLoopback(control)}\n`);
const stop = (): void => {
  control.close();
  for (const p of pools) void p.destroy();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
