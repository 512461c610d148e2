// Open-loop, fixed-rate HTTP/2 load generator: bench/fixed-rate.ts over h2c with prior
// knowledge. h2load paces with --rps but times each request from when it was sent, so a stall
// would hide its own queueing (coordinated omission); this one times from the scheduled send.
//
// Request i is scheduled at start + i/rate (bench/lib/open-loop.ts's runSchedule) and sent as a
// new stream on one of --connections sessions, round-robin; latency runs from that scheduled
// time to the end of the response body. A session that has reached the server's stream limit
// queues the request in nghttp2, and that wait counts too.
//
// Usage:
//   node bench/h2-fixed-rate.ts --url http://127.0.0.1:8080/ --rate 2000 --seconds 5 \
//     [--warmup-seconds 1] [--connections 4] [--host bench] [--drain-seconds 10]
// --host is sent as :authority. Prints one JSON object on stdout (FixedRateResult,
// bench/lib/fixed-rate-result.ts). Run it pinned: `taskset -c 0 ...`.
import http2 from 'node:http2';
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { summarizeFixedRate } from './lib/fixed-rate-result.ts';
import { loadArgs, loadSpec, runOpenLoop, type HttpOutcome, type Send } from './lib/open-loop.ts';

async function connect(origin: string): Promise<http2.ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const s = http2.connect(origin, { settings: { initialWindowSize: 1 << 20 } });
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: loadArgs({ rate: '2000', seconds: '5', connections: '4', drainSeconds: '10' }),
    strict: true,
  });
  if (values.url === undefined) throw new Error('--url is required');
  const { url, rate, seconds, warmupSeconds, connections, host, drainMs } = loadSpec({ ...values, url: values.url });
  if (!(rate > 0) || !(seconds > 0) || !(warmupSeconds >= 0) || !(connections > 0)) {
    throw new Error('bad --rate/--seconds/--warmup-seconds/--connections');
  }

  const sessions = await Promise.all(Array.from({ length: connections }, () => connect(url.origin)));
  for (const s of sessions) s.on('error', () => {}); // reported per stream
  const headers = { ':method': 'GET', ':path': url.pathname + url.search, ...(host === undefined ? {} : { ':authority': host }) };

  const warmCount = Math.round(rate * warmupSeconds);
  const measuredCount = Math.round(rate * seconds);
  const intervalMs = 1000 / rate;
  const latency = new Float64Array(measuredCount).fill(Number.NaN);
  const sendLag = new Float64Array(measuredCount);
  let completed = 0;
  let errors = 0;
  let non2xx = 0;
  let firstError: string | undefined;
  const statuses: Record<string, number> = {};

  const send: Send<HttpOutcome> = (i, done) => {
    let status: number | undefined;
    let stream: http2.ClientHttp2Stream;
    try {
      stream = (sessions[i % connections] as http2.ClientHttp2Session).request(headers, { endStream: true });
    } catch (err) {
      done({ status: undefined, err: err instanceof Error ? err : new Error(String(err)) });
      return;
    }
    stream.on('response', (h) => {
      status = Number(h[':status']);
    });
    stream.on('data', () => {});
    stream.on('end', () => done({ status, err: undefined }));
    stream.on('error', (err: Error) => done({ status: undefined, err }));
    stream.on('close', () => done(stream.rstCode === http2.constants.NGHTTP2_NO_ERROR ? { status, err: undefined } : { status: undefined, err: new Error(`stream reset, code ${stream.rstCode}`) }));
  };

  const start = performance.now() + 20;
  await runOpenLoop(
    { start, total: warmCount + measuredCount, intervalMs, drainMs },
    send,
    (i, scheduledAt, now) => {
      const k = i - warmCount; // < 0 during warm-up: not recorded
      if (k >= 0) sendLag[k] = now - scheduledAt;
    },
    (i, scheduledAt, { status, err }) => {
      const k = i - warmCount;
      if (k < 0) return;
      latency[k] = performance.now() - scheduledAt;
      if (err !== undefined || status === undefined) {
        errors++;
        firstError ??= err === undefined ? 'stream closed without a response' : `${err.name}: ${err.message}`;
      } else {
        completed++;
        const s = String(status);
        statuses[s] = (statuses[s] ?? 0) + 1;
        if (status < 200 || status >= 300) non2xx++;
      }
    },
  );

  const result = summarizeFixedRate(
    { rate, seconds, warmupSeconds, warmCount, intervalMs, start, latency, sendLag, completed, errors, non2xx, statuses, firstError },
    performance.now(),
  );
  process.stdout.write(JSON.stringify(result) + '\n');
  for (const s of sessions) s.destroy();
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`h2-fixed-rate: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
