// The example consumer, "orders": answers GET /orders/<id> with a little JSON after a short,
// jittered delay, and fails a share of requests with 503, so that retries, breakers and the
// dashboards have something to show. It listens on loopback only: callers reach it through the
// sluice sidecar's inbound port (15006), never around it. A second listener on the pod IP
// answers /healthz for the kubelet's probes. Settings: LATENCY_MS (20), FAIL_RATIO (0.02),
// PORT (8080), HEALTH_PORT (8081).
import { once } from 'node:events';
import http from 'node:http';

const latencyMs = Number(process.env.LATENCY_MS ?? 20);
const failRatio = Number(process.env.FAIL_RATIO ?? 0.02);
const port = Number(process.env.PORT ?? 8080);
const healthPort = Number(process.env.HEALTH_PORT ?? 8081);

const app = http.createServer((req, res) => {
  const delay = latencyMs * (0.5 + Math.random());
  setTimeout(() => {
    if (Math.random() < failRatio) {
      res.writeHead(503, { 'content-type': 'application/json' });
      res.end('{"error":"unavailable (simulated)"}\n');
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(`${JSON.stringify({ order: req.url, by: process.env.HOSTNAME, at: new Date().toISOString() })}\n`);
  }, delay);
});
app.listen(port, '127.0.0.1');

const health = http.createServer((req, res) => {
  res.writeHead(req.url === '/healthz' ? 200 : 404);
  res.end();
});
health.listen(healthPort, '0.0.0.0');

// The sidecar outlives the app (a native sidecar stops after it), so in-flight requests finish.
process.on('SIGTERM', () => {
  health.close();
  app.close(() => process.exit(0));
  app.closeIdleConnections();
});
// Said once both listen, with the ports they got (a port of 0 picks a free one).
await Promise.all([once(app, 'listening'), once(health, 'listening')]);
console.log(JSON.stringify({ msg: 'orders listening', app: `127.0.0.1:${app.address().port}`, health: `0.0.0.0:${health.address().port}`, latencyMs, failRatio }));
