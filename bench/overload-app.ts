// The consumer app of the overload benchmark: a fixed capacity that is not this machine's CPU.
//
//   node bench/overload-app.ts [slots] [workMs]        (defaults 20 and 20: 1000 req/s)
//
// A pool of `slots` workers; each request holds one for `workMs` of simulated work (a timer).
// Requests beyond `slots` in progress wait in the app's own FIFO queue, unbounded, and nothing
// checks whether their client is still there: what a naive Node service does. Each slot keeps
// its own timeline (a job starts when the previous one was due to end, or when it arrives), so a
// late timer delays one response but does not lower the capacity below slots / workMs.
//
// Per request it records whether the work was wasted: it finished after the client's give-up
// time (header x-bench-giveup-at, epoch ms, set by bench/overload-load.ts) or on a connection
// that was already closed. Counters are served on a separate stats listener:
//   GET /__stats  -> JSON AppStats (below)
//   GET /__reset  -> zeroes the counters (not the queue)
// Prints `listening <app port> <stats port>` once bound; exits on SIGTERM/SIGINT.
import http from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import { listenLoopback, replyJson } from './lib/serve.ts';

export interface AppStats {
  /** Requests that arrived (every attempt that reached the app). */
  received: number;
  /** Requests whose work ended. */
  completed: number;
  /** Work-ms of completed requests (each is workMs: the slot was held that long). */
  workMs: number;
  /** Work-ms spent on requests whose client had given up by the time the work ended. */
  wastedWorkMs: number;
  /** Of the wasted: the connection was already closed when the work ended. */
  wastedClosed: number;
  /** Of the wasted: still connected, but past the client's give-up time. */
  wastedLate: number;
  /** Requests without a give-up header (readiness checks). */
  noGiveUp: number;
  /** Now: waiting in the queue / holding a slot. */
  queued: number;
  inProgress: number;
  /** Since the last reset. */
  maxQueued: number;
  /** Epoch ms of the last completed work (how long the app kept working after the load). */
  lastCompletedAt: number;
  slots: number;
  workMsEach: number;
}

const SLOTS = Number(process.argv[2] ?? 20);
const WORK_MS = Number(process.argv[3] ?? 20);
if (!Number.isInteger(SLOTS) || SLOTS < 1 || !(WORK_MS > 0)) throw new Error(`bad slots/workMs: ${process.argv.slice(2).join(' ')}`);

const BODY = Buffer.alloc(100, 'x');
const HEADERS = { 'content-type': 'text/plain', 'content-length': String(BODY.length) };
const epoch = (): number => performance.timeOrigin + performance.now();

interface Job {
  res: ServerResponse;
  giveUpAt: number;
  arrivedAt: number;
  closed: boolean;
}

const zero = (): Omit<AppStats, 'queued' | 'inProgress' | 'slots' | 'workMsEach'> => ({
  received: 0,
  completed: 0,
  workMs: 0,
  wastedWorkMs: 0,
  wastedClosed: 0,
  wastedLate: 0,
  noGiveUp: 0,
  maxQueued: 0,
  lastCompletedAt: 0,
});
let stats = zero();

// FIFO as an array with a moving head: shift() on a long array is O(n).
let queue: Job[] = [];
let head = 0;
/** Per slot, when its current job is due to end (its timeline); undefined = idle. */
const slotEnd: (number | undefined)[] = new Array(SLOTS).fill(undefined);

function start(slot: number, job: Job, notBefore: number): void {
  const begin = Math.max(notBefore, job.arrivedAt);
  const end = begin + WORK_MS;
  slotEnd[slot] = end;
  setTimeout(() => finish(slot, job, end), Math.max(0, end - epoch()));
}

function finish(slot: number, job: Job, end: number): void {
  const now = epoch();
  stats.completed++;
  stats.workMs += WORK_MS;
  stats.lastCompletedAt = now;
  if (job.closed || job.res.destroyed) {
    stats.wastedWorkMs += WORK_MS;
    stats.wastedClosed++;
  } else {
    if (now > job.giveUpAt) {
      stats.wastedWorkMs += WORK_MS;
      stats.wastedLate++;
    }
    job.res.writeHead(200, HEADERS);
    job.res.end(BODY);
  }
  const next = queue[head];
  if (next !== undefined) {
    queue[head] = undefined as unknown as Job;
    head++;
    if (head > 4096 && head * 2 > queue.length) {
      queue = queue.slice(head);
      head = 0;
    }
    start(slot, next, end);
  } else {
    slotEnd[slot] = undefined;
  }
}

function onRequest(req: IncomingMessage, res: ServerResponse): void {
  stats.received++;
  const h = req.headers['x-bench-giveup-at'];
  const giveUpAt = typeof h === 'string' ? Number(h) : Number.POSITIVE_INFINITY;
  if (!Number.isFinite(giveUpAt)) stats.noGiveUp++;
  const job: Job = { res, giveUpAt, arrivedAt: epoch(), closed: false };
  res.on('close', () => {
    if (!res.writableFinished) job.closed = true;
  });
  req.resume();
  const idle = slotEnd.indexOf(undefined);
  if (idle >= 0) {
    start(idle, job, job.arrivedAt);
    return;
  }
  queue.push(job);
  stats.maxQueued = Math.max(stats.maxQueued, queue.length - head);
}

const app = http.createServer({ keepAliveTimeout: 120_000, requestTimeout: 0 }, onRequest);
app.maxRequestsPerSocket = 0;
app.headersTimeout = 60_000;

const side = http.createServer((req, res) => {
  const reply = (code: number, body: unknown): void => replyJson(res, code, body);
  if (req.url === '/__stats') {
    let inProgress = 0;
    for (const e of slotEnd) if (e !== undefined) inProgress++;
    const out: AppStats = { ...stats, queued: queue.length - head, inProgress, slots: SLOTS, workMsEach: WORK_MS };
    return reply(200, out);
  }
  if (req.url === '/__reset') {
    stats = zero();
    return reply(200, {});
  }
  reply(404, {});
});

const appPort = await listenLoopback(app, 4096);
const statsPort = await listenLoopback(side);
process.stdout.write(`listening ${appPort} ${statsPort}\n`);

const stop = (): void => {
  app.close();
  app.closeAllConnections();
  side.close();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
