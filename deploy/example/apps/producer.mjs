// The example producer, "checkout": calls the orders service RATE times a second (20), at most
// 16 requests at once, and logs a count of answers by status every 10 s. Its requests go through
// the sluice sidecar because the injected HTTP_PROXY says so and NODE_USE_ENV_PROXY=1 makes
// node:http honour it. node:http, not fetch: fetch (undici) sends every proxied request through
// a CONNECT tunnel, which the sidecar can only pass on as bytes (no retries, no per-request
// metrics), while node:http sends absolute-form requests the sidecar handles one by one.
// A listener on the pod IP answers /healthz for the kubelet. Settings: TARGET (the URL to call),
// RATE, HEALTH_PORT (8081), REPORT_MS (10000).
import http from 'node:http';

const target = process.env.TARGET ?? 'http://orders.sluice-example.svc.cluster.local/orders';
const rate = Number(process.env.RATE ?? 20);
const healthPort = Number(process.env.HEALTH_PORT ?? 8081);
const reportMs = Number(process.env.REPORT_MS ?? 10_000);
const maxInFlight = 16;
let inFlight = 0;
let seq = 0;
const counts = new Map();
const count = (key) => counts.set(key, (counts.get(key) ?? 0) + 1);

function call() {
  if (inFlight >= maxInFlight) return count('skipped');
  inFlight++;
  const req = http.get(`${target}/${++seq}`, { timeout: 15_000 }, (res) => {
    res.resume();
    res.on('end', () => {
      inFlight--;
      // sluice's own answers name the layer that gave them (circuit-open, no-credit, ...).
      count(res.headers['sluice-error'] ? `${res.statusCode} ${res.headers['sluice-error']}` : String(res.statusCode));
    });
  });
  req.on('timeout', () => req.destroy(new Error('timeout')));
  req.on('error', (err) => {
    inFlight--;
    count(err.code ?? err.message);
  });
}

const timer = setInterval(call, 1000 / rate);
const report = setInterval(() => {
  console.log(JSON.stringify({ msg: `answers in the last ${reportMs} ms`, target, inFlight, counts: Object.fromEntries(counts) }));
  counts.clear();
}, reportMs);

const health = http.createServer((req, res) => {
  res.writeHead(req.url === '/healthz' ? 200 : 404);
  res.end();
});
health.listen(healthPort, '0.0.0.0');

process.on('SIGTERM', () => {
  clearInterval(timer);
  clearInterval(report);
  health.close();
  // Requests in flight finish (within their timeout); then node exits on its own.
  setTimeout(() => process.exit(0), 16_000).unref();
});
console.log(JSON.stringify({ msg: 'checkout started', target, rate, proxy: process.env.HTTP_PROXY ?? 'none (not injected)' }));
